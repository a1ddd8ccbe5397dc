"""trioudp._server: a running UDPServer's counters account for every datagram,
and it shuts down gracefully or at once, leaving nothing behind."""

import contextlib
import functools
import logging
import math
import socket

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trioudp
from trioudp import (
    _inbox,
    serve_udp,
)
from trioudp.testing import VirtualNetwork

from .conftest import count_tasks, open_fds
from .helpers import (
    accounted,
    client_socket,
    echo,
    flood,
    start,
)


async def test_graceful_shutdown_lets_handlers_finish_within_grace(
    virtual_network, autojump_clock, nursery
):
    async def slow_echo(datagram):
        await trio.sleep(1.0)
        await datagram.reply(datagram.data)

    server = await start(nursery, slow_echo)
    replies = []
    async with trioudp.open_udp_socket("127.0.0.1", 0) as client:
        for i in range(3):
            await client.send_to(b"%d" % i, ("127.0.0.1", server.port))
        await trio.testing.wait_all_tasks_blocked()
        start_time = trio.current_time()
        await server.shutdown(grace=5.0)
        assert trio.current_time() - start_time == 1.0
        while len(replies) < 3:
            replies.append((await client.receive()).data)
    assert sorted(replies) == [b"0", b"1", b"2"]
    stats = server.stats
    assert (stats.handled, stats.replied, stats.dropped_shutdown) == (3, 3, 0)
    assert all(sock.closed for sock in server.sockets)


async def test_graceful_shutdown_cancels_handlers_beyond_grace(
    virtual_network, autojump_clock, nursery
):
    finished = []

    async def too_slow(datagram):
        await trio.sleep(10.0)
        finished.append(datagram.data)  # pragma: no cover

    tasks_at_start = count_tasks()
    server = await start(nursery, too_slow)
    async with trioudp.open_udp_socket("127.0.0.1", 0) as client:
        for i in range(4):
            await client.send_to(b"%d" % i, ("127.0.0.1", server.port))
    await trio.testing.wait_all_tasks_blocked()
    start_time = trio.current_time()
    await server.shutdown(grace=2.0)
    assert trio.current_time() - start_time == 2.0
    assert finished == []
    stats = server.stats
    assert (stats.dropped_shutdown, stats.in_flight, stats.tasks) == (4, 0, 0)
    assert count_tasks() == tasks_at_start
    assert accounted(stats) == 4


async def test_begin_shutdown_from_a_handler_stops_the_server_without_waiting_out_grace(
    virtual_network, autojump_clock, nursery
):
    """On a socket without the fast path (the virtual network), the handler
    that begins the shutdown ran from the receiver's queue, which then went
    back to waiting for datagrams, out of reach of the shutdown: the server
    kept receiving and stopped only when the grace period ran out."""
    box = []

    async def stop_on_exit(datagram):
        if datagram.data == b"exit":
            box[0].begin_shutdown(grace=10.0)

    server = await start(nursery, stop_on_exit)
    box.append(server)
    port = server.port
    async with trioudp.open_udp_socket("127.0.0.1", 0) as client:
        await client.send_to(b"exit", ("127.0.0.1", port))
        await server._stopped.wait()
        assert trio.current_time() == 0
        await client.send_to(b"late", ("127.0.0.1", port))
    assert (server.stats.received, server.stats.handled) == (1, 1)


async def test_cancelling_the_enclosing_scope_stops_everything(nursery):
    before = open_fds()
    async with trio.open_nursery() as inner:
        server = await start(inner, echo)
        async with trioudp.open_udp_client("127.0.0.1", server.port) as client:
            await client.request(b"x")
        inner.cancel_scope.cancel()
    assert all(sock.closed for sock in server.sockets)
    assert open_fds() == before


async def test_ten_thousand_start_and_cancel_cycles_leave_no_fd_or_task():
    before = open_fds()
    tasks_before = count_tasks()
    for _ in range(10_000):
        async with trio.open_nursery() as nursery:
            await start(nursery, echo)
            nursery.cancel_scope.cancel()
    assert open_fds() == before
    assert count_tasks() == tasks_before


async def test_ten_thousand_virtual_start_cancel_cycles(virtual_network):
    tasks_before = count_tasks()
    for _ in range(10_000):
        async with trio.open_nursery() as nursery:
            await start(nursery, echo)
            nursery.cancel_scope.cancel()
    assert count_tasks() == tasks_before
    assert virtual_network._bound == {}
    assert virtual_network._wild == {}


async def test_datagrams_received_as_shutdown_begins_are_counted(
    virtual_network, nursery
):
    server = await start(nursery, echo)
    async with trioudp.open_udp_socket("127.0.0.1", 0) as client:
        await client.send_to(b"x", ("127.0.0.1", server.port))
        # The intake may or may not have run when shutdown begins: either way
        # the datagram is accounted for.
        await server.shutdown()
    stats = server.stats
    assert stats.received == 1
    assert stats.handled + stats.dropped_shutdown == 1
    assert accounted(stats) == 1


async def test_negative_grace_is_rejected(virtual_network, nursery):
    server = await start(nursery, echo)
    with pytest.raises(ValueError, match="grace must be >= 0"):
        server.begin_shutdown(-1)


