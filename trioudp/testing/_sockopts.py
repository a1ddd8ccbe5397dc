"""What a Linux UDP socket's options, ancillary data and buffer accounting look
like, as data and pure functions (no Trio, no I/O) for ``_options`` and ``_sock``.

Everything here was measured on Linux 6.x (the CI machine's kernel) with the
same calls on real sockets; ``tests/testing/test_conformance.py`` runs those
calls against both and fails if they drift apart.

Interfaces. Every virtual host has ``lo`` (index :data:`LOOPBACK_IFINDEX`, 1)
and, when it has an address that is not a loopback one, ``eth0`` (index
:data:`ETHERNET_IFINDEX`, 2): the indexes a fresh Linux network namespace
gives its loopback and its first other interface.
"""

from __future__ import annotations

import errno
import socket as stdlib_socket
import struct
from functools import lru_cache
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "ETHERNET_IFINDEX",
    "IP_PKTINFO",
    "LOOPBACK_IFINDEX",
    "SO_TIMESTAMPNS",
    "IntOption",
    "truesize",
]

#: Interface index of every virtual host's loopback interface, ``lo``.
LOOPBACK_IFINDEX: Final = 1
#: Interface index of a virtual host's one network interface, ``eth0``.
ETHERNET_IFINDEX: Final = 2

# Linux values that Python's socket module does not name on every version.
IP_PKTINFO: Final = getattr(stdlib_socket, "IP_PKTINFO", 8)
IP_RECVTTL: Final = getattr(stdlib_socket, "IP_RECVTTL", 12)
IP_MTU_DISCOVER: Final = getattr(stdlib_socket, "IP_MTU_DISCOVER", 10)
IP_MTU: Final = getattr(stdlib_socket, "IP_MTU", 14)
IPV6_MTU_DISCOVER: Final = getattr(stdlib_socket, "IPV6_MTU_DISCOVER", 23)
IPV6_MTU: Final = getattr(stdlib_socket, "IPV6_MTU", 24)
SO_BINDTODEVICE: Final = getattr(stdlib_socket, "SO_BINDTODEVICE", 25)
IP_MULTICAST_ALL: Final = getattr(stdlib_socket, "IP_MULTICAST_ALL", 49)
SO_TIMESTAMP: Final = getattr(stdlib_socket, "SO_TIMESTAMP", 29)
SO_TIMESTAMPNS: Final = getattr(stdlib_socket, "SO_TIMESTAMPNS", 35)
IPV6_PKTINFO: Final = getattr(stdlib_socket, "IPV6_PKTINFO", 50)
IPV6_RECVPKTINFO: Final = getattr(stdlib_socket, "IPV6_RECVPKTINFO", 49)

_S, _IP, _IP6 = (
    stdlib_socket.SOL_SOCKET,
    stdlib_socket.IPPROTO_IP,
    stdlib_socket.IPPROTO_IPV6,
)


class IntOption:
    """An integer socket option: its Linux default and the values it takes.

    ``low``/``high`` bound what ``setsockopt`` accepts (else ``EINVAL``);
    ``reset`` is what -1 means where -1 asks for the default; ``boolean``
    options store 0 or 1; ``char_ok`` options also take a 1-byte value, as
    Linux's IPv4 options do.
    """

    __slots__ = ("boolean", "char_ok", "default", "high", "low", "read_only", "reset")

    def __init__(
        self,
        default: int,
        *,
        low: int = -(2**31),
        high: int = 2**31 - 1,
        reset: int | None = None,
        boolean: bool = False,
        char_ok: bool = False,
        read_only: bool = False,
    ) -> None:
        self.default = default
        self.low = low
        self.high = high
        self.reset = reset
        self.boolean = boolean
        self.char_ok = char_ok
        self.read_only = read_only

    def check(self, value: int) -> int:
        """The value stored for ``setsockopt(value)``; raises OSError like Linux."""
        if self.read_only:
            raise OSError(errno.ENOPROTOOPT, "Protocol not available")
        if self.reset is not None and value == -1:
            return self.reset
        if not self.low <= value <= self.high:
            raise OSError(errno.EINVAL, "Invalid argument")
        return int(bool(value)) if self.boolean else value


def _flag() -> IntOption:
    return IntOption(0, boolean=True)


def _ip_flag() -> IntOption:
    return IntOption(0, boolean=True, char_ok=True)


