"""Batched replies: SendBatch (sendmmsg) and the server's use of it, on
loopback sockets."""

import ctypes
import errno
import functools
import logging
import socket

import pytest
import trio
import trio.testing

import trioudp
from trioudp import _fastpath, _mmsg
from trioudp._mmsg import MAX_BATCHED_SIZE, MAX_MESSAGES, SendBatch, encode_sockaddr

from .conftest import requires_ipv6

pytestmark = pytest.mark.skipif(
    not _mmsg.sendmmsg_available(), reason="sendmmsg is Linux-only"
)


def receive_all(sock: socket.socket, count: int) -> list[bytes]:
    sock.settimeout(5)
    return [sock.recv(70_000) for _ in range(count)]


@pytest.fixture
def pair():
    """A non-blocking sender and a receiver on 127.0.0.1."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
    ):
        sender.bind(("127.0.0.1", 0))
        sender.setblocking(False)
        receiver.bind(("127.0.0.1", 0))
        yield sender, receiver


def wrap_sendmmsg(monkeypatch, errors=(), most=None):
    """Replace the C sendmmsg with a wrapper that records each call's message
    count and fails the first calls with ``errors`` (errno values) before
    passing the rest on, sending at most ``most`` messages per call if given.
    Returns the list of recorded counts."""
    real = _mmsg._sendmmsg
    calls = []
    failures = iter(errors)

    def wrapper(fd, headers, count, flags):
        calls.append(count)
        code = next(failures, None)
        if code is not None:
            ctypes.set_errno(code)
            return -1
        return real(fd, headers, count if most is None else min(count, most), flags)

    monkeypatch.setattr(_mmsg, "_sendmmsg", wrapper)
    return calls


def test_sockaddr_encoding_matches_the_c_layout():
    v4 = encode_sockaddr(socket.AF_INET, ("10.1.2.3", 0x1234))
    assert len(v4) == 16
    assert int.from_bytes(v4[:2], "little") == socket.AF_INET
    assert v4[2:8] == bytes([0x12, 0x34, 10, 1, 2, 3])
    v6 = encode_sockaddr(socket.AF_INET6, ("::1", 53, 7, 2))
    assert len(v6) == 28
    assert v6[2:4] == (53).to_bytes(2, "big")
    assert v6[4:8] == (7).to_bytes(4, "big")
    assert v6[8:24] == socket.inet_pton(socket.AF_INET6, "::1")
    assert int.from_bytes(v6[24:], "little") == 2


@pytest.mark.parametrize(
    ("family", "address"),
    [
        (socket.AF_INET, ("localhost", 53)),
        (socket.AF_INET, ("::1", 53)),
        (socket.AF_INET6, ("fe80::1%eth0", 53, 0, 0)),
        (socket.AF_INET, ("127.0.0.1", 70_000)),
    ],
)
def test_addresses_it_cannot_encode_are_value_errors(family, address):
    with pytest.raises(ValueError, match="numeric socket address"):
        encode_sockaddr(family, address)


def test_a_batch_sends_every_datagram_in_order_with_one_call(pair, monkeypatch):
    sender, receiver = pair
    calls = wrap_sendmmsg(monkeypatch)
    batch = SendBatch(socket.AF_INET)
    payloads = [b"%d" % i * (i + 1) for i in range(MAX_MESSAGES)]
    for payload in payloads:
        assert batch.add(payload, receiver.getsockname())
    assert not batch.add(b"one too many", receiver.getsockname())
    assert batch.send(sender.fileno()) == MAX_MESSAGES
    assert calls == [MAX_MESSAGES]
    assert len(batch) == 0
    assert receive_all(receiver, MAX_MESSAGES) == payloads


def test_a_batch_copies_the_data_so_buffers_can_be_reused(pair):
    sender, receiver = pair
    batch = SendBatch(socket.AF_INET)
    buffer = bytearray(b"first")
    batch.add(buffer, receiver.getsockname())
    buffer[:] = b"second"
    batch.add(buffer, receiver.getsockname())
    batch.send(sender.fileno())
    assert receive_all(receiver, 2) == [b"first", b"second"]


@requires_ipv6
def test_a_batch_sends_over_ipv6():
    with (
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sender,
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as receiver,
    ):
        sender.bind(("::1", 0))
        receiver.bind(("::1", 0))
        batch = SendBatch(socket.AF_INET6)
        for payload in (b"a", b"b"):
            batch.add(payload, receiver.getsockname())
        assert batch.send(sender.fileno()) == 2
        assert receive_all(receiver, 2) == [b"a", b"b"]


def test_a_refused_first_datagram_is_an_oserror_naming_its_index(pair, monkeypatch):
    sender, receiver = pair
    batch = SendBatch(socket.AF_INET)
    batch.add(b"x", receiver.getsockname())
    batch.add(b"y", receiver.getsockname())
    wrap_sendmmsg(monkeypatch, errors=[errno.EAGAIN])
    with pytest.raises(BlockingIOError):
        batch.send(sender.fileno())
    assert batch.next_index == 0
    assert len(batch) == 2


# ---- the server's batches ------------------------------------------------


async def echo(datagram: trioudp.Datagram) -> None:
    await datagram.reply(datagram.data)


async def serve(nursery, handler=echo, **settings):
    return await nursery.start(
        functools.partial(trioudp.serve_udp, handler, 0, host="127.0.0.1", **settings)
    )


def flood(server, payloads):
    """Queue datagrams in the server's kernel buffer without letting it run,
    so that it takes them in one batch; returns the client socket."""
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    for payload in payloads:
        client.sendto(payload, ("127.0.0.1", server.port))
    return client


async def replies_to(server, payloads, count):
    """The first ``count`` replies to ``payloads``, all queued before the
    server runs (see :func:`flood`)."""
    with flood(server, payloads) as client:
        await trio.testing.wait_all_tasks_blocked()
        return receive_all(client, count)


async def test_replies_of_a_batch_arrive_all_and_in_order(nursery, monkeypatch):
    calls = wrap_sendmmsg(monkeypatch)
    # A loaded machine may take over REPLY_DELAY for the batch: not this test's
    # subject (test_slow_handlers_do_not_hold_replies_back_for_long is).
    monkeypatch.setattr(_fastpath, "REPLY_DELAY", 60.0)
    server = await serve(nursery)
    # Small ones are batched; big ones go on their own, after those before.
    sizes = [10] * 20 + [MAX_BATCHED_SIZE + 1] + [10] * 20 + [5000] + [10] * 10
    payloads = [(b"%d:" % i).ljust(size, b".") for i, size in enumerate(sizes)]
    assert await replies_to(server, payloads, len(payloads)) == payloads
    stats = server.stats
    assert (stats.received, stats.handled, stats.replied) == (52, 52, 52)
    assert server.sockets[0].stats.sent == 52
    # The first reply goes at once; the next small ones wait for a big one
    # or the batch's end: 19 + 20 + 10 in three calls.
    assert calls == [19, 20, 10]


async def test_a_single_datagram_is_answered_without_batching(nursery, monkeypatch):
    def forbidden(*args):
        raise AssertionError("sendmmsg used for a lone reply")

    monkeypatch.setattr(_mmsg, "_sendmmsg", forbidden)
    server = await serve(nursery)
    async with trioudp.open_udp_client("127.0.0.1", server.port) as client:
        for _ in range(3):
            assert (await client.request(b"ping")).data == b"ping"


async def test_a_handler_that_suspends_after_replying_does_not_hold_its_reply(
    nursery,
):
    answered = trio.Event()

    async def reply_then_wait(datagram: trioudp.Datagram) -> None:
        await datagram.reply(datagram.data)
        if datagram.data == b"wait":
            await answered.wait()

    server = await serve(nursery, reply_then_wait)
    with flood(server, [b"first", b"wait"]) as client:
        await trio.testing.wait_all_tasks_blocked()
        # Both replies are out while the second handler is still waiting.
        assert receive_all(client, 2) == [b"first", b"wait"]
        assert server.stats.in_flight == 1
        answered.set()
        await trio.testing.wait_all_tasks_blocked()
    assert server.stats.handled == 2


@pytest.mark.parametrize(
    ("code", "counted"),
    [(errno.ECONNREFUSED, "ECONNREFUSED"), (errno.ENOBUFS, "ENOBUFS")],
)
async def test_per_datagram_errors_in_a_batch_are_counted(
    nursery, monkeypatch, code, counted
):
    """An ICMP report handed to the batch's send stops nothing (the datagram
    is sent again); other per-datagram errors drop just that datagram."""
    wrap_sendmmsg(monkeypatch, errors=[code])
    server = await serve(nursery)
    payloads = [b"%d" % i for i in range(6)]
    expected = payloads if code == errno.ECONNREFUSED else [payloads[0], *payloads[2:]]
    assert await replies_to(server, payloads, len(expected)) == expected
    stats = server.stats
    assert stats.send_errors == {counted: 1}
    assert stats.replied == len(expected)
    assert stats.handled == stats.received == 6


async def test_a_partial_send_sends_the_rest(nursery, monkeypatch):
    wrap_sendmmsg(monkeypatch, most=2)
    server = await serve(nursery)
    payloads = [b"%d" % i for i in range(9)]
    assert await replies_to(server, payloads, 9) == payloads
    assert server.stats.replied == 9


async def test_a_full_send_buffer_is_waited_for(nursery, monkeypatch):
    wrap_sendmmsg(monkeypatch, errors=[errno.EAGAIN, errno.EAGAIN])
    server = await serve(nursery)
    payloads = [b"%d" % i for i in range(5)]
    assert await replies_to(server, payloads, 5) == payloads
    assert server.stats.replied == 5
    assert server.stats.send_errors == {}


async def test_an_error_about_the_socket_is_logged_not_lost(
    nursery, monkeypatch, caplog
):
    wrap_sendmmsg(monkeypatch, errors=[errno.EINVAL])
    server = await serve(nursery)
    with caplog.at_level(logging.ERROR, logger="trioudp"):
        assert await replies_to(server, [b"0", b"1", b"2"], 2) == [b"0", b"2"]
    assert server.stats.send_errors == {"EINVAL": 1}
    assert "UDP reply to" in caplog.text
    assert "Invalid argument" in caplog.text


async def test_without_sendmmsg_replies_go_one_by_one(nursery, monkeypatch):
    monkeypatch.setattr(_mmsg, "_sendmmsg", None)
    server = await serve(nursery)
    payloads = [b"%d" % i for i in range(10)]
    assert await replies_to(server, payloads, 10) == payloads
    assert server.stats.replied == 10


async def test_closing_the_socket_in_a_batch_sends_what_it_holds(nursery):
    async def echo_then_close_on_last(datagram: trioudp.Datagram) -> None:
        await datagram.reply(datagram.data)
        if datagram.data == b"last":
            server.sockets[0].close()

    server = await serve(nursery, echo_then_close_on_last)
    assert await replies_to(server, [b"a", b"b", b"last"], 3) == [b"a", b"b", b"last"]
    assert server.stats.replied == 3


async def test_slow_handlers_do_not_hold_replies_back_for_long(
    nursery, monkeypatch, mock_clock
):
    """Held replies leave once the batch has run for REPLY_DELAY (checked
    every 8 datagrams), not only when the batch ends."""
    from trioudp._fastpath import REPLY_DELAY

    async def slow_echo(datagram: trioudp.Datagram) -> None:
        mock_clock.jump(REPLY_DELAY * 0.3)  # a handler busy for 0.3 ms
        await datagram.reply(datagram.data)

    calls = wrap_sendmmsg(monkeypatch)
    server = await serve(nursery, slow_echo)
    payloads = [b"%d" % i for i in range(20)]
    assert await replies_to(server, payloads, 20) == payloads
    # 1 at once, then 7 and 8 when 8 datagrams took 2.4 ms, the last 4 at the end.
    assert calls == [7, 8, 4]