@pytest.mark.parametrize(
    ("value", "error", "fragment"),
    [
        ("1", TypeError, "grace must be a number, not '1'"),
        (10**400, ValueError, "grace is too large"),
        (math.nan, ValueError, "grace must be a number, not nan"),
    ],
    ids=["str", "huge", "nan"],
)
async def test_bad_grace_is_named(virtual_network, nursery, value, error, fragment):
    server = await start(nursery, echo)
    with pytest.raises(error, match=fragment):
        server.begin_shutdown(value)
    assert not server.stopping
    await server.shutdown()


async def test_oversize_empty_and_garbage_are_counted_and_the_server_goes_on(
    virtual_network, nursery
):
    async def strict(datagram):
        datagram.data.decode("ascii")
        await datagram.reply(b"ok")

    server = await start(nursery, strict, port=53, max_datagram_size=512)
    async with client_socket("127.0.0.1") as a:
        await a.send_to(b"x" * 513, ("127.0.0.1", 53))
        await a.send_to(b"", ("127.0.0.1", 53))
        await a.send_to(b"\xff\xfe\x00garbage", ("127.0.0.1", 53))
        await a.send_to(b"fine", ("127.0.0.1", 53))
        replies = [(await a.receive()).data for _ in range(2)]
    assert replies == [b"ok", b"ok"]
    # The server counts a datagram handled once its reply is sent: let it.
    await trio.testing.wait_all_tasks_blocked()
    stats = server.stats
    assert (
        stats.dropped_oversize,
        stats.handled,
        stats.handler_errors,
        stats.received,
    ) == (1, 2, 1, 3)
    assert stats.accounted == stats.received
    # Oversize datagrams are never received, so they are not among the
    # received datagrams dropped either: every count adds up.
    assert stats.dropped == 0
    assert stats.accounted == (
        stats.handled + stats.handler_errors + stats.handler_timeouts
        + stats.dropped + stats.in_flight + stats.queued
    )  # fmt: skip


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(payloads=st.lists(st.binary(max_size=2048), min_size=1, max_size=20))
def test_fuzzed_datagrams_never_crash_or_hang_and_are_all_accounted(payloads):
    import dns.message

    logging.getLogger("trioudp").disabled = True  # every malformed query logs an error

    async def dns_like(datagram):
        query = dns.message.from_wire(datagram.data)
        await datagram.reply(dns.message.make_response(query).to_wire())

    async def main():
        net = VirtualNetwork(seed=1)
        with net.install():
            async with trio.open_nursery() as nursery:
                server = await nursery.start(
                    functools.partial(serve_udp, dns_like, 53, host="127.0.0.1")
                )
                async with client_socket("127.0.0.1") as a:
                    for payload in payloads:
                        await a.send_to(payload, ("127.0.0.1", 53))
                await trio.testing.wait_all_tasks_blocked()
                with trio.fail_after(2):
                    await server.shutdown()
                stats = server.stats
                assert stats.received == len(payloads)
                assert stats.accounted == stats.received
                assert stats.handled + stats.handler_errors == len(payloads)

    try:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        logging.getLogger("trioudp").disabled = False


@pytest.mark.parametrize("fast", [True, False], ids=["real socket", "virtual"])
async def test_datagrams_left_in_the_kernel_at_shutdown_are_counted(fast, nursery):
    """Datagrams that arrive after receiving stopped wait in the kernel; as
    the server closes its sockets it takes them and counts them, received
    and dropped_shutdown (oversize ones as dropped_oversize): no datagram
    the server's socket got goes uncounted."""
    release = trio.Event()

    async def slow(datagram):
        await release.wait()

    with contextlib.ExitStack() as stack:
        if not fast:
            stack.enter_context(VirtualNetwork(seed=1).install())
        server = await start(nursery, slow, max_datagram_size=100)
        address = ("127.0.0.1", server.port)
        async with trioudp.open_udp_socket("127.0.0.1", 0) as client:
            await client.send_to(b"first", address)
            await trio.testing.wait_all_tasks_blocked()
            server.begin_shutdown(grace=math.inf)  # receiving stops at once
            for i in range(10):
                await client.send_to(b"%d" % i, address)
            await client.send_to(b"x" * 101, address)
            await trio.testing.wait_all_tasks_blocked()
            assert server.stats.received == 1
            release.set()
            await server.shutdown()
    stats = server.stats
    assert (stats.received, stats.handled, stats.dropped_shutdown) == (11, 1, 10)
    assert stats.dropped_oversize == 1
    assert stats.accounted == stats.received


async def test_datagrams_taken_at_close_are_at_most_what_the_buffer_holds(
    nursery, monkeypatch
):
    """The bound that keeps a flood from holding a closing server: it takes
    at most SO_RCVBUF / _LEAST_TRUESIZE + 1 datagrams (here, 2)."""
    async with trioudp.open_udp_socket("127.0.0.1", 0) as sock:
        rcvbuf = sock.trio_socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        monkeypatch.setattr(_inbox, "_LEAST_TRUESIZE", rcvbuf)
        with flood(sock.local_address[1], [b"%d" % i for i in range(5)]):
            assert await sock._inbox.take_leftovers() == 2
            assert sock.stats.received == 2
            assert sock._inbox.receive_nowait(0.0).data == b"2"
