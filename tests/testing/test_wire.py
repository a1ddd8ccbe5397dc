"""The wire's alarm that delivers delayed datagrams: set by the first delayed
datagram of an install, closed by uninstall, made again by the next install;
Trio-private or its public fallback (a system task), alike to a program."""

import socket

import pytest
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


async def test_uninstall_drops_what_is_in_flight_and_install_delivers_again(
    autojump_clock, alarm_kind
):
    net = VirtualNetwork(latency=1.0)
    for round_trip in range(2):
        with net.install():
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            await sock.bind(("127.0.0.1", 0))
            await sock.sendto(b"late", sock.getsockname())
            # Only the fallback is a task; the Trio-private alarm is none.
            expected = 1 if alarm_kind == "public_fallback" else 0
            assert len(wire_tasks()) == expected
            if round_trip:
                start = trio.current_time()
                assert await sock.recv(10) == b"late"
                assert trio.current_time() - start == 1.0
        await trio.testing.wait_all_tasks_blocked()
        assert wire_tasks() == []
        await trio.sleep(5)  # past the first datagram's due time: not delivered
        assert net.stats.delivered == round_trip
    assert net.stats.dropped == {"uninstalled": 1}
    assert net.stats.delivered == 1


async def test_delays_deliver_in_due_order_then_send_order(autojump_clock, alarm_kind):
    net = VirtualNetwork()
    with net.install():
        a = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await a.bind(("127.0.0.1", 0))
        for payload, latency in [(b"3", 0.3), (b"1a", 0.1), (b"2", 0.2), (b"1b", 0.1)]:
            net.configure(latency=latency)
            await a.sendto(payload, a.getsockname())
        arrivals = [(await a.recv(10), trio.current_time()) for _ in range(4)]
    assert [data for data, _ in arrivals] == [b"1a", b"1b", b"2", b"3"]
    assert [when for _, when in arrivals] == pytest.approx([0.1, 0.1, 0.2, 0.3])


LEFT_INSTALLED = """
import socket, sys, trio, trio.testing
from trioudp.testing import VirtualNetwork
if sys.argv[1] == "public_fallback":
    from tests.testing.conftest import force_public_alarm
    force_public_alarm()

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


@pytest.mark.parametrize("kind", ["trio_private", "public_fallback"])
def test_the_run_ends_with_a_network_still_installed(kind):
    # The alarm waits for a delivery time; the end of the run must not wait
    # for it (the fallback's task is cancelled like any sleep).
    assert run_python("-c", LEFT_INSTALLED, kind).strip() == "run ended"


def test_a_receive_timing_out_as_its_datagram_is_due_gets_it(alarm_kind):
    # A clock moved by hand: Trio expires the receive's deadline and the
    # alarm in one pass, in the order of their ids; the datagram wins anyway.
    clock = trio.testing.MockClock()

    async def main():
        net = VirtualNetwork(latency=1.0)
        got = []
        with net.install():
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            await sock.bind(("127.0.0.1", 0))
            for n in range(12):
                scopes = [trio.CancelScope() for _ in range(n)]  # shift ids
                await sock.sendto(b"%d" % n, sock.getsockname())
                async with trio.open_nursery() as nursery:

                    async def receive():
                        with trio.move_on_after(1.0):
                            got.append(await sock.recv(10))

                    nursery.start_soon(receive)
                    await trio.testing.wait_all_tasks_blocked()
                    clock.jump(1.0)
                del scopes
        return got

    assert trio.run(main, clock=clock) == [b"%d" % n for n in range(12)]


async def test_an_icmp_error_comes_back_with_its_errno(autojump_clock):
    # The one path for every ICMP error back to a sender (port unreachable
    # today, others for faults): after the link's latency, to a connected
    # socket only, as the errno it carries.
    import errno

    import pytest

    from trioudp.testing._model import Packet

    net = VirtualNetwork(latency=0.5)
    with net.install():
        connected = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await connected.connect(("127.0.0.1", 9))
        other = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await other.bind(("127.0.0.1", 0))
        for sock in (connected, other):
            packet = Packet(
                99, socket.AF_INET, sock.getsockname(), ("127.0.0.1", 9), b"x", sock._sk
            )
            net._wire._report_unreachable(packet, errno.EHOSTUNREACH)
        start = trio.current_time()
        with pytest.raises(OSError) as info:
            await connected.recv(10)
        assert info.value.errno == errno.EHOSTUNREACH
        assert trio.current_time() - start == 0.5
        assert other._error is None
