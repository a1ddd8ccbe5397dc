"""QUIC across run_workers processes: every packet of a connection reaches
the worker that owns it, also after the client's address changes.

The pool's sockets are bound by the supervisor and steered by a classic BPF
program that reads the destination connection ID (trioudp/quic/_steering.py).
Clients reach the pool through a NAT of the test's own on loopback, which
can move a client to a new source port mid-connection (NAT rebinding) without
the client knowing. Real processes on loopback; every wait is bounded by
``fail_after``.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import sys

import attrs
import pytest
import trio

import trioudp
import trioudp.quic
from trioudp._workers._sockets import bind_worker_sockets
from trioudp.quic._steering import (
    MAX_WORKERS,
    steering_program,
    worker_connection_id,
)

from .conftest import ROOT
from .quic_support import client_config, pki

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SO_ATTACH_REUSEPORT_CBPF is Linux's"
)

APP = f"{ROOT / 'tests' / 'quic_worker_app.py'}:serve"
DEADLINE = 90
CONNECTIONS = 64
REQUESTS = 10


# ---- the connection IDs and the program, without processes ---------------------


@pytest.mark.parametrize("count", [1, 2, 3, 7, 64, 255, MAX_WORKERS])
def test_a_worker_connection_id_routes_to_its_worker_and_stays_random(count):
    for index in {0, count // 2, count - 1}:
        cids = {worker_connection_id(index, count, 8) for _ in range(200)}
        assert {cid[0] % count for cid in cids} == {index}
        assert len(cids) == 200
    if count <= 128:
        # The first byte's high part is random too: not one fixed value.
        assert len({worker_connection_id(0, count, 8)[0] for _ in range(200)}) > 1


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((0, 0, 8), ValueError),
        ((0, MAX_WORKERS + 1, 8), ValueError),
        ((2, 2, 8), ValueError),
        ((-1, 2, 8), ValueError),
        ((0, 2, 0), ValueError),
        ((0, True, 8), TypeError),
    ],
)
def test_worker_connection_ids_refuse_what_cannot_route(args, error):
    with pytest.raises(error):
        worker_connection_id(*args)


def short_header(dcid: bytes) -> bytes:
    return bytes([0x40]) + dcid + b"\x00" * 24


def long_header(dcid: bytes) -> bytes:
    return bytes([0xC0]) + b"\x00\x00\x00\x01" + bytes([len(dcid)]) + dcid + bytes(30)


async def test_the_kernel_steers_each_datagram_by_its_connection_id():
    """Three sockets bound in worker order, the program attached: a
    datagram goes to the socket whose index its DCID's first byte names,
    short header or long; what names no worker still arrives (the kernel's
    hash picks the socket)."""
    count = 3
    plan = trioudp.WorkerSockets(host="127.0.0.1", steering=steering_program)
    held = await bind_worker_sockets(plan, count, 0)
    sockets = [sockets[0] for sockets in held]
    port = sockets[0].local_address[1]
    sent: list[tuple[int | None, bytes]] = []
    for index in range(count):
        for _ in range(8):
            cid = worker_connection_id(index, count, 8)
            sent += [(index, short_header(cid)), (index, long_header(cid))]
    sent += [(None, long_header(b"")), (None, b"\x40\x01")]
    received: dict[bytes, int] = {}
    all_in = trio.Event()

    async def take(index: int, sock: trioudp.UDPSocket) -> None:
        async for datagram in sock:
            received[datagram.data] = index
            if len(received) == len(sent):
                all_in.set()

    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for index, sock in enumerate(sockets):
                    nursery.start_soon(take, index, sock)
                async with trioudp.open_udp_socket("127.0.0.1", 0) as client:
                    for _, data in sent:
                        await client.send_to(data, ("127.0.0.1", port))
                await all_in.wait()
                nursery.cancel_scope.cancel()
    finally:
        for sockets_of_worker in held:
            for sock in sockets_of_worker:
                sock.close()
    assert {data: received[data] for index, data in sent if index is not None} == {
        data: index for index, data in sent if index is not None
    }


def test_a_steering_program_is_refused_for_more_workers_than_a_byte_names():
    with pytest.raises(ValueError, match="1..256 workers"):
        steering_program(MAX_WORKERS + 1)


# ---- real worker processes ----------------------------------------------------


class Nat:
    """A NAT on loopback between one client and the pool: the client sends
    to :attr:`port`, the NAT forwards from a source port of its own, and
    :meth:`rebind` moves the client to a new one (the old mapping is gone:
    what the server still sends there is lost), as a NAT that forgot a flow
    does. The client never knows."""

    def __init__(self, server_port: int) -> None:
        self._server = ("127.0.0.1", server_port)
        self._client: tuple[str, int] | None = None
        self._front: trio.socket.SocketType | None = None
        self._back: trio.socket.SocketType | None = None
        self._back_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self.rebinds = 0

    @property
    def port(self) -> int:
        assert self._front is not None
        return int(self._front.getsockname()[1])

    @property
    def source_port(self) -> int:
        assert self._back is not None
        return int(self._back.getsockname()[1])

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as front:
            await front.bind(("127.0.0.1", 0))
            self._front = front
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self._new_back()
                task_status.started(self)
                while True:
                    data, self._client = await front.recvfrom(65536)
                    assert self._back is not None
                    await self._back.sendto(data, self._server)

    async def _new_back(self) -> None:
        back = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await back.bind(("127.0.0.1", 0))
        if self._back_scope is not None:
            self._back_scope.cancel()
        self._back = back
        assert self._nursery is not None
        self._back_scope = await self._nursery.start(self._return, back)

    async def _return(self, back, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        with back, trio.CancelScope() as scope:
            task_status.started(scope)
            while True:
                data, _ = await back.recvfrom(65536)
                if self._client is not None:
                    assert self._front is not None
                    await self._front.sendto(data, self._client)

    async def rebind(self) -> None:
        """Move the client's flow to a new source port."""
        old = self.source_port
        await self._new_back()
        assert self.source_port != old
        self.rebinds += 1


