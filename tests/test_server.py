import functools
import itertools
import logging
import math
import socket

import pytest
import trio
import trio.testing

import trioudp
from trioudp import Overflow, ServerStats, serve_udp, serve_udp_sockets

from .conftest import count_tasks, open_fds, requires_ipv6


async def echo(datagram: trioudp.Datagram) -> None:
    await datagram.reply(datagram.data)


def accounted(stats: ServerStats) -> int:
    """Every received datagram's current outcome, summed."""
    return (
        stats.handled
        + stats.handler_errors
        + stats.handler_timeouts
        + stats.dropped_queue_full
        + stats.dropped_shutdown
        + stats.in_flight
        + stats.queued
    )


async def start(nursery, handler, **settings):
    settings.setdefault("host", "127.0.0.1")
    return await nursery.start(functools.partial(serve_udp, handler, 0, **settings))


async def test_serve_udp_starts_like_serve_tcp_and_echoes(nursery):
    server = await start(nursery, echo)
    assert isinstance(server, trioudp.UDPServer)
    assert server.addresses == [("127.0.0.1", server.port)]
    assert server.sockets[0].is_fast
    async with trioudp.open_udp_client("127.0.0.1", server.port) as client:
        for i in range(10):
            assert (await client.request(b"%d" % i)).data == b"%d" % i
    stats = server.stats
    assert (stats.received, stats.handled, stats.replied) == (10, 10, 10)
    await server.shutdown()
    assert server.sockets[0].closed


@requires_ipv6
async def test_host_none_serves_ipv4_and_ipv6_on_one_port(nursery):
    server = await nursery.start(serve_udp, echo, 0)
    families = sorted(len(address) for address in server.addresses)
    assert families == [2, 4]
    assert {address[1] for address in server.addresses} == {server.port}
    for host in ("127.0.0.1", "::1"):
        async with trioudp.open_udp_client(host, server.port) as client:
            assert (await client.request(b"x")).data == b"x"


async def test_handler_errors_are_logged_counted_and_survived(
    virtual_network, nursery, caplog
):
    async def fragile(datagram):
        if datagram.data == b"boom":
            raise ValueError("bad request")
        await datagram.reply(b"ok")

    server = await start(nursery, fragile)
    async with trioudp.open_udp_client("127.0.0.1", server.port, attempts=1) as client:
        await client.send(b"boom")
        assert (await client.request(b"fine")).data == b"ok"
    await trio.testing.wait_all_tasks_blocked()
    assert server.stats.handler_errors == 1
    assert server.stats.handled == 1
    [record] = [
        r for r in caplog.records if r.name == "trioudp" and r.levelno == logging.ERROR
    ]
    assert "failed on a datagram" in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[0] is ValueError


async def test_datagrams_beyond_max_in_flight_are_dropped_and_counted(
    virtual_network, nursery
):
    gate = trio.Event()
    seen = []

    async def slow(datagram):
        seen.append(datagram.data)
        await gate.wait()

    server = await start(nursery, slow, max_in_flight=2, queue_size=0)
    async with trioudp.open_udp_socket("127.0.0.1", 0) as client:
        for i in range(5):
            await client.send_to(b"%d" % i, ("127.0.0.1", server.port))
        await trio.testing.wait_all_tasks_blocked()
        stats = server.stats
        assert (stats.received, stats.in_flight, stats.dropped_queue_full) == (5, 2, 3)
        assert stats.tasks == 3
        assert accounted(stats) == stats.received
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
    assert seen == [b"0", b"1"]
    assert server.stats.handled == 2


@pytest.mark.parametrize(
    ("overflow", "handled", "dropped"),
    [
        (Overflow.DROP_NEWEST, [b"0", b"1", b"2"], 2),
        ("drop_oldest", [b"0", b"3", b"4"], 2),
    ],
)
async def test_overflow_policies_drop_exactly_the_expected_datagrams(
    virtual_network, nursery, overflow, handled, dropped
):
    gate = trio.Event()
    seen = []

    async def slow(datagram):
        await gate.wait()
        seen.append(datagram.data)

    server = await start(
        nursery, slow, max_in_flight=1, queue_size=2, overflow=overflow
    )
    async with trioudp.open_udp_socket("127.0.0.1", 0) as client:
        for i in range(5):
            await client.send_to(b"%d" % i, ("127.0.0.1", server.port))
            await trio.testing.wait_all_tasks_blocked()
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
    assert seen == handled
    assert server.stats.dropped_queue_full == dropped
    assert accounted(server.stats) == 5


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


