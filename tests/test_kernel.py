"""trioudp._kernel: what the kernel reports besides datagrams. ICMP errors are
counted and survived; a socket with IP_RECVERR has its error queue drained,
never spun on; the kernel's drop count is read."""

import errno
import functools
import socket
import time
from contextlib import contextmanager

import pytest
import trio
import trio.testing

import trioudp
from trioudp import (
    serve_udp,
)
from trioudp._open import bind_udp_socket

from .conftest import requires_ipv6
from .helpers import (
    closed_port,
    echo,
    start,
)


async def test_icmp_error_on_receive_then_the_next_request_is_answered(
    virtual_network, nursery
):
    server = await start(nursery, port=53)
    server.sockets[0].trio_socket._set_error(errno.ECONNREFUSED)
    await trio.testing.wait_all_tasks_blocked()
    async with trioudp.open_udp_client("127.0.0.1", 53) as client:
        assert (await client.request(b"after icmp")).data == b"after icmp"
    assert server.stats.receive_errors == {"ECONNREFUSED": 1}


async def test_icmp_error_on_send_then_the_next_request_is_answered(
    virtual_network, nursery
):
    server = await start(nursery, port=53)
    async with trioudp.open_udp_client("127.0.0.1", 53) as client:
        # A pending ICMP report surfaces on the server's next send, which the
        # kernel then does not transmit: the reply is retried once.
        async def report_then_echo(datagram):
            server.sockets[0].trio_socket._error = errno.EHOSTUNREACH
            await datagram.reply(datagram.data)

        server._handlers.handler = report_then_echo
        assert (await client.request(b"one")).data == b"one"
        server._handlers.handler = echo
        assert (await client.request(b"two")).data == b"two"
    # The server counts a reply once its send returns, which on some seeds
    # is after the client has it: let it.
    await trio.testing.wait_all_tasks_blocked()
    assert server.stats.send_errors == {"EHOSTUNREACH": 1}
    assert server.stats.replied == 2


async def test_kernel_drops_are_read_on_real_sockets(nursery):
    server = await nursery.start(
        functools.partial(serve_udp, echo, 0, host="127.0.0.1")
    )
    assert server.stats.kernel_drops == 0


#: (family, loopback, option level, option) per address family; the option
#: numbers are Linux's (Python 3.11 lacks the constants).
RECVERR = {
    "ipv4": (socket.AF_INET, "127.0.0.1", socket.IPPROTO_IP, 11),
    "ipv6": (socket.AF_INET6, "::1", socket.IPPROTO_IPV6, 25),
}


#: The measured idle interval (seconds of real time: a rate is measured, the
#: wait itself proves nothing) and the most task steps and CPU allowed in it.
#: Spinning, the receive loop woke ~10,000 times and burnt the whole interval.
IDLE = 0.2


MAX_IDLE_STEPS = 10


MAX_IDLE_CPU = IDLE / 4


class TaskSteps(trio.abc.Instrument):
    """Counts every step of every task: a task that spins steps thousands of
    times in ``IDLE``, one that waits steps about once."""

    def __init__(self):
        self.steps = 0

    def before_task_step(self, task):
        self.steps += 1


@contextmanager
def idle_cost():
    """Task steps and process CPU seconds spent inside the block."""
    steps = TaskSteps()
    cost = {"cpu": -time.process_time()}
    trio.lowlevel.add_instrument(steps)
    try:
        yield cost
    finally:
        trio.lowlevel.remove_instrument(steps)
        cost["cpu"] += time.process_time()
        cost["steps"] = steps.steps


async def wait_idle():
    """Let ``IDLE`` seconds of real time pass (a rate is measured over them)."""
    with trio.move_on_after(IDLE):
        await trio.sleep_forever()


def recverr_param():
    return pytest.mark.parametrize(
        "family",
        [pytest.param("ipv4"), pytest.param("ipv6", marks=requires_ipv6)],
    )


