"""Send many UDP datagrams with one ``sendmmsg(2)`` call (Linux, via ctypes).

A busy echo-style server answers dozens of datagrams per scheduling round;
one system call for all their replies instead of one each saves the
per-call cost and, more importantly, wakes the peer once per round instead of
once per reply. :class:`SendBatch` keeps copies of the datagrams (so callers
may reuse their buffers at once) in preallocated C arrays and sends them in
order. Elsewhere, or if the C library lacks ``sendmmsg``,
:func:`sendmmsg_available` is False and callers send one datagram at a time.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._address import SocketAddress

__all__ = ["SendBatch", "sendmmsg_available"]

#: Most datagrams one batch holds (the kernel's UIO_MAXIOV is 1024).
MAX_MESSAGES = 64
#: Largest datagram worth batching. Measured on loopback: batching small
#: replies makes an echo server ~15% faster (the peer wakes once per batch,
#: not once per reply), but holding back 8000-byte ones makes it ~15% slower
#: (the peer waits for work it could already be doing).
MAX_BATCHED_SIZE = 2048
_BUFFER_BYTES = MAX_MESSAGES * MAX_BATCHED_SIZE

# struct mmsghdr on 64-bit Linux: struct msghdr (56 bytes: name, namelen,
# iov, iovlen, control, controllen, flags) + unsigned msg_len, padded to 64.
_HEADER_BYTES = 64
_SOCKADDR_BYTES = 28  # sockaddr_in6; a sockaddr_in (16) fits in its slot
_NAME_CACHE_SIZE = 4096


def _load_sendmmsg() -> Callable[[int, int, int, int], int] | None:
    if sys.platform != "linux" or struct.calcsize("P") != 8:
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sendmmsg
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_sendmmsg = _load_sendmmsg()


def sendmmsg_available() -> bool:
    """Whether :class:`SendBatch` can be used on this system.

    Example:
        >>> sendmmsg_available() in (True, False)
        True
    """
    return _sendmmsg is not None


def encode_sockaddr(family: int, address: SocketAddress) -> bytes:
    """``address`` as the C ``sockaddr`` the kernel expects.

    Raises ValueError for addresses it cannot encode numerically (names,
    scoped IPv6 literals such as ``fe80::1%eth0``).

    Example:
        >>> encode_sockaddr(socket.AF_INET, ("127.0.0.1", 53)).hex()
        '020000357f0000010000000000000000'
    """
    host, port = address[0], address[1]
    try:
        if family == socket.AF_INET:
            return struct.pack("=H", family) + struct.pack(
                "!H4s8x", port, socket.inet_pton(family, host)
            )
        flowinfo = address[2] if len(address) > 2 else 0
        scope_id = address[3] if len(address) > 3 else 0
        return (
            struct.pack("=H", family)
            + struct.pack("!HI16s", port, flowinfo, socket.inet_pton(family, host))
            + struct.pack("=I", scope_id)
        )
    except (OSError, struct.error, TypeError) as exc:
        msg = f"cannot encode {address!r} as a numeric socket address"
        raise ValueError(msg) from exc


class SendBatch:
    """Datagrams waiting to leave through one socket in one ``sendmmsg`` call.

    Example::

        batch = SendBatch(socket.AF_INET)
        batch.add(b"one", ("127.0.0.1", 9999))
        batch.add(b"two", ("127.0.0.1", 9999))
        sent = batch.send(sock.fileno())  # 2, or fewer: see send()
    """

    __slots__ = (
        "_family",
        "_first",
        "_header_ints",
        "_headers",
        "_headers_address",
        "_iovec_words",
        "_iovecs",
        "_names",
        "_names_cache",
        "_names_view",
        "_payload",
        "_payload_view",
        "_slot_names",
        "peers",
    )

    def __init__(self, family: int) -> None:
        self._family = family
        self._payload = ctypes.create_string_buffer(_BUFFER_BYTES)
        self._names = ctypes.create_string_buffer(MAX_MESSAGES * _SOCKADDR_BYTES)
        self._iovecs = ctypes.create_string_buffer(MAX_MESSAGES * 16)
        self._headers = ctypes.create_string_buffer(MAX_MESSAGES * _HEADER_BYTES)
        self._headers_address = ctypes.addressof(self._headers)
        self._payload_view = memoryview(self._payload).cast("B")
        self._names_view = memoryview(self._names).cast("B")
        self._header_ints = memoryview(self._headers).cast("B").cast("I")
        # Each message has its own fixed slots; only lengths and names change.
        header_words = memoryview(self._headers).cast("B").cast("Q")
        self._iovec_words = memoryview(self._iovecs).cast("B").cast("Q")
        payload_address = ctypes.addressof(self._payload)
        names_address = ctypes.addressof(self._names)
        iovecs_address = ctypes.addressof(self._iovecs)
        for i in range(MAX_MESSAGES):
            self._iovec_words[2 * i] = payload_address + i * MAX_BATCHED_SIZE
            header_words[8 * i] = names_address + i * _SOCKADDR_BYTES  # msg_name
            header_words[8 * i + 2] = iovecs_address + 16 * i  # msg_iov
            header_words[8 * i + 3] = 1  # msg_iovlen
        #: Destinations of the datagrams held, in order.
        self.peers: list[SocketAddress] = []
        self._slot_names: list[bytes] = [b""] * MAX_MESSAGES
        self._names_cache: dict[SocketAddress, bytes] = {}
        self._first = 0

    def __len__(self) -> int:
        return len(self.peers) - self._first

    def add(self, data: bytes | bytearray, peer: SocketAddress) -> bool:
        """Copy one datagram of at most ``MAX_BATCHED_SIZE`` bytes in; ``data``
        may be reused at once. Returns False, adding nothing, if the batch
        is full (send it first).

        Raises ValueError if ``peer`` cannot be encoded (nothing is added).
        """
        peers = self.peers
        index = len(peers)
        if index >= MAX_MESSAGES:
            return False
        name = self._names_cache.get(peer)
        if name is None:
            name = self._encode(peer)
        if self._slot_names[index] is not name:
            self._set_name(index, name)
        size = len(data)
        start = index * MAX_BATCHED_SIZE
        self._payload_view[start : start + size] = data
        self._iovec_words[2 * index + 1] = size
        peers.append(peer)
        return True

    def _encode(self, peer: SocketAddress) -> bytes:
        cache = self._names_cache
        if len(cache) >= _NAME_CACHE_SIZE:
            cache.clear()
        name = cache[peer] = encode_sockaddr(self._family, peer)
        return name

    def _set_name(self, index: int, name: bytes) -> None:
        self._slot_names[index] = name
        slot = index * _SOCKADDR_BYTES
        self._names_view[slot : slot + len(name)] = name
        self._header_ints[16 * index + 2] = len(name)  # msg_namelen

    def payload(self, index: int) -> memoryview:
        """The bytes of datagram ``index`` (for sending it on its own)."""
        start = index * MAX_BATCHED_SIZE
        return self._payload_view[start : start + self._iovec_words[2 * index + 1]]

    @property
    def next_index(self) -> int:
        """The index of the first datagram not sent yet."""
        return self._first

    def advance(self) -> None:
        """Move past the next unsent datagram: it was sent on its own, or
        given up on."""
        self._first += 1
        self._reset_if_done()

    def send(self, fd: int) -> int:
        """Send the unsent datagrams in one call, without blocking.

        Returns how many left (all of them, or the ones before a datagram
        the kernel refused); raises OSError if the first of them was refused
        (``BlockingIOError`` when the send buffer is full): then
        :attr:`next_index` is the datagram concerned.
        """
        assert _sendmmsg is not None
        first = self._first
        count = len(self.peers) - first
        if not count:
            return 0
        sent = _sendmmsg(
            fd,
            self._headers_address + first * _HEADER_BYTES,
            count,
            socket.MSG_DONTWAIT,
        )
        if sent < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        self._first = first + sent
        self._reset_if_done()
        return sent

    def clear(self) -> None:
        """Forget every datagram held."""
        self.peers.clear()
        self._first = 0

    def _reset_if_done(self) -> None:
        if self._first >= len(self.peers):
            self.clear()