#: Options that hold one integer, by ``(level, optname)`` (``IPPROTO_IPV6``
#: ones on IPv6 sockets only). SO_RCVBUF/SO_SNDBUF, SO_ERROR and the
#: multicast interface and memberships have their own code.
INT_OPTIONS: Final[dict[tuple[int, int], IntOption]] = {
    (_S, stdlib_socket.SO_REUSEADDR): _flag(),
    (_S, stdlib_socket.SO_BROADCAST): _flag(),
    (_S, stdlib_socket.SO_KEEPALIVE): _flag(),
    (_S, stdlib_socket.SO_DONTROUTE): _flag(),
    (_S, stdlib_socket.SO_OOBINLINE): _flag(),
    (_S, SO_TIMESTAMP): _flag(),
    (_S, SO_TIMESTAMPNS): _flag(),
    (_S, stdlib_socket.SO_PRIORITY): IntOption(0, low=0, high=6),
    (_S, stdlib_socket.SO_RCVLOWAT): IntOption(1, low=0),
    (_S, stdlib_socket.SO_TYPE): IntOption(
        int(stdlib_socket.SOCK_DGRAM), read_only=True
    ),
    (_S, stdlib_socket.SO_ACCEPTCONN): IntOption(0, read_only=True),
    (_IP, stdlib_socket.IP_TTL): IntOption(64, low=1, high=255, reset=64, char_ok=True),
    (_IP, stdlib_socket.IP_TOS): IntOption(0, low=0, high=255, char_ok=True),
    (_IP, IP_PKTINFO): _ip_flag(),
    (_IP, IP_RECVTTL): _ip_flag(),
    (_IP, stdlib_socket.IP_RECVTOS): _ip_flag(),
    (_IP, IP_MTU_DISCOVER): IntOption(1, low=0, high=5, char_ok=True),
    (_IP, IP_MULTICAST_ALL): IntOption(1, boolean=True, char_ok=True),
    (_IP, stdlib_socket.IP_MULTICAST_TTL): IntOption(
        1, low=0, high=255, reset=1, char_ok=True
    ),
    (_IP, stdlib_socket.IP_MULTICAST_LOOP): IntOption(1, boolean=True, char_ok=True),
    (_IP6, stdlib_socket.IPV6_UNICAST_HOPS): IntOption(64, low=0, high=255, reset=64),
    (_IP6, stdlib_socket.IPV6_MULTICAST_HOPS): IntOption(1, low=0, high=255, reset=1),
    (_IP6, stdlib_socket.IPV6_MULTICAST_LOOP): IntOption(1, low=0, high=1),
    (_IP6, IPV6_RECVPKTINFO): _flag(),
    (_IP6, IPV6_MTU_DISCOVER): IntOption(1, low=0, high=5),
    (_IP6, stdlib_socket.IPV6_TCLASS): IntOption(0, low=0, high=255, reset=0),
}
if hasattr(stdlib_socket, "SO_REUSEPORT"):
    INT_OPTIONS[(_S, stdlib_socket.SO_REUSEPORT)] = _flag()


def int_from_buffer(value: bytes, option: IntOption | None, level: int) -> int:
    """The integer a ``setsockopt`` byte value carries, or EINVAL like Linux."""
    if len(value) >= 4:
        return int.from_bytes(value[:4], "little", signed=True)
    if len(value) >= 1 and option is not None and option.char_ok and level == _IP:
        return value[0]
    raise OSError(errno.EINVAL, "Invalid argument")


def int_to_buffer(value: int, buflen: int, level: int) -> bytes:
    """What ``getsockopt(level, name, buflen)`` returns for an integer option."""
    if level == _IP and 0 < buflen < 4 and 0 <= value <= 255:
        return bytes([value])
    return value.to_bytes(4, "little", signed=True)[: max(buflen, 0)]


# ---- multicast requests -------------------------------------------------------


def parse_ip_mreq(value: bytes) -> tuple[str, str, int]:
    """``(group, interface address, ifindex)`` of an ``ip_mreq``/``ip_mreqn``."""
    if len(value) < 8:
        raise OSError(errno.EINVAL, "Invalid argument")
    group = stdlib_socket.inet_ntoa(value[:4])
    interface = stdlib_socket.inet_ntoa(value[4:8])
    ifindex = struct.unpack("@i", value[8:12])[0] if len(value) >= 12 else 0
    return group, interface, ifindex


def parse_ipv6_mreq(value: bytes) -> tuple[str, int]:
    """``(group, ifindex)`` of an ``ipv6_mreq``."""
    if len(value) < 20:
        raise OSError(errno.EINVAL, "Invalid argument")
    group = stdlib_socket.inet_ntop(stdlib_socket.AF_INET6, value[:16])
    return group, struct.unpack("@I", value[16:20])[0]


# ---- ancillary data -----------------------------------------------------------


def in_pktinfo(ifindex: int, spec_dst: str, addr: str) -> bytes:
    """A ``struct in_pktinfo``."""
    return (
        struct.pack("@i", ifindex)
        + stdlib_socket.inet_aton(spec_dst)
        + stdlib_socket.inet_aton(addr)
    )


