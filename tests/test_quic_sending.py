"""What a connection sends, and when: a write and what the task does next
leave in one packet, input is answered at once, released streams are
credited in steps; on the virtual network, counted from its trace."""

from __future__ import annotations

import contextlib
import itertools
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

import trioudp.quic
from trioudp.quic._sending import Sender

from .quic_support import connect, quic_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.virtual_network(latency=0.005)

REQUESTS = 20


async def answer(connection: trioudp.quic.QUICConnection) -> None:
    """Answer each stream once the request is complete: its bytes back."""

    async def serve(stream: trioudp.quic.QUICStream) -> None:
        async with stream:
            await stream.send_all(b"".join([chunk async for chunk in stream]))

    async with trio.open_nursery() as nursery:
        try:
            while True:
                nursery.start_soon(serve, await connection.accept_stream())
        except (trioudp.quic.ConnectionClosed, trio.ClosedResourceError):
            nursery.cancel_scope.cancel()


async def request(connection: trioudp.quic.QUICConnection, data: bytes) -> bytes:
    async with await connection.open_stream() as stream:
        await stream.send_all(data)
        await stream.send_eof()
        return b"".join([chunk async for chunk in stream])


def sends_between(virtual_network, start: float, end: float) -> dict[int, list[int]]:
    """The sizes of the datagrams each port sent in [start, end]."""
    sent: dict[int, list[int]] = {}
    for event in virtual_network.trace:
        if event.kind == "send" and start <= event.time <= end:
            sent.setdefault(event.src[1], []).append(event.size)
    return sent


async def test_a_request_and_its_reply_take_one_packet_each_way(virtual_network):
    """The data and the FIN written by one task leave together, and so do the
    server's reply and its FIN (before, each went in a packet of its own, and
    every closed stream cost a MAX_STREAMS packet); each carries the
    acknowledgement aioquic still delays (before, an acknowledgement-only
    packet followed each a millisecond later, both ways)."""
    async with quic_server(answer) as server, connect(server) as connection:
        await request(connection, b"warm up")
        await trio.sleep(1)  # the handshake's stragglers
        start = trio.current_time()
        for number in range(REQUESTS):
            payload = b"%03d" % number * 20
            assert await request(connection, payload) == payload
        end = trio.current_time()
    sent = sends_between(virtual_network, start, end)
    from_server = sent.pop(server.port)
    [from_client] = sent.values()
    # Each side: one packet per request or reply carrying 60 bytes of data
    # (96 in all), and no acknowledgement-only packet (about 33 bytes) but
    # for the last reply's, which has no request to ride on.
    for sizes in (from_client, from_server):
        assert len([size for size in sizes if size > 80]) == REQUESTS
        assert len([size for size in sizes if size < 60]) <= 1


async def test_released_streams_are_credited_in_steps_of_half_the_limit(
    virtual_network,
):
    max_streams = 8
    async with (
        quic_server(answer, max_streams=max_streams) as server,
        connect(server) as connection,
    ):
        limits = [connection.engine._remote_max_streams_bidi]
        for _ in range(40):
            await request(connection, b"x")
            limit = connection.engine._remote_max_streams_bidi
            if limit != limits[-1]:
                limits.append(limit)
    steps = [later - earlier for earlier, later in itertools.pairwise(limits)]
    assert len(steps) >= 4  # 40 streams through a limit of 8
    assert min(steps) >= max_streams // 2


async def test_a_stream_the_peer_waits_on_is_credited_once_half_are_free(
    virtual_network,
):
    """Crediting in steps never strands a peer: with every stream at the
    limit, releasing half of them lets it open more."""
    max_streams = 4
    held: list[trioudp.quic.QUICStream] = []
    release = trio.Event()

    async def handler(connection: trioudp.quic.QUICConnection) -> None:
        held.extend([await connection.accept_stream() for _ in range(max_streams)])
        await release.wait()
        for stream in held[: max_streams // 2]:
            await stream.aclose()
        await trio.sleep_forever()

    async with (
        quic_server(handler, max_streams=max_streams) as server,
        connect(server) as connection,
    ):
        for _ in range(max_streams):
            stream = await connection.open_stream()
            await stream.send_all(b"x")
        with trio.move_on_after(5) as blocked:
            await connection.open_stream()
        assert blocked.cancelled_caught
        release.set()
        with trio.fail_after(5):
            await connection.open_stream()


class FakeEngine:
    """What a Sender asks of the engine: the datagrams to send, its timer."""

    def __init__(self) -> None:
        self.ready: list[tuple[bytes, tuple[str, int]]] = []
        self.fired = []

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int]]]:
        ready, self.ready = self.ready, []
        return ready

    timer: float | None = None
    fired: list[float]

    def get_timer(self) -> float | None:
        return self.timer

    def ack_with_data(self, now: float) -> None: ...

    def handle_timer(self, now: float) -> None:
        self.fired.append(now)
        self.timer = None