@attrs.define
class Outcome:
    pids: list[int] = attrs.Factory(list)
    failure: BaseException | None = None
    source_ports: set[int] = attrs.Factory(set)


async def request(connection: trioudp.quic.QUICConnection, payload: bytes) -> int:
    """Send ``payload`` on a new stream; the pid of the worker that answered."""
    async with await connection.open_stream() as stream:
        await stream.send_all(payload)
        await stream.send_eof()
        reply = b"".join([chunk async for chunk in stream])
    pid, _, echoed = reply.partition(b" ")
    assert echoed == payload
    return int(pid)


async def one_client(
    port: int, number: int, outcome: Outcome, *, rebind: str | None
) -> None:
    """One connection through a NAT of its own: REQUESTS requests; half way,
    ``rebind`` = "nat" moves it to a new source port, "migrate" also has the
    client switch to another connection ID the server issued."""
    try:
        async with trio.open_nursery() as nursery:
            nat = await nursery.start(Nat(port).run)
            async with trioudp.quic.open_quic_connection(
                "127.0.0.1", nat.port, configuration=client_config(idle_timeout=20.0)
            ) as connection:
                for i in range(REQUESTS):
                    if i == REQUESTS // 2 and rebind is not None:
                        await nat.rebind()
                        if rebind == "migrate":
                            connection.engine.change_connection_id()
                    outcome.source_ports.add(nat.source_port)
                    outcome.pids.append(
                        await request(connection, b"c%d r%d" % (number, i))
                    )
            nursery.cancel_scope.cancel()
    except Exception as exc:  # counted: the test reports them all
        # Out of the NAT's nursery's group, when it is alone there.
        while len(getattr(exc, "exceptions", ())) == 1:
            exc = exc.exceptions[0]
        outcome.failure = exc


def rebind_kind(number: int) -> str | None:
    """Half the clients move: a quarter by NAT rebinding only, a quarter also
    to a new connection ID; the other half stay."""
    return {1: "nat", 3: "migrate"}.get(number % 4)


async def run_clients(port: int, count: int, kind=rebind_kind) -> list[Outcome]:
    outcomes = [Outcome() for _ in range(count)]
    async with trio.open_nursery() as nursery:
        for number, outcome in enumerate(outcomes):
            nursery.start_soon(
                functools.partial(
                    one_client, port, number, outcome, rebind=kind(number)
                )
            )
    return outcomes


def quic_pool(sockets: trioudp.WorkerSockets, workers: int = 2):
    return functools.partial(
        trioudp.run_workers,
        APP,
        workers,
        args=[str(pki())],
        grace=2.0,
        sockets=sockets,
        handle_signals=False,
    )


