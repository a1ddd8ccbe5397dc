"""trioudp._matching: replies reach the request with their id; what the peer
sends never breaks the routing, and bad ids in requests are the caller's
error."""

import functools
import json

import pytest
import trio
import trio.testing

import trioudp
from trioudp import open_udp_client

from .helpers import by_id
from .helpers import start as start_echo


async def test_match_without_id_is_a_value_error(virtual_network):
    async with open_udp_client(
        "127.0.0.1", 9, match=lambda data: data[10:11] or None
    ) as client:
        with pytest.raises(ValueError, match="found no id"):
            await client.request(b"short")


def json_id(data: bytes):
    return json.loads(data)["id"]


async def test_replies_that_break_match_are_discarded_and_counted():
    """Replies for which match raises or returns an unhashable id (a JSON
    list) are discarded; the real reply still arrives."""
    async with trioudp.open_udp_socket("127.0.0.1", 0) as server:
        port = server.local_address[1]
        async with open_udp_client("127.0.0.1", port, match=json_id) as client:

            async def serve():
                request = await server.receive()
                for hostile in (b'{"id": [1]}', b"not json", b'{"id": {"a": 1}}'):
                    await server.send_to(hostile, request.peer)
                await server.send_to(b'{"id": 1, "ok": true}', request.peer)

            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(serve)
                    reply = await client.request(b'{"id": 1}')
            assert json.loads(reply.data) == {"id": 1, "ok": True}
            assert client.stats.discarded == 3
            assert client.stats.received == 4


async def test_request_with_an_unhashable_id_is_a_type_error(virtual_network):
    async with open_udp_client("127.0.0.1", 9, match=json_id) as client:
        with pytest.raises(TypeError, match=r"returned \[1\].*not hashable"):
            await client.request(b'{"id": [1]}')
        with pytest.raises(ValueError, match="found no id"):
            await client.request(b"not json")


async def test_same_id_twice_is_busy(virtual_network, autojump_clock):
    virtual_network.configure(loss=1.0)
    async with (
        open_udp_client("127.0.0.1", 9, match=by_id) as client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(functools.partial(client.request, b"SAME-1"))
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError, match="already waiting"):
            await client.request(b"SAME-2")
        nursery.cancel_scope.cancel()


async def test_duplicate_replies_never_reach_another_request(virtual_network, nursery):
    virtual_network.configure(duplicate=1.0)
    server = await start_echo(nursery)
    async with open_udp_client("127.0.0.1", server.port, match=by_id) as client:
        for i in range(20):
            payload = i.to_bytes(4, "big")
            assert (await client.request(payload)).data == payload
        await client.request(b"last")
        assert client.stats.discarded >= 20