@recverr_param()
async def test_a_server_socket_with_ip_recverr_drains_and_counts_icmp_errors(
    nursery, family
):
    family, host, level, option = RECVERR[family]
    sock = await bind_udp_socket(host, 0)
    sock.trio_socket.setsockopt(level, option, 1)
    server = await nursery.start(trioudp.serve_udp_sockets, echo, [sock])
    # Five requests from a client that is gone before the echoes leave: each
    # echo draws an ICMP port unreachable, queued on the server's socket.
    with socket.socket(family, socket.SOCK_DGRAM) as client:
        client.bind((host, 0))
        for _ in range(5):
            client.sendto(b"ping", server.addresses[0][:2])
    with trio.move_on_after(1):  # spinning, the tasks never all block
        await trio.testing.wait_all_tasks_blocked()
    with idle_cost() as cost:
        await wait_idle()
    assert cost["steps"] <= MAX_IDLE_STEPS
    assert cost["cpu"] < MAX_IDLE_CPU
    stats = server.stats
    assert stats.replied == 5
    assert stats.receive_errors == {"ECONNREFUSED": 5}


async def test_a_client_socket_with_ip_recverr_does_not_spin_while_it_waits():
    peer = closed_port(socket.AF_INET, "127.0.0.1")
    async with trioudp.open_udp_client(
        *peer,
        attempts=1,
        backoff=trioudp.Backoff(initial=IDLE, jitter=0),
        on_unreachable="retry",
    ) as client:
        client.socket.trio_socket.setsockopt(*RECVERR["ipv4"][2:], 1)
        with idle_cost() as cost, pytest.raises(trioudp.RequestTimeout):
            await client.request(b"ping")
        assert cost["steps"] <= MAX_IDLE_STEPS
        assert cost["cpu"] < MAX_IDLE_CPU
        assert client.stats.unreachable == 1
        assert client.socket.stats.receive_errors == {"ECONNREFUSED": 1}


async def test_receive_on_a_socket_with_ip_recverr_does_not_spin():
    peer = closed_port(socket.AF_INET, "127.0.0.1")
    async with trioudp.open_udp_socket("127.0.0.1", 0) as sock:
        sock.trio_socket.setsockopt(*RECVERR["ipv4"][2:], 1)
        await sock.send_to(b"ping", peer)
        with pytest.raises(ConnectionRefusedError), trio.fail_after(5):
            await sock.receive()  # the kernel reports the error once...
        with idle_cost() as cost, trio.move_on_after(IDLE):
            await sock.receive()  # ...and its queued copy is drained
        assert cost["steps"] <= MAX_IDLE_STEPS
        assert cost["cpu"] < MAX_IDLE_CPU
        assert sock.stats.receive_errors == {"ECONNREFUSED": 1}


async def test_a_send_waiting_for_room_on_an_ip_recverr_socket_does_not_spin(netns):
    """In a namespace whose loopback is shaped, a send waits for room in a
    full send buffer while an ICMP error is queued (it woke ~1,000 times in
    13 ms before the wait for room drained the queue)."""
    result = await netns("recverr_send_wait")
    assert result["filled"] > 0
    assert result["waited"] > 0
    assert result["steps"] <= MAX_IDLE_STEPS
    assert result["receive_errors"] == {"ECONNREFUSED": 1}


async def test_a_socket_without_a_fast_path_is_served_screened(
    nursery, monkeypatch, caplog
):
    """Duplicating the descriptor fails (no descriptor free: test_faults
    runs this for real, under RLIMIT_NOFILE): the socket is served on the
    plain path, said in a warning, and screened as on the fast path."""

    def no_descriptor(fd):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(trioudp._kernel.os, "dup", no_descriptor)
    sock = await bind_udp_socket("0.0.0.0", 0)
    monkeypatch.undo()
    assert not sock.is_fast
    assert "no fast path" in caplog.text
    assert "Too many open files" in caplog.text
    destinations = []

    async def handler(datagram):
        destinations.append(datagram.destination)
        await datagram.reply(datagram.data)

    server = await nursery.start(trioudp.serve_udp_sockets, handler, [sock])
    assert sock._inbox.screen is not None
    async with trioudp.open_udp_socket("127.0.0.1", 0) as client:
        await client.send_to(b"hi", ("127.0.0.1", server.port))
        assert (await client.receive()).data == b"hi"
    assert destinations == ["127.0.0.1"]