async def test_64_connections_over_2_workers_half_rebinding_all_answered():
    """The issue's test: 64 connections, 10 requests each, half of them
    moved to a new source port mid-way (a quarter also to a new connection
    ID): no failure, and every request of a connection answered by the one
    worker that owns it."""
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            pool = await nursery.start(
                quic_pool(trioudp.quic.worker_sockets("127.0.0.1"))
            )
            outcomes = await run_clients(pool.port, CONNECTIONS)
            stats = await pool.stats()
            pool.shutdown()
    failures = [(n, repr(o.failure)) for n, o in enumerate(outcomes) if o.failure]
    assert failures == []
    assert all(len(o.pids) == REQUESTS for o in outcomes)
    # Each connection stayed with one worker, moved or not...
    assert all(len(set(o.pids)) == 1 for o in outcomes)
    # ... the moved ones did move (two source ports), and both workers served.
    moved = [o for n, o in enumerate(outcomes) if rebind_kind(n)]
    assert len(moved) == CONNECTIONS // 2
    assert all(len(o.source_ports) == 2 for o in moved)
    assert len({o.pids[0] for o in outcomes}) == 2
    assert stats.received >= CONNECTIONS * REQUESTS


async def test_without_the_steering_rebound_connections_reach_the_wrong_worker():
    """The control: the same sockets without the program. The kernel's hash
    of the new source port sends about half of the moved connections to the
    other worker, which resets them (the pool's shared reset key)."""
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            pool = await nursery.start(
                quic_pool(trioudp.WorkerSockets(host="127.0.0.1"))
            )
            outcomes = await run_clients(pool.port, 16, kind=lambda _: "nat")
            pool.shutdown()
    failed = [o.failure for o in outcomes if o.failure is not None]
    # All 16 landing on their own worker by chance: 1 in 65536.
    assert failed
    assert all(isinstance(f, trioudp.quic.ConnectionClosed) for f in failed)
    assert {f.reason for f in failed} == {"stateless reset"}


def alone(exc: BaseException) -> BaseException:
    while len(getattr(exc, "exceptions", ())) == 1:
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    return exc


async def test_a_restarted_worker_takes_its_place_and_resets_what_it_lost():
    """Worker 0 is killed with connections open. (Were each worker to bind
    its own socket, worker 1's would take index 0 in the group and worker
    0's successor would join at index 1: every connection would go to the
    wrong process.) The supervisor holds the sockets: worker 1's connections
    go on with worker 1; worker 0's successor gets worker 0's socket and,
    knowing the pool's reset key, ends its predecessor's connections with a
    stateless reset at their next packet; new connections reach both."""
    fast = trioudp.Backoff(initial=0.01, multiplier=2.0, maximum=0.05, jitter=0.0)
    outcomes = [Outcome() for _ in range(16)]
    asked = trio.Semaphore(0)
    restarted = trio.Event()

    async def client(outcome: Outcome, port: int) -> None:
        try:
            async with trioudp.quic.open_quic_connection(
                "127.0.0.1", port, configuration=client_config(idle_timeout=20.0)
            ) as connection:
                outcome.pids.append(await request(connection, b"before"))
                asked.release()
                await restarted.wait()
                outcome.pids.append(await request(connection, b"after" * 20))
        except Exception as exc:
            outcome.failure = alone(exc)
            asked.release()

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            pool = await nursery.start(
                functools.partial(
                    quic_pool(trioudp.quic.worker_sockets("127.0.0.1")),
                    restart_backoff=fast,
                )
            )
            victim, survivor = pool.pids
            async with trio.open_nursery() as clients:
                for outcome in outcomes:
                    clients.start_soon(client, outcome, pool.port)
                for _ in outcomes:
                    await asked.acquire()
                os.kill(victim, signal.SIGKILL)
                await pool.wait_restarts(1)
                successor = pool.pids[0]
                restarted.set()
            later = await run_clients(pool.port, 16, kind=lambda _: None)
            pool.shutdown()
    assert successor not in (victim, survivor)
    lost = [o for o in outcomes if o.pids[0] == victim]
    kept = [o for o in outcomes if o.pids[0] == survivor]
    assert lost
    assert kept
    assert [o.failure for o in kept] == [None] * len(kept)
    assert all(o.pids == [survivor, survivor] for o in kept)
    assert all(isinstance(o.failure, trioudp.quic.ConnectionClosed) for o in lost)
    assert {o.failure.reason for o in lost} == {"stateless reset"}
    assert [o.failure for o in later] == [None] * len(later)
    assert {o.pids[0] for o in later} == {successor, survivor}


