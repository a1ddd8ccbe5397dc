"""The wire task that delivers delayed datagrams: woken by deadlines, ended
by uninstall, restarted by the next install."""

import socket

import trio
import trio.testing

from trioudp.testing import VirtualNetwork

from ..conftest import run_python


def wire_tasks():
    def walk(task):
        yield task
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                yield from walk(child)

    root = trio.lowlevel.current_root_task()
    return [task for task in walk(root) if "VirtualNetwork wire" in task.name]


async def test_uninstall_ends_the_wire_task_and_install_restarts_it(autojump_clock):
    net = VirtualNetwork(latency=1.0)
    for round_trip in range(2):
        with net.install():
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            await sock.bind(("127.0.0.1", 0))
            await sock.sendto(b"late", sock.getsockname())
            assert len(wire_tasks()) == 1
            if round_trip:
                start = trio.current_time()
                assert await sock.recv(10) == b"late"
                assert trio.current_time() - start == 1.0
        await trio.testing.wait_all_tasks_blocked()
        assert wire_tasks() == []
    assert net.stats.dropped == {"uninstalled": 1}
    assert net.stats.delivered == 1


LEFT_INSTALLED = """
import socket, trio, trio.testing
from trioudp.testing import VirtualNetwork

installed = []

async def main():
    net = VirtualNetwork(latency=1.0)
    installed.append(net.install())
    installed[0].__enter__()  # and never left
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    await sock.sendto(b"in flight", sock.getsockname())

trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
print("run ended")
"""


def test_the_run_ends_with_a_network_still_installed():
    # The wire task waits for a delivery deadline; the end of the run must
    # cancel it like any sleep, not wake it to wait again.
    assert run_python("-c", LEFT_INSTALLED).strip() == "run ended"