async def test_shutdown_stops_receiving_at_once(
    virtual_network, autojump_clock, nursery
):
    server = await start(nursery, echo)
    port = server.port
    await server.shutdown(grace=0)
    async with trioudp.open_udp_socket("127.0.0.1", 0) as client:
        await client.send_to(b"late", ("127.0.0.1", port))
    assert server.stats.received == 0
    assert virtual_network.stats.dropped == {"port_unreachable": 1}


async def test_begin_shutdown_from_a_handler(virtual_network, nursery):
    server_box = []

    async def stop_on_exit(datagram):
        if datagram.data == b"exit":
            server_box[0].begin_shutdown(grace=1.0)

    server = await start(nursery, stop_on_exit)
    server_box.append(server)
    async with trioudp.open_udp_socket("127.0.0.1", 0) as client:
        await client.send_to(b"exit", ("127.0.0.1", server.port))
    await trio.testing.wait_all_tasks_blocked()
    assert server.stopping
    with trio.fail_after(1):
        await server.shutdown()
    assert server.stopping
    assert server.stats.handled == 1


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


async def test_closing_the_sockets_winds_the_server_down(virtual_network, nursery):
    server = await start(nursery, echo)
    server.sockets[0].close()
    with trio.fail_after(1):
        await server._stopped.wait()
    assert server.stopping


async def test_handler_timeout_is_counted(virtual_network, autojump_clock, nursery):
    async def forever(datagram):
        await trio.sleep_forever()

    server = await start(nursery, forever, handler_timeout=0.5)
    async with trioudp.open_udp_socket("127.0.0.1", 0) as client:
        await client.send_to(b"x", ("127.0.0.1", server.port))
    await trio.sleep(1)
    assert server.stats.handler_timeouts == 1
    assert accounted(server.stats) == 1


async def test_serve_udp_sockets_serves_your_own_socket(virtual_network, nursery):
    sock = await trioudp._open.bind_udp_socket("127.0.0.1", 0)
    server = await nursery.start(serve_udp_sockets, echo, [sock])
    assert server.sockets == (sock,)
    async with trioudp.open_udp_client("127.0.0.1", server.port) as client:
        assert (await client.request(b"mine")).data == b"mine"


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"max_in_flight": 0}, "max_in_flight must be an int >= 1"),
        ({"queue_size": -1}, "queue_size must be an int >= 0"),
        ({"batch_size": 0}, "batch_size must be an int >= 1"),
        ({"handler_timeout": 0}, "handler_timeout must be a positive"),
        ({"overflow": "drop_random"}, "drop_random"),
    ],
)
async def test_bad_settings_are_rejected(virtual_network, nursery, settings, fragment):
    with pytest.raises(ValueError, match=fragment):
        await start(nursery, echo, **settings)


async def test_serve_udp_sockets_needs_a_socket():
    with pytest.raises(ValueError, match="at least one socket"):
        await serve_udp_sockets(echo, [])


async def test_bind_failure_raises_before_started(nursery):
    server = await start(nursery, echo)
    with pytest.raises(trioudp.BindError):
        await nursery.start(
            functools.partial(serve_udp, echo, server.port, host="127.0.0.1")
        )


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


async def test_fairness_under_a_flood_on_the_fast_path(nursery):
    """While the server drains a full kernel queue, another task still runs at
    least every 2 batches, and shutdown takes effect within a batch."""
    batch = 16
    handled_at_tick = []
    server = await start(nursery, echo, batch_size=batch)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setblocking(False)
    with sender:
        sender.bind(("127.0.0.1", 0))
        for _round in range(5):
            for i in range(150):
                sender.sendto(b"%d" % i, ("127.0.0.1", server.port))
            target = server.stats.received + 150
            while server.stats.handled < target:
                handled_at_tick.append(server.stats.handled)
                await trio.lowlevel.checkpoint()
        gaps = [b - a for a, b in itertools.pairwise(handled_at_tick)]
        assert max(gaps) <= 2 * batch
        for i in range(150):
            sender.sendto(b"%d" % i, ("127.0.0.1", server.port))
        await trio.lowlevel.checkpoint()
        handled_before = server.stats.handled
        await server.shutdown(grace=0)
        assert server.stats.handled - handled_before <= batch


