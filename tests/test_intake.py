"""trioudp._intake: the receiving tasks stop taking datagrams the moment
shutdown begins, and wind the server down when every socket closes."""

import socket

import pytest
import trio
import trio.testing

import trioudp

from .helpers import (
    echo,
    start,
)


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
