import attrs
import pytest

from trioudp import Datagram


def make(**changes):
    fields = {
        "data": b"hi",
        "peer": ("127.0.0.1", 1),
        "local": ("127.0.0.1", 2),
        "received_at": 0.0,
    }
    return Datagram(**{**fields, **changes})


def test_is_a_frozen_value():
    datagram = make()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        datagram.data = b"changed"
    assert datagram == make()
    assert hash(datagram) == hash(make())
    assert "origin" not in repr(datagram)


def test_fields_are_keyword_only():
    with pytest.raises(TypeError):
        Datagram(b"hi", ("127.0.0.1", 1), ("127.0.0.1", 2), 0.0)


async def test_reply_without_a_socket_explains():
    with pytest.raises(RuntimeError, match="nowhere to reply from"):
        await make().reply(b"x")


async def test_reply_goes_back_to_the_peer(virtual_network):
    import trioudp

    async with (
        trioudp.open_udp_socket("127.0.0.1", 0) as server,
        trioudp.open_udp_socket("127.0.0.1", 0) as client,
    ):
        await client.send_to(b"ping", server.local_address)
        request = await server.receive()
        assert request.peer == client.local_address
        assert request.local == server.local_address
        await request.reply(b"pong")
        answer = await client.receive()
        assert (answer.data, answer.peer) == (b"pong", server.local_address)
        assert server.stats.replied == 1


def test_repr_shows_a_capped_payload_and_its_length():
    text = repr(make(data=b"A" * 65_507))
    assert len(text) < 250
    assert "b'" + "A" * 64 + "'...(65507 bytes)" in text
    assert "data=b'\\x1b[2J'" in repr(make(data=b"\x1b[2J"))
