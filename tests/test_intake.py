"""trioudp._intake: the receiving tasks stop taking datagrams the moment
shutdown begins, and wind the server down when every socket closes."""

import contextlib
import socket
import sys

import pytest
import trio
import trio.lowlevel
import trio.testing

import trioudp
from trioudp.testing import VirtualNetwork

from .helpers import (
    echo,
    start,
)

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup


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


async def test_closing_the_sockets_winds_the_server_down(virtual_network, nursery):
    server = await start(nursery, echo)
    server.sockets[0].close()
    with trio.fail_after(1):
        await server._stopped.wait()
    assert server.stopping


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
    handler ran inside the receive wait's cancelled scope). The server takes
    the datagram only as it closes its socket, and counts it."""
    started = []

    async def slow(datagram):
        started.append(datagram.data)
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
    assert started == []
    assert (stats.received, stats.handled, stats.dropped_shutdown) == (1, 0, 1)


@pytest.mark.parametrize("form", ["async", "responder"])
async def test_begin_shutdown_from_a_handler_stops_receiving_within_the_batch(
    nursery, form
):
    """``exit`` and three more datagrams wait in the kernel; the handler of
    ``exit`` begins the shutdown: receiving stops at once, so the other
    three are never handled (they were, and answered: the receive loop took
    up to a batch before looking), only counted as the server closes."""
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
    assert (stats.received, stats.handled, stats.dropped_shutdown) == (4, 1, 3)


# ---- handler_nursery --------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False], ids=["real socket", "virtual"])
async def test_handlers_run_in_the_handler_nursery_quick_or_suspending(
    fast, autojump_clock, nursery
):
    """Every handler call runs in a task of handler_nursery: the quick ones
    in a receiving task started there, and one that suspends finishes there
    (nothing moves between tasks)."""
    seen = []

    async def handler(datagram):
        seen.append((datagram.data, "before", current_nursery()))
        if datagram.data == b"slow":
            await trio.sleep(1)
            seen.append((datagram.data, "after", current_nursery()))
        await datagram.reply(datagram.data)

    async with contextlib.AsyncExitStack() as stack:
        if not fast:
            stack.enter_context(VirtualNetwork(seed=1).install())
        handlers = await stack.enter_async_context(trio.open_nursery())
        server = await start(nursery, handler, handler_nursery=handlers)
        async with trioudp.open_udp_socket("127.0.0.1", 0) as client:
            for payload in (b"quick", b"slow", b"quick again"):
                await client.send_to(payload, ("127.0.0.1", server.port))
            replies = {(await client.receive()).data for _ in range(3)}
        assert replies == {b"quick", b"slow", b"quick again"}
        assert [nursery_ for *_, nursery_ in seen] == [handlers] * 4
        await trio.testing.wait_all_tasks_blocked()
        assert server.stats.tasks == 1  # the receiving task, in handlers
        assert len(handlers.child_tasks) == 1
        await server.shutdown()
        assert not handlers.child_tasks


def current_nursery():
    return trio.lowlevel.current_task().parent_nursery


async def test_cancelling_the_server_ends_its_handlers_in_the_handler_nursery(
    virtual_network, autojump_clock
):
    """The server owns its tasks in handler_nursery: cancelling serve_udp
    cancels them and returns once they have ended; the handler nursery and
    its other tasks go on."""
    started = trio.Event()

    async def forever(datagram):
        started.set()
        await trio.sleep_forever()

    async with trio.open_nursery() as handlers:
        handlers.start_soon(trio.sleep_forever)  # the user's own task
        async with trio.open_nursery() as serving:
            server = await start(serving, forever, handler_nursery=handlers)
            async with trioudp.open_udp_socket("127.0.0.1", 0) as client:
                await client.send_to(b"x", ("127.0.0.1", server.port))
                await started.wait()
            assert len(handlers.child_tasks) == 3  # 2 receivers, 1 of them waiting
            serving.cancel_scope.cancel()
        assert server._stopped.is_set()
        assert len(handlers.child_tasks) == 1  # only the user's own
        stats = server.stats
        assert (stats.received, stats.dropped_shutdown) == (1, 1)
        assert stats.accounted == stats.received
        handlers.cancel_scope.cancel()


async def test_cancelling_the_handler_nursery_stops_the_server(
    virtual_network, autojump_clock, nursery
):
    started = trio.Event()

    async def forever(datagram):
        started.set()
        await trio.sleep_forever()

    async with trio.open_nursery() as handlers:
        server = await start(nursery, forever, handler_nursery=handlers)
        async with trioudp.open_udp_socket("127.0.0.1", 0) as client:
            await client.send_to(b"x", ("127.0.0.1", server.port))
            await started.wait()
        handlers.cancel_scope.cancel()
    with trio.fail_after(1):
        await server._stopped.wait()
    assert server.stopping
    stats = server.stats
    assert (stats.received, stats.dropped_shutdown) == (1, 1)
    assert all(sock.closed for sock in server.sockets)


async def test_a_graceful_shutdown_lets_handlers_in_the_handler_nursery_finish(
    virtual_network, autojump_clock, nursery
):
    async def slow(datagram):
        await trio.sleep(float(datagram.data))
        await datagram.reply(datagram.data)

    async with trio.open_nursery() as handlers:
        server = await start(nursery, slow, handler_nursery=handlers)
        async with trioudp.open_udp_socket("127.0.0.1", 0) as client:
            await client.send_to(b"1", ("127.0.0.1", server.port))
            await client.send_to(b"5", ("127.0.0.1", server.port))
            await trio.testing.wait_all_tasks_blocked()
            await server.shutdown(grace=2)
            assert trio.current_time() == 2
            assert (await client.receive()).data == b"1"
    stats = server.stats
    assert (stats.handled, stats.dropped_shutdown) == (1, 1)


async def test_a_fatal_handler_error_propagates_into_the_handler_nursery(
    virtual_network, autojump_clock, nursery
):
    async def fatal(datagram):
        await trio.lowlevel.checkpoint()
        raise SystemExit(3)

    with pytest.raises(BaseExceptionGroup) as raised:  # noqa: PT012
        async with trio.open_nursery() as handlers:
            server = await start(nursery, fatal, handler_nursery=handlers)
            async with trioudp.open_udp_socket("127.0.0.1", 0) as client:
                await client.send_to(b"x", ("127.0.0.1", server.port))
                await trio.sleep_forever()
    assert raised.group_contains(SystemExit)
    with trio.fail_after(1):
        await server._stopped.wait()
    assert server.stats.handler_errors == 1