# ---- a worker's server, in this process ----------------------------------------


def worker_of(index: int, count: int, fds=(), secret: bytes = b"s" * 32):
    """A Worker as run_workers makes one (its settings by hand)."""
    from trioudp._workers._protocol import WorkerSettings

    settings = WorkerSettings(
        target="app:main",
        index=index,
        count=count,
        port=0,
        args=(),
        grace=1.0,
        control_fd=-1,
        report_fd=-1,
        socket_fds=tuple(fds),
        secret=secret.hex(),
    )
    return trioudp.Worker(settings)


async def test_a_worker_server_needs_the_pools_sockets_and_closes_them_if_refused():
    from .quic_support import echo, server_config

    async with trioudp.open_udp_socket("127.0.0.1", 0) as sock:
        with pytest.raises(ValueError, match="worker_sockets"):
            await trioudp.quic.serve_quic_sockets(
                echo, [sock], configuration=server_config(), worker=worker_of(0, 2)
            )
        assert sock.closed


async def test_a_workers_retry_names_the_worker_and_any_worker_checks_its_token():
    """The Retry's source connection ID, which the client's next Initial is
    sent to, routes to the worker that sent it; and the token is sealed
    with the pool's key, so another worker of the pool accepts it too."""
    from aioquic.buffer import Buffer
    from aioquic.quic.packet import QuicPacketType, pull_quic_header

    from trioudp.quic._engine import Engine

    from .quic_support import echo, server_config

    count, index = 4, 3
    async with trioudp.open_udp_socket("127.0.0.1", 0) as sock:
        worker = worker_of(index, count, fds=[os.dup(sock.trio_socket.fileno())])
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(
                    trioudp.quic.serve_quic_sockets,
                    echo,
                    worker.sockets,
                    configuration=server_config(),
                    worker=worker,
                )
            )
            client = Engine(configuration=client_config(), max_streams=8)
            client.connect(("127.0.0.1", server.port), now=0.0)
            async with trioudp.open_udp_socket("127.0.0.1", 0) as peer:
                peer_address = peer.local_address
                for data, _ in client.datagrams_to_send(now=0.0):
                    await peer.send_to(data, ("127.0.0.1", server.port))
                with trio.fail_after(10):
                    retry = (await peer.receive()).data
            header = pull_quic_header(Buffer(data=retry), 8)
            assert header.packet_type == QuicPacketType.RETRY
            assert header.source_cid[0] % count == index
            nursery.cancel_scope.cancel()
    # The pool's worker 0 (another process, in production) opens the token
    # with the same key; another pool's would not.
    from trioudp.quic._pool import pool_routing
    from trioudp.quic._tokens import BadToken, RetryTokens

    async def token_key(secret: bytes) -> bytes:
        async with trioudp.open_udp_socket("127.0.0.1", 0) as other:
            fds = [os.dup(other.trio_socket.fileno())]
            of = worker_of(0, count, fds=fds, secret=secret)
            key = pool_routing(of, 8).token_key
            for sock in of.sockets:
                sock.close()
            return key

    sibling = await token_key(b"s" * 32)
    stranger = await token_key(b"t" * 32)
    token = RetryTokens(sibling).issue(
        peer_address, odcid=b"o" * 8, rscid=b"r" * 8, now=0
    )
    assert (
        RetryTokens(pool_routing(worker, 8).token_key).check(
            token, peer_address, dcid=b"r" * 8, now=1
        )
        == b"o" * 8
    )
    with pytest.raises(BadToken):
        RetryTokens(stranger).check(token, peer_address, dcid=b"r" * 8, now=1)


async def test_a_pool_of_more_workers_than_a_byte_names_fails_before_starting():
    with pytest.raises(ValueError, match="1..256 workers"):
        await trioudp.run_workers(
            APP, MAX_WORKERS + 1, sockets=trioudp.quic.worker_sockets("127.0.0.1")
        )