def in6_pktinfo(addr: str, ifindex: int) -> bytes:
    """A ``struct in6_pktinfo``."""
    return stdlib_socket.inet_pton(stdlib_socket.AF_INET6, addr) + struct.pack(
        "@I", ifindex
    )


def timespec(seconds: float) -> bytes:
    """A ``struct timespec``."""
    whole = int(seconds)
    return struct.pack("@qq", whole, round((seconds - whole) * 1e9))


def timeval(seconds: float) -> bytes:
    """A ``struct timeval``."""
    whole = int(seconds)
    return struct.pack("@qq", whole, round((seconds - whole) * 1e6))


def fit_ancillary(
    items: list[tuple[int, int, bytes]], ancbufsize: int
) -> tuple[list[tuple[int, int, bytes]], bool]:
    """The items that fit ``ancbufsize`` bytes, and whether some did not
    (``MSG_CTRUNC``). Linux would also pass a truncated last item."""
    kept: list[tuple[int, int, bytes]] = []
    room = ancbufsize
    for item in items:
        if stdlib_socket.CMSG_LEN(len(item[2])) > room:
            return kept, True
        kept.append(item)
        room -= stdlib_socket.CMSG_SPACE(len(item[2]))
    return kept, False


def parse_send_ancillary(
    ancdata: list[tuple[int, int, Buffer]], family: int
) -> tuple[str | None, int | None, int | None]:  # _model.Asked
    """What ``sendmsg`` ancillary data asks for: ``(source address, TTL,
    TOS)``, each None where it asks nothing. IPv6 hop limit and traffic
    class items are accepted and have no effect; others are EINVAL, as on
    Linux."""
    source = ttl = tos = None
    for level, kind, buffer in ancdata:
        data = bytes(memoryview(buffer))
        if level == _IP and kind == IP_PKTINFO:
            if len(data) < 12:
                raise OSError(errno.EINVAL, "Invalid argument")
            spec_dst = stdlib_socket.inet_ntoa(data[4:8])
            source = None if spec_dst == "0.0.0.0" else spec_dst
        elif (
            level == _IP6 and kind == IPV6_PKTINFO and family == stdlib_socket.AF_INET6
        ):
            if len(data) < 20:
                raise OSError(errno.EINVAL, "Invalid argument")
            addr = stdlib_socket.inet_ntop(stdlib_socket.AF_INET6, data[:16])
            source = None if addr == "::" else addr
        elif level == _IP and kind == stdlib_socket.IP_TTL:
            # Linux: an int, 1..255.
            ttl = int.from_bytes(data, "little", signed=True) if len(data) == 4 else 0
            if not 1 <= ttl <= 255:
                raise OSError(errno.EINVAL, "Invalid argument")
        elif level == _IP and kind == stdlib_socket.IP_TOS:
            # Linux: one byte or an int, 0..255.
            if len(data) not in (1, 4):
                raise OSError(errno.EINVAL, "Invalid argument")
            tos = int.from_bytes(data, "little", signed=True)
            if not 0 <= tos <= 255:
                raise OSError(errno.EINVAL, "Invalid argument")
        elif (level, kind) not in (
            (_IP6, getattr(stdlib_socket, "IPV6_HOPLIMIT", 52)),
            (_IP6, stdlib_socket.IPV6_TCLASS),
        ):
            raise OSError(errno.EINVAL, "Invalid argument")
    return source, ttl, tos


# ---- receive buffer accounting --------------------------------------------------

# Linux charges each queued datagram its skb's "truesize", not its length: the
# buffer is allocated in kmalloc size classes, plus the sk_buff itself. Measured
# with /proc/net/udp on loopback (Linux 6.x): for payload + _HEADROOM[family]
# up to 16 KiB the charge is the size class + 256, above it payload + 832.
_HEADROOM: Final[dict[int, int]] = {
    stdlib_socket.AF_INET: 379,
    stdlib_socket.AF_INET6: 392,
}
_SIZE_CLASSES: Final = (576, 1024, 2048, 4096, 8192, 16384)


@lru_cache(maxsize=4096)  # twice a datagram: on arrival and when it is read
def truesize(payload: int, family: int) -> int:
    """What a datagram of ``payload`` bytes costs a Linux receive queue.

    Example:
        >>> truesize(0, stdlib_socket.AF_INET), truesize(1000, stdlib_socket.AF_INET)
        (832, 2304)
    """
    need = payload + _HEADROOM[family]
    if need >= 16384:
        return payload + 832
    for size in _SIZE_CLASSES:
        if need <= size:
            return size + 256
    raise AssertionError  # pragma: no cover - need < 16384 fits a class
