"""Responder handlers: the same server guarantees, without a coroutine."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

import trioudp
from trioudp import Responder

from .helpers import echo_answer as echo
from .helpers import flood, receive_all, start


async def answers_like_an_async_handler(nursery, fast):
    server = await start(nursery, Responder(echo))
    assert server.sockets[0].is_fast is fast
    async with trioudp.open_udp_client("127.0.0.1", server.port) as client:
        for payload in (b"one", b"", b"x" * 5000):
            assert (await client.request(payload)).data == payload
    # A reply is counted once its send returns, maybe after the client woke.
    await trio.testing.wait_all_tasks_blocked()
    stats = server.stats
    assert (stats.received, stats.handled, stats.replied) == (3, 3, 3)


async def test_a_responder_answers_like_an_async_handler(nursery):
    await answers_like_an_async_handler(nursery, fast=True)


async def test_a_responder_answers_on_the_virtual_network(virtual_network, nursery):
    await answers_like_an_async_handler(nursery, fast=False)


async def test_a_batch_of_responder_replies_arrives_in_order(nursery):
    server = await start(nursery, Responder(echo))
    payloads = [b"%d" % i for i in range(50)] + [b"big" * 1000, b"last"]
    with flood(server.port, payloads) as client:
        await trio.testing.wait_all_tasks_blocked()
        assert receive_all(client, len(payloads)) == payloads
    assert server.stats.replied == len(payloads)


async def test_none_means_no_reply_and_errors_are_counted(nursery, caplog):
    def picky(datagram: trioudp.Datagram) -> bytes | None:
        if datagram.data == b"boom":
            raise ValueError("bad request")
        return None if datagram.data == b"quiet" else b"ok"

    server = await start(nursery, Responder(picky))
    with flood(server.port, [b"quiet", b"boom", b"hello"]) as client:
        await trio.testing.wait_all_tasks_blocked()
        assert receive_all(client, 1) == [b"ok"]
    stats = server.stats
    assert (stats.handled, stats.handler_errors, stats.replied) == (2, 1, 1)
    assert stats.accounted == stats.received == 3
    assert "bad request" in caplog.text


async def test_a_responder_returning_a_non_bytes_value_is_a_handler_error(nursery):
    server = await start(nursery, Responder(lambda datagram: "text"))  # type: ignore[arg-type, return-value]
    with flood(server.port, [b"a"]):
        await trio.testing.wait_all_tasks_blocked()
    assert server.stats.handler_errors == 1
    assert server.stats.replied == 0


async def test_the_amplification_guard_and_access_list_apply(nursery):
    server = await start(
        nursery,
        Responder(lambda datagram: b"x" * 100),
        amplification_factor=3,
        access=trioudp.AccessList(deny=["127.0.0.2/32"]),
    )
    with flood(server.port, [b"a" * 40, b"b"]) as client:
        await trio.testing.wait_all_tasks_blocked()
        assert receive_all(client, 1) == [b"x" * 100]
    denied = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with denied:
        denied.bind(("127.0.0.2", 0))
        denied.sendto(b"c", ("127.0.0.1", server.port))
        await trio.testing.wait_all_tasks_blocked()
    stats = server.stats
    assert (stats.replied, stats.dropped_amplification, stats.dropped_denied) == (
        1,
        1,
        1,
    )


def test_async_functions_are_refused_with_a_clear_error():
    async def handler(datagram):
        return b""

    with pytest.raises(TypeError, match="not the async function"):
        Responder(handler)
    with pytest.raises(TypeError, match="function of one Datagram"):
        Responder(b"bytes")  # type: ignore[arg-type]


async def test_a_responder_is_an_async_handler_of_the_same_meaning(
    virtual_network, nursery
):
    responder = Responder(echo)
    async with trioudp.open_udp_socket("127.0.0.1", 0) as sock:
        await sock.send_to(b"hi", sock.local_address)
        datagram = await sock.receive()
        await responder(datagram)
        assert (await sock.receive()).data == b"hi"


async def test_an_answer_too_large_for_a_datagram_is_a_handler_error(nursery, caplog):
    """A peer sends the largest datagram there is and the answer grows past
    it: that one answer fails (logged, counted), as it would for an async
    handler; the server goes on (it died with DatagramTooLarge)."""
    server = await start(nursery, Responder(lambda datagram: b"echo: " + datagram.data))
    with flood(server.port, [b"x" * 65507, b"small"]) as client:
        await trio.testing.wait_all_tasks_blocked()
        assert receive_all(client, 1) == [b"echo: small"]
    stats = server.stats
    assert (stats.handled, stats.handler_errors, stats.replied) == (1, 1, 1)
    assert stats.accounted == stats.received == 2
    assert "DatagramTooLarge" in caplog.text


async def test_an_answer_the_socket_cannot_send_is_a_handler_error(nursery, caplog):
    """A memoryview that is not contiguous passes as an Answer, but no
    socket can send it: a handler error, logged and counted, as for an async
    handler (it stopped the server with BufferError)."""

    def answer(datagram: trioudp.Datagram) -> memoryview | bytes:
        return memoryview(b"abcdef")[::2] if datagram.data == b"odd" else b"ok"

    server = await start(nursery, Responder(answer))
    with flood(server.port, [b"odd", b"even"]) as client:
        await trio.testing.wait_all_tasks_blocked()
        assert receive_all(client, 1) == [b"ok"]
    stats = server.stats
    assert (stats.handled, stats.handler_errors, stats.replied) == (1, 1, 1)
    assert "BufferError" in caplog.text


async def test_bytearray_and_memoryview_answers_are_sent(nursery):
    answers = iter([bytearray(b"array"), memoryview(b"view"), b"bytes"])
    server = await start(nursery, Responder(lambda datagram: next(answers)))
    with flood(server.port, [b"1", b"2", b"3"]) as client:
        await trio.testing.wait_all_tasks_blocked()
        assert receive_all(client, 3) == [b"array", b"view", b"bytes"]
    assert server.stats.replied == 3
