"""trioudp._outbox: replies on a real socket, sent at once or batched with
sendmmsg, waiting for room, and their errors counted."""

import errno
import functools
import logging
import math
import socket

import pytest
import trio
import trio.testing

import trioudp
from trioudp import (
    Responder,
    _fastpath,
    _mmsg,
    serve_udp,
)
from trioudp._mmsg import MAX_BATCHED_SIZE

from .helpers import (
    echo,
    echo_answer,
    flood,
    receive_all,
    start,
    wrap_sendmmsg,
)

pytestmark = pytest.mark.skipif(
    not _mmsg.sendmmsg_available(), reason="sendmmsg is Linux-only"
)


async def replies_to(server, payloads, count):
    """The first ``count`` replies to ``payloads``, all queued before the
    server runs (see :func:`flood`)."""
    with flood(server.port, payloads) as client:
        await trio.testing.wait_all_tasks_blocked()
        return receive_all(client, count)


async def test_replies_of_a_batch_arrive_all_and_in_order(nursery, monkeypatch):
    calls = wrap_sendmmsg(monkeypatch)
    # A loaded machine may take over REPLY_DELAY for the batch: not this test's
    # subject (test_slow_handlers_do_not_hold_replies_back_for_long is).
    monkeypatch.setattr(_fastpath, "REPLY_DELAY", 60.0)
    server = await start(nursery, batch_time=math.inf)
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
    server = await start(nursery)
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

    server = await start(nursery, reply_then_wait)
    with flood(server.port, [b"first", b"wait"]) as client:
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
    server = await start(nursery)
    payloads = [b"%d" % i for i in range(6)]
    expected = payloads if code == errno.ECONNREFUSED else [payloads[0], *payloads[2:]]
    assert await replies_to(server, payloads, len(expected)) == expected
    stats = server.stats
    assert stats.send_errors == {counted: 1}
    assert stats.replied == len(expected)
    assert stats.handled == stats.received == 6


async def test_a_partial_send_sends_the_rest(nursery, monkeypatch):
    wrap_sendmmsg(monkeypatch, most=2)
    server = await start(nursery)
    payloads = [b"%d" % i for i in range(9)]
    assert await replies_to(server, payloads, 9) == payloads
    assert server.stats.replied == 9


async def test_a_full_send_buffer_is_waited_for(nursery, monkeypatch):
    wrap_sendmmsg(monkeypatch, errors=[errno.EAGAIN, errno.EAGAIN])
    server = await start(nursery)
    payloads = [b"%d" % i for i in range(5)]
    assert await replies_to(server, payloads, 5) == payloads
    assert server.stats.replied == 5
    assert server.stats.send_errors == {}


async def test_an_error_about_the_socket_is_logged_not_lost(
    nursery, monkeypatch, caplog
):
    wrap_sendmmsg(monkeypatch, errors=[errno.EINVAL])
    server = await start(nursery)
    with caplog.at_level(logging.ERROR, logger="trioudp"):
        assert await replies_to(server, [b"0", b"1", b"2"], 2) == [b"0", b"2"]
    assert server.stats.send_errors == {"EINVAL": 1}
    assert "UDP reply to" in caplog.text
    assert "Invalid argument" in caplog.text


async def test_without_sendmmsg_replies_go_one_by_one(nursery, monkeypatch):
    monkeypatch.setattr(_mmsg, "_sendmmsg", None)
    server = await start(nursery)
    payloads = [b"%d" % i for i in range(10)]
    assert await replies_to(server, payloads, 10) == payloads
    assert server.stats.replied == 10


async def test_closing_the_socket_in_a_batch_sends_what_it_holds(nursery):
    async def echo_then_close_on_last(datagram: trioudp.Datagram) -> None:
        await datagram.reply(datagram.data)
        if datagram.data == b"last":
            server.sockets[0].close()

    server = await start(nursery, echo_then_close_on_last)
    assert await replies_to(server, [b"a", b"b", b"last"], 3) == [b"a", b"b", b"last"]
    assert server.stats.replied == 3


async def test_slow_handlers_do_not_hold_replies_back_for_long(
    nursery, monkeypatch, mock_clock
):
    """Held replies leave once they have waited REPLY_DELAY (checked before
    each datagram), not only when the batch ends."""
    from trioudp._fastpath import REPLY_DELAY

    async def slow_echo(datagram: trioudp.Datagram) -> None:
        mock_clock.jump(REPLY_DELAY * 0.3)  # a handler busy for 0.3 ms
        await datagram.reply(datagram.data)

    calls = wrap_sendmmsg(monkeypatch)
    # One batch for all 20 (batch_time is test_fastpath's subject).
    server = await start(nursery, slow_echo, batch_time=math.inf)
    payloads = [b"%d" % i for i in range(20)]
    assert await replies_to(server, payloads, 20) == payloads
    # 1 at once at 0.3 ms; 3 when the 5th datagram comes at 1.2 ms; then 4
    # each 1.2 ms (the first of them held 0.9 ms); the last 4 at the end.
    assert calls == [3, 4, 4, 4, 4]


@pytest.mark.parametrize(
    ("handler", "error", "counted"),
    [
        (echo, OSError(errno.EHOSTUNREACH, "No route to host"), 1),
        (Responder(echo_answer), OSError(errno.EHOSTUNREACH, "No route"), 1),
        # The Responder's reply, sent by the fast path itself, meets a full
        # send buffer: held, and sent once there is room.
        (Responder(echo_answer), BlockingIOError(errno.EAGAIN, "full"), 0),
    ],
    ids=["async", "responder", "responder, buffer full"],
)
async def test_an_icmp_report_on_a_fast_reply_is_counted_and_the_reply_sent_again(
    nursery, handler, error, counted
):

    server = await nursery.start(
        functools.partial(serve_udp, handler, 0, host="127.0.0.1")
    )
    sock = server.sockets[0]
    real = sock._outbox.fast

    class ReportsOnce:
        reported = False

        def sendto(self, data, peer):
            if not self.reported:
                self.reported = True
                raise error
            return real.sendto(data, peer)

        def __getattr__(self, name):
            return getattr(real, name)

    sock._outbox.fast = ReportsOnce()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(5)
        client.sendto(b"ping", ("127.0.0.1", server.port))
        await trio.testing.wait_all_tasks_blocked()
        assert client.recv(100) == b"ping"
    sock._outbox.fast = real
    stats = server.stats
    assert stats.send_errors == ({"EHOSTUNREACH": 1} if counted else {})
    assert stats.replied == 1
    assert sock.stats.sent == 1