async def test_a_handler_that_is_not_async_is_refused_at_start(
    virtual_network, nursery
):
    def not_async(datagram):
        return None

    with pytest.raises(TypeError, match="handler must be an async function"):
        await start(nursery, not_async)


async def test_a_handler_must_be_callable(virtual_network, nursery):
    with pytest.raises(TypeError, match="handler must be an async function"):
        await start(nursery, "not a function")


async def test_serve_udp_sockets_closes_the_sockets_it_refuses(virtual_network):
    sock = await trioudp._open.bind_udp_socket("127.0.0.1", 0)
    with pytest.raises(ValueError, match="max_in_flight"):
        await serve_udp_sockets(echo, [sock], max_in_flight=0)
    assert sock.closed


@pytest.mark.parametrize(
    ("value", "error", "fragment"),
    [
        ("5", TypeError, "handler_timeout must be a number, not '5'"),
        (10**400, ValueError, "handler_timeout is too large"),
        (math.nan, ValueError, "handler_timeout must be a number, not nan"),
        (-1, ValueError, "handler_timeout must be a positive"),
    ],
    ids=["str", "huge", "nan", "negative"],
)
async def test_bad_handler_timeout_is_named_at_start(
    virtual_network, nursery, value, error, fragment
):
    with pytest.raises(error, match=fragment):
        await start(nursery, echo, handler_timeout=value)


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


class _ShutdownWhenScheduled(trio.abc.Instrument):
    """Begins a server's shutdown at the moment Trio makes its receiver task
    runnable (a datagram arrived), before that task runs."""

    def __init__(self, server: trioudp.UDPServer) -> None:
        self.server = server
        self.receivers = set(server._intake.nursery.child_tasks)

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        if task in self.receivers and not self.server.stopping:
            self.server.begin_shutdown(grace=5.0)


async def test_a_datagram_that_wakes_the_receiver_as_shutdown_begins_is_not_taken(
    nursery,
):
    """Shutdown begins after the kernel woke the receiver for a datagram but
    before the receiver ran: it must not take the datagram and then cancel
    its handler at once, grace or not (it did, on the fast path: the
    handler ran inside the receive wait's cancelled scope)."""

    async def slow(datagram):
        await trio.sleep(0.01)
        await datagram.reply(b"done")

    server = await start(nursery, slow)
    await trio.testing.wait_all_tasks_blocked()
    instrument = _ShutdownWhenScheduled(server)
    trio.lowlevel.add_instrument(instrument)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.sendto(b"work", ("127.0.0.1", server.port))
            with trio.fail_after(5):
                await server._stopped.wait()
    finally:
        trio.lowlevel.remove_instrument(instrument)
    stats = server.stats
    assert (stats.received, stats.dropped_shutdown) == (0, 0)


@pytest.mark.parametrize("form", ["async", "responder"])
async def test_begin_shutdown_from_a_handler_stops_receiving_within_the_batch(
    nursery, form
):
    """``exit`` and three more datagrams wait in the kernel; the handler of
    ``exit`` begins the shutdown: receiving stops at once, so the other
    three are never taken (they were, and answered: the receive loop took
    up to a batch before looking)."""
    box = []

    def answer(datagram):
        if datagram.data == b"exit":
            box[0].begin_shutdown()
        return datagram.data

    async def answer_async(datagram):
        await datagram.reply(answer(datagram))

    handler = answer_async if form == "async" else trioudp.Responder(answer)
    server = await start(nursery, handler)
    box.append(server)
    await trio.testing.wait_all_tasks_blocked()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        for payload in (b"exit", b"a", b"b", b"c"):
            client.sendto(payload, ("127.0.0.1", server.port))
        with trio.fail_after(5):
            await server._stopped.wait()
    stats = server.stats
    assert (stats.received, stats.handled) == (1, 1)


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
