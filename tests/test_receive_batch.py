"""trioudp._mmsg.ReceiveBatch: many datagrams per recvmmsg call, on a
server's fast path where the kernel screens (a socket bound to loopback)."""

import socket

import pytest
import trio
import trio.testing

import trioudp
from trioudp import Responder
from trioudp._mmsg import (
    ReceiveBatch,
    decode_sockaddr,
    encode_sockaddr,
    receive_slots,
    recvmmsg_available,
)

from .helpers import echo_answer, start

pytestmark = pytest.mark.skipif(not recvmmsg_available(), reason="no recvmmsg")


def test_it_receives_what_recvfrom_would():
    """Payloads, an oversize datagram cut to its slot (so its length tells
    it apart), and the peer in recvfrom's form, read once per source."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer,
    ):
        server.bind(("127.0.0.1", 0))
        server.setblocking(False)
        peer.bind(("127.0.0.1", 0))
        payloads = [b"", b"one", b"x" * 40, b"y" * 33]
        for payload in payloads:
            peer.sendto(payload, server.getsockname())
        batch = ReceiveBatch(socket.AF_INET, 33, count=3)
        assert batch.receive(server.fileno(), 64) == 3  # its slots at most
        taken = [batch.take() for _ in range(batch.pending)]
        assert taken == [
            (b"", peer.getsockname()),
            (b"one", peer.getsockname()),
            (b"x" * 33, peer.getsockname()),
        ]
        assert taken[0][1] is taken[2][1]  # decoded once
        assert batch.receive(server.fileno(), 1) == 1
        assert batch.drain() == [33]
        assert batch.pending == 0
        with pytest.raises(BlockingIOError):
            batch.receive(server.fileno(), 64)


def test_ipv6_peers_come_as_recvfrom_reports_them():
    with (
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as server,
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as peer,
    ):
        try:
            server.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
        server.setblocking(False)
        peer.sendto(b"six", server.getsockname())
        peer.sendto(b"six", server.getsockname())
        batch = ReceiveBatch(socket.AF_INET6, 100)
        assert batch.receive(server.fileno(), 1) == 1
        assert batch.take() == server.recvfrom(100)


def test_addresses_decode_as_they_encode():
    for family, address in [
        (socket.AF_INET, ("192.0.2.1", 53)),
        (socket.AF_INET6, ("2001:db8::1", 443, 0, 0)),
        (socket.AF_INET6, ("::ffff:192.0.2.1", 9, 0, 0)),
    ]:
        assert decode_sockaddr(encode_sockaddr(family, address)) == address
    scoped = decode_sockaddr(encode_sockaddr(socket.AF_INET6, ("fe80::1", 5, 0, 1)))
    assert scoped == (f"fe80::1%{socket.if_indextoname(1)}", 5, 0, 1)


def test_slots_are_bounded_in_bytes():
    assert receive_slots(65508) * 65508 <= 1 << 20
    assert receive_slots(2049) == 64
    assert receive_slots(10**7) == 1


async def test_a_loopback_server_takes_datagrams_in_batches(nursery):
    server = await start(nursery, Responder(echo_answer))
    (sock,) = server.sockets
    assert sock._inbox.batch is not None


async def test_what_a_time_bounded_batch_leaves_is_handled_next(
    nursery, autojump_clock
):
    """A batch ends after batch_time with datagrams received and not handed
    on: the next one takes them first, although the kernel holds nothing
    more (its socket is not readable)."""
    held = []
    all_handled = trio.Event()

    def slow(datagram):
        held.append(sock._inbox.batch.pending)
        autojump_clock.jump(0.005)
        if len(held) == 20:
            all_handled.set()
        return datagram.data

    server = await start(nursery, Responder(slow), batch_time=0.002)
    (sock,) = server.sockets
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        for i in range(20):
            peer.sendto(b"%d" % i, ("127.0.0.1", server.port))
        await all_handled.wait()
        await trio.testing.wait_all_tasks_blocked()
        peer.setblocking(False)
        replies = [peer.recv(100) for _ in range(20)]
    assert replies == [b"%d" % i for i in range(20)]
    assert max(held) > 0  # batches did end with datagrams left over


async def test_datagrams_left_in_the_batch_at_shutdown_are_counted(nursery):
    """The server stops after one datagram with the rest received into the
    batch: they count as received and dropped at shutdown, none vanishes."""

    held = []

    def stop(datagram):
        held.append(sock._inbox.batch.pending)
        server.begin_shutdown()
        return datagram.data

    server = await start(nursery, Responder(stop))
    (sock,) = server.sockets
    assert sock._inbox.batch is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        for i in range(10):
            peer.sendto(b"%d" % i, ("127.0.0.1", server.port))
        await trio.testing.wait_all_tasks_blocked()
        await server.shutdown()
    assert held == [9]  # the rest was in the batch
    stats = server.stats
    assert stats.received == 10
    assert stats.handled == 1
    assert stats.dropped_shutdown == 9


async def test_a_socket_the_kernel_does_not_screen_has_no_batch(nursery):
    """Bound to a wildcard address, the screen reads each datagram's
    control messages: datagrams come one recvmsg at a time."""
    server = await start(nursery, Responder(echo_answer), host="0.0.0.0")
    (sock,) = server.sockets
    assert sock._inbox.batch is None
    async with trioudp.open_udp_socket("127.0.0.1", 0) as client:
        await client.send_to(b"hi", ("127.0.0.1", server.port))
        assert (await client.receive()).data == b"hi"