class FullSocket:
    """A transport whose send buffer is full until ``room`` is set."""

    def __init__(self, takes: int) -> None:
        self.takes = takes  # datagrams it takes at once before it is full
        self.room = trio.Event()
        self.sent: list[bytes] = []

    def send_to_nowait(self, data: bytes, address: tuple[str, int]) -> None:
        if self.takes <= 0:
            raise trio.WouldBlock
        self.takes -= 1
        self.sent.append(data)

    async def send_to(self, data: bytes, address: tuple[str, int]) -> None:
        await self.room.wait()
        self.sent.append(data)


class Owner:
    ended = False

    def _deliver(self) -> None: ...

    def _sweep(self) -> None: ...

    def _end(self, failure: BaseException | None = None) -> None:
        self.ended = True

    def _close_here(self, error_code: int, reason: str) -> None: ...


PEER = ("127.0.0.1", 4433)


def datagrams(*names: str) -> list[tuple[bytes, tuple[str, int]]]:
    return [(name.encode(), PEER) for name in names]


async def test_nothing_is_sent_around_a_driver_waiting_for_room():
    engine, socket = FakeEngine(), FullSocket(takes=2)
    sender = Sender(engine, socket, None)  # type: ignore[arg-type]
    owner = Owner()
    engine.ready = datagrams("1", "2", "3", "4")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.drive, owner)
        await trio.testing.wait_all_tasks_blocked()
        sender.flush(trio.current_time(), owner)  # 1, 2 leave; 3, 4 wait
        await trio.testing.wait_all_tasks_blocked()  # the driver waits for room
        socket.takes = 10  # room for more, but the driver is first in line
        engine.ready = datagrams("5")
        sender.flush(trio.current_time(), owner)
        assert socket.sent == [b"1", b"2"]
        socket.room.set()
        await trio.testing.wait_all_tasks_blocked()
        assert socket.sent == [b"1", b"2", b"3", b"4", b"5"]
        nursery.cancel_scope.cancel()


async def test_a_send_cancelled_while_waiting_for_room_goes_back_first():
    engine, socket = FakeEngine(), FullSocket(takes=0)
    sender = Sender(engine, socket, None)  # type: ignore[arg-type]
    owner = Owner()
    engine.ready = datagrams("1", "2")
    with trio.move_on_after(1):
        await sender.transmit(trio.current_time(), owner)
    assert socket.sent == []
    socket.room.set()
    engine.ready = datagrams("3")
    await sender.transmit(trio.current_time(), owner)
    assert socket.sent == [b"1", b"2", b"3"]


@contextlib.asynccontextmanager
async def driving(
    takes: int, timer: float
) -> AsyncIterator[tuple[FakeEngine, FullSocket, Sender]]:
    """A sender whose driver runs, on a socket that takes ``takes`` datagrams
    at once, with the engine's timer ``timer`` seconds from now."""
    engine, socket = FakeEngine(), FullSocket(takes=takes)
    sender = Sender(engine, socket, None)  # type: ignore[arg-type]
    engine.timer = trio.current_time() + timer
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.drive, Owner())
        await trio.testing.wait_all_tasks_blocked()
        yield engine, socket, sender
        nursery.cancel_scope.cancel()


async def test_a_timer_due_while_the_driver_waits_for_room_fires_and_nothing_is_lost():
    async with driving(takes=0, timer=1) as (engine, socket, sender):
        engine.ready = datagrams("1", "2")
        sender.kick()
        await trio.testing.wait_all_tasks_blocked()  # waiting for room
        await trio.sleep(2)  # the timer comes due meanwhile
        assert len(engine.fired) == 1
        assert socket.sent == []
        socket.room.set()
        await trio.testing.wait_all_tasks_blocked()
        assert socket.sent == [b"1", b"2"]  # in order, none stranded


async def test_kicks_keep_the_drivers_sleep_and_move_it_only_with_the_timer():
    async with driving(takes=100, timer=10) as (engine, socket, sender):
        scope = sender._timer_scope
        assert scope is not None
        assert scope.deadline == engine.timer
        for name in ("1", "2"):
            engine.ready = datagrams(name)
            sender.kick()
            await trio.testing.wait_all_tasks_blocked()
        assert socket.sent == [b"1", b"2"]
        assert sender._timer_scope is scope  # the same sleep served both kicks
        engine.timer = trio.current_time() + 3
        sender.kick()
        await trio.testing.wait_all_tasks_blocked()
        assert sender._timer_scope is scope
        assert scope.deadline == engine.timer
        await trio.sleep(4)
        assert len(engine.fired) == 1
        assert engine.fired[0] >= scope.deadline
