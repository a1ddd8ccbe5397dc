"""trioudp._mmsg: SendBatch (sendmmsg) on loopback sockets."""

import errno
import socket

import pytest

from trioudp import (
    _mmsg,
)
from trioudp._mmsg import MAX_MESSAGES, SendBatch, encode_sockaddr

from .conftest import requires_ipv6
from .helpers import (
    receive_all,
    wrap_sendmmsg,
)

pytestmark = pytest.mark.skipif(
    not _mmsg.sendmmsg_available(), reason="sendmmsg is Linux-only"
)


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
