"""VirtualSocket: a trio socket on a VirtualNetwork that behaves like Linux UDP."""

from __future__ import annotations

import errno
import socket as stdlib_socket
from collections import deque
from typing import TYPE_CHECKING, NoReturn, final, overload

import trio

from ._network import (
    TIMESTAMP_EPOCH,
    Endpoint,
    Host,
    Packet,
    canonical_ip,
    is_loopback,
    is_multicast,
    oserror,
    unmapped,
)
from ._sockopts import (
    ETHERNET_IFINDEX,
    INT_OPTIONS,
    IP_PKTINFO,
    IP_RECVTTL,
    IPV6_PKTINFO,
    IPV6_RECVPKTINFO,
    LOOPBACK_IFINDEX,
    SO_TIMESTAMP,
    SO_TIMESTAMPNS,
    fit_ancillary,
    in6_pktinfo,
    in_pktinfo,
    int_from_buffer,
    int_to_buffer,
    parse_ip_mreq,
    parse_ipv6_mreq,
    parse_send_ancillary,
    timespec,
    timeval,
    truesize,
)

if TYPE_CHECKING:
    import builtins
    from collections.abc import Iterable
    from types import TracebackType

    from typing_extensions import Buffer, Self

    from ._network import VirtualNetwork

__all__ = ["VIRTUAL_FILENO", "VirtualSocket"]

Sockaddr = tuple[str, int] | tuple[str, int, int, int]

_LINUX_DEFAULT_RCVBUF = 212_992  # net.core.rmem_default
_LINUX_MIN_RCVBUF = 2_304
_LINUX_MIN_SNDBUF = 4_608

#: What ``fileno()`` of an open virtual socket returns: above the largest
#: descriptor Linux can hand out (``fs.nr_open`` tops out at 2**31 - 64), so a
#: check like ``fileno() < 0`` sees an open socket and any use as a real
#: descriptor fails with EBADF.
VIRTUAL_FILENO = 2**31 - 1
_MAX_PAYLOAD: dict[int, int] = {
    stdlib_socket.AF_INET: 65_507,
    stdlib_socket.AF_INET6: 65_527,
}
# Plain ints: IntFlag arithmetic costs microseconds per datagram.
_IGNORED_SEND_FLAGS = int(getattr(stdlib_socket, "MSG_DONTWAIT", 0)) | int(
    getattr(stdlib_socket, "MSG_NOSIGNAL", 0)
)
_MSG_PEEK = int(stdlib_socket.MSG_PEEK)
_MSG_TRUNC = int(stdlib_socket.MSG_TRUNC)
_MSG_CTRUNC = int(stdlib_socket.MSG_CTRUNC)
# Trio's receive waits on EAGAIN even with MSG_DONTWAIT, so it means nothing.
_SUPPORTED_RECV_FLAGS = _MSG_PEEK | _MSG_TRUNC | _IGNORED_SEND_FLAGS
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})

_SOL, _IP, _IP6 = (
    stdlib_socket.SOL_SOCKET,
    stdlib_socket.IPPROTO_IP,
    stdlib_socket.IPPROTO_IPV6,
)
_REUSEADDR = (_SOL, stdlib_socket.SO_REUSEADDR)
_REUSEPORT = (_SOL, getattr(stdlib_socket, "SO_REUSEPORT", 15))
_RCVBUF = (_SOL, stdlib_socket.SO_RCVBUF)
_SNDBUF = (_SOL, stdlib_socket.SO_SNDBUF)
_V6ONLY = (_IP6, stdlib_socket.IPV6_V6ONLY)
_MULTICAST_IF = (_IP, stdlib_socket.IP_MULTICAST_IF)
_MULTICAST_IF6 = (_IP6, stdlib_socket.IPV6_MULTICAST_IF)
_MEMBERSHIP = {
    (_IP, stdlib_socket.IP_ADD_MEMBERSHIP): True,
    (_IP, stdlib_socket.IP_DROP_MEMBERSHIP): False,
    (_IP6, stdlib_socket.IPV6_JOIN_GROUP): True,
    (_IP6, stdlib_socket.IPV6_LEAVE_GROUP): False,
}
_READ_ONLY = {
    (_SOL, stdlib_socket.SO_ERROR),
    (_SOL, getattr(stdlib_socket, "SO_PROTOCOL", 38)),
    (_SOL, getattr(stdlib_socket, "SO_DOMAIN", 39)),
}
# Options that make a received datagram carry ancillary data.
_ANCILLARY = (
    (_SOL, SO_TIMESTAMPNS),
    (_SOL, SO_TIMESTAMP),
    (_IP, IP_PKTINFO),
    (_IP, IP_RECVTTL),
    (_IP, stdlib_socket.IP_RECVTOS),
    (_IP6, IPV6_RECVPKTINFO),
)


@final
class _Waiters:
    """The receivers waiting on one socket: ParkingLot's ``park`` and
    ``unpark_all`` with less bookkeeping per wake-up (every datagram wakes)."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: dict[trio.lowlevel.Task, None] = {}

    async def park(self) -> None:
        task = trio.lowlevel.current_task()
        self._tasks[task] = None

        def abort(_: object) -> trio.lowlevel.Abort:
            # Only reached while still parked: unpark_all reschedules first.
            del self._tasks[task]
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def unpark_all(self) -> None:
        if self._tasks:
            tasks, self._tasks = self._tasks, {}
            for task in tasks:
                trio.lowlevel.reschedule(task)


def _joined(buffers: Iterable[Buffer]) -> bytes:
    """The datagram's bytes; a lone ``bytes`` buffer is used as is, uncopied."""
    if type(buffers) is list and len(buffers) == 1 and type(buffers[0]) is bytes:
        return buffers[0]
    return b"".join(bytes(memoryview(buffer)) for buffer in buffers)


def _unsupported(what: str) -> NoReturn:
    msg = f"virtual sockets do not support {what}"
    raise NotImplementedError(msg)


@final
class VirtualSocket(trio.socket.SocketType):
    """A UDP socket on a :class:`VirtualNetwork`, made by ``trio.socket.socket()``
    while the network is installed. It mirrors a Linux UDP socket; what it does
    not support raises an error that names it.

    ``rcvbuf_errors`` counts datagrams dropped because its receive queue was
    full (Linux's ``RcvbufErrors``).

    Example::

        with VirtualNetwork().install():
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            assert isinstance(sock, VirtualSocket)
            await sock.bind(("127.0.0.1", 0))
    """

    def __init__(
        self, net: VirtualNetwork, family: int, home: Host, proto: int = 0
    ) -> None:
        super().__init__()
        self._net = net
        self._family = stdlib_socket.AddressFamily(family)
        self._proto = proto
        self._home = home
        self._host = home
        self._binding: Endpoint | None = None
        self._wildcard = False
        self._peer: Endpoint | None = None
        self._closed = False
        self._error: int | None = None
        # (payload, source, (packet, arrival time) if ancillary data is on)
        self._queue: deque[tuple[bytes, Sockaddr, tuple[Packet, float] | None]] = (
            deque()
        )
        self._queued_bytes = 0
        self._rcvbuf = _LINUX_DEFAULT_RCVBUF
        self._sndbuf = _LINUX_DEFAULT_RCVBUF
        # Integer options set to other than their default (see _sockopts).
        self._ints: dict[tuple[int, int], int] = {}
        self._ancillary = False  # some option asks for ancillary data
        self._reuseaddr = False
        self._reuseport = False
        self._multicast_if4 = ("0.0.0.0", 0)  # (address, ifindex) as set
        self._multicast_if6 = 0
        self._groups: set[tuple[str, int]] = set()  # (group, ifindex) joined
        self._shut = 0  # 1: SHUT_RD, 2: SHUT_WR
        self._v6only = False
        self._waiters = _Waiters()
        # The last numeric destination sendto parsed, and what it gave.
        self._last_destination: tuple[object, tuple[Endpoint, int]] = (
            None,
            (("", 0), 0),
        )
        self.rcvbuf_errors = 0

    @classmethod
    def _create(
        cls, net: VirtualNetwork, family: int, home: Host, proto: int = 0
    ) -> VirtualSocket:
        return cls(net, family, home, proto)

    # ---- properties -------------------------------------------------------

    @property
    def family(self) -> stdlib_socket.AddressFamily:
        return self._family

    @property
    def type(self) -> stdlib_socket.SocketKind:
        return stdlib_socket.SOCK_DGRAM

    @property
    def proto(self) -> int:
        """As given to ``socket()``: 0 or ``IPPROTO_UDP``, like a real socket."""
        return self._proto

    @property
    def did_shutdown_SHUT_WR(self) -> bool:
        return bool(self._shut & 2)

    @property
    def _sock(self) -> VirtualSocket:
        """What anyio's Trio backend reads for ``extra(SocketAttribute...)``:
        a real trio socket's stdlib socket. Here the socket itself, whose
        ``family``, ``getsockname()`` and ``getpeername()`` are the same."""
        return self

    def _may_share_port(self, other: VirtualSocket) -> bool:
        """Linux: both SO_REUSEADDR, or both SO_REUSEPORT (one each: EADDRINUSE)."""
        return (self._reuseaddr and other._reuseaddr) or (
            self._reuseport and other._reuseport
        )

    def _opt(self, level: int, optname: int) -> int:
        key = (level, optname)
        value = self._ints.get(key)
        return INT_OPTIONS[key].default if value is None else value

    def __repr__(self) -> str:
        state = (
            "closed"
            if self._closed
            else f"bound to {self._binding}"
            if self._binding
            else "unbound"
        )
        return (
            f"<trioudp VirtualSocket {self._family.name} {state} on {self._host.name}>"
        )

    # ---- lifetime ---------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for group, ifindex in list(self._groups):
            self._net._join(self, group, ifindex, join=False)
        self._net._unbind(self)
        self._queue.clear()
        self._queued_bytes = 0
        self._waiters.unpark_all()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: builtins.type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise oserror(errno.EBADF, "the virtual socket is closed")

    def _raise_pending_error(self) -> None:
        if self._error is not None:
            code, self._error = self._error, None
            raise oserror(code)

    # ---- addresses --------------------------------------------------------

    def _sockaddr(self, endpoint: Endpoint, *, v4_packet: bool = False) -> Sockaddr:
        ip, port = endpoint
        if self._family == stdlib_socket.AF_INET6:
            return (f"::ffff:{ip}" if v4_packet else ip, port, 0, 0)
        return (ip, port)

    def _parse(self, address: object, *, for_bind: bool) -> tuple[str | None, int, int]:
        """``(canonical ip or None for wildcard, port, packet family)``."""
        if not isinstance(address, tuple) or len(address) not in (2, 4):
            msg = f"{self._family.name} address must be a (host, port) tuple, not {address!r}"
            raise TypeError(msg)
        host, port = address[0], address[1]
        if isinstance(host, bytes):
            host = host.decode("ascii")
        if not isinstance(host, str) or not isinstance(port, int):
            msg = f"address must be (str, int), not {address!r}"
            raise TypeError(msg)
        if not 0 <= port <= 65535:
            msg = "getsockaddrarg: port must be 0-65535."
            raise OverflowError(msg)
        if host in _WILDCARDS:
            if for_bind:
                return None, port, self._family
            host = "127.0.0.1" if self._family == stdlib_socket.AF_INET else "::1"
        parsed = canonical_ip(host)
        if parsed is None:
            # A name: resolve it on the virtual network (no real DNS, ever),
            # with AI_V4MAPPED on a dual-stack socket, as trio asks glibc.
            dual = self._family == stdlib_socket.AF_INET6 and not self._v6only
            info = self._net.getaddrinfo(
                host, port, 0 if dual else self._family, stdlib_socket.SOCK_DGRAM
            )
            info.sort(key=lambda entry: entry[0] != self._family)
            parsed = canonical_ip(info[0][4][0])
            assert parsed is not None
        ip, family = parsed
        mapped = unmapped(ip) if family == stdlib_socket.AF_INET6 else None
        if mapped is not None:
            if self._v6only:
                raise oserror(
                    errno.EINVAL if for_bind else errno.ENETUNREACH,
                    "IPv4-mapped address on an IPV6_V6ONLY socket",
                )
            # An IPv4 socket takes one too: glibc's getaddrinfo unmaps it.
            return mapped, port, stdlib_socket.AF_INET
        if family != self._family and (family != stdlib_socket.AF_INET or self._v6only):
            raise stdlib_socket.gaierror(
                stdlib_socket.EAI_ADDRFAMILY,
                f"{ip} is not an address of this {self._family.name} socket's family",
            )
        # An IPv4 address on a dual-stack socket: trio resolves it with
        # AI_V4MAPPED, so the kernel sees ::ffff:a.b.c.d.
        return ip, port, family

    async def bind(self, address: object) -> None:
        self._check_open()
        await trio.lowlevel.checkpoint()
        self._bind_now(address)

    def _bind_now(self, address: object) -> None:
        if self._binding is not None:
            raise oserror(errno.EINVAL, "the virtual socket is bound already")
        ip, port, _ = self._parse(address, for_bind=True)
        self._binding = self._net._bind(self, ip, port)
        self._wildcard = ip is None
        if ip is not None:
            self._host = self._net._host_of(ip) or self._home
            if ":" in ip and not is_multicast(ip):
                self._v6only = True  # Linux: an IPv6 address binds IPv6 only

    def _autobind(self) -> None:
        if self._binding is None:
            self._bind_now(("", 0))

    async def connect(self, address: object) -> None:
        self._check_open()
        await trio.lowlevel.checkpoint()
        ip, port, _ = self._parse(address, for_bind=False)
        assert ip is not None
        self._autobind()
        self._peer = (ip, port)
        # Linux keeps a pending error (an earlier refusal) across connect().

    def getsockname(self) -> Sockaddr:
        self._check_open()
        if self._binding is None:
            wildcard = "::" if self._family == stdlib_socket.AF_INET6 else "0.0.0.0"
            return self._sockaddr((wildcard, 0))
        if self._wildcard and self._peer is not None:
            v4 = ":" not in self._peer[0]
            family = stdlib_socket.AF_INET if v4 else stdlib_socket.AF_INET6
            source = self._net._source_for(self, self._peer[0], family)
            return self._sockaddr((source, self._binding[1]), v4_packet=v4)
        return self._sockaddr(self._binding, v4_packet=":" not in self._binding[0])

    def getpeername(self) -> Sockaddr:
        self._check_open()
        if self._peer is None:
            raise oserror(errno.ENOTCONN)
        return self._sockaddr(
            self._peer,
            v4_packet=":" not in self._peer[0]
            and self._family == stdlib_socket.AF_INET6,
        )

    # ---- options ----------------------------------------------------------

    @overload
    def setsockopt(self, level: int, optname: int, value: int | Buffer) -> None: ...

    @overload
    def setsockopt(
        self, level: int, optname: int, value: None, optlen: int
    ) -> None: ...

    def setsockopt(
        self,
        level: int,
        optname: int,
        value: int | Buffer | None,
        optlen: int | None = None,
    ) -> None:
        self._check_open()
        key = (level, optname)
        option = INT_OPTIONS.get(key)
        if value is None:
            _unsupported(f"setsockopt({level}, {optname}, None, optlen)")
        data = (
            value.to_bytes(4, "little", signed=True)
            if isinstance(value, int)
            else bytes(memoryview(value))
        )
        if key in _MEMBERSHIP:
            self._set_membership(key, data)
            return
        if key == _MULTICAST_IF:
            self._set_multicast_if(data)
            return
        number = (
            value if isinstance(value, int) else int_from_buffer(data, option, level)
        )
        if key == _RCVBUF:
            # Linux doubles the request (for bookkeeping) within its limits;
            # the limit compares unsigned, so a negative request is the most.
            limit = min(number & 0xFFFF_FFFF, self._net.rmem_max)
            self._rcvbuf = max(_LINUX_MIN_RCVBUF, limit * 2)
        elif key == _SNDBUF:
            limit = min(number & 0xFFFF_FFFF, self._net.wmem_max)
            self._sndbuf = max(_LINUX_MIN_SNDBUF, limit * 2)
        elif key == _V6ONLY:
            if self._family != stdlib_socket.AF_INET6:
                raise oserror(errno.ENOPROTOOPT, "IPV6_V6ONLY on an IPv4 socket")
            if self._binding is not None:
                raise oserror(errno.EINVAL, "IPV6_V6ONLY must be set before bind")
            self._v6only = bool(number)
        elif key == _MULTICAST_IF6:
            self._check_family(key)
            if number:
                self._net._iface_index(self._host, self._family, "::", number)
            self._multicast_if6 = number
        elif key in _READ_ONLY:
            raise oserror(errno.ENOPROTOOPT)
        elif option is not None:
            self._check_family(key)
            self._ints[key] = option.check(number)
            self._reuseaddr = bool(self._ints.get(_REUSEADDR))
            self._reuseport = bool(self._ints.get(_REUSEPORT))
            self._ancillary = any(self._ints.get(k) for k in _ANCILLARY)
        else:
            _unsupported(f"setsockopt(level={level}, optname={optname})")

    def _check_family(self, key: tuple[int, int]) -> None:
        # IPv6 options exist on IPv6 sockets only (IPv4 ones on both: Linux
        # applies them to an IPv6 socket's mapped traffic).
        if key[0] == _IP6 and self._family != stdlib_socket.AF_INET6:
            raise oserror(errno.ENOPROTOOPT, "an IPv6 option on an IPv4 socket")

    def _set_membership(self, key: tuple[int, int], data: bytes) -> None:
        if key[0] == _IP:
            group, address, ifindex = parse_ip_mreq(data)
            family = stdlib_socket.AF_INET
        else:
            self._check_family(key)
            group, ifindex = parse_ipv6_mreq(data)
            address, family = "::", stdlib_socket.AF_INET6
        if not is_multicast(group):
            raise oserror(errno.EINVAL, f"{group} is not a multicast group")
        ifindex = self._net._iface_index(self._host, family, address, ifindex)
        self._net._join(self, group, ifindex, join=_MEMBERSHIP[key])

    def _set_multicast_if(self, data: bytes) -> None:
        if len(data) >= 8:  # ip_mreq or ip_mreqn: the interface part
            _, address, ifindex = parse_ip_mreq(data)
        elif len(data) >= 4:
            address, ifindex = stdlib_socket.inet_ntoa(data[:4]), 0
        else:
            raise oserror(errno.EINVAL)
        if address != "0.0.0.0" or ifindex:
            try:
                self._net._iface_index(
                    self._host, stdlib_socket.AF_INET, address, ifindex
                )
            except OSError as exc:
                raise oserror(errno.EADDRNOTAVAIL, str(exc)) from None
        self._multicast_if4 = (address, ifindex)

    def _multicast_iface(self, family: int) -> int:
        """The interface multicast leaves by (0: the host's default)."""
        if family == stdlib_socket.AF_INET6:
            return self._multicast_if6
        address, ifindex = self._multicast_if4
        if address == "0.0.0.0" and not ifindex:
            return 0
        return self._net._iface_index(self._host, family, address, ifindex)

    def _multicast_ttl_loop(self, family: int) -> tuple[int, int]:
        """TTL (hop limit) and loopback flag for multicast of ``family``; an
        IPv6 socket's IPv4 (mapped) multicast follows the IPv4 options."""
        if family == stdlib_socket.AF_INET6:
            return (
                self._opt(_IP6, stdlib_socket.IPV6_MULTICAST_HOPS),
                self._opt(_IP6, stdlib_socket.IPV6_MULTICAST_LOOP),
            )
        return (
            self._opt(_IP, stdlib_socket.IP_MULTICAST_TTL),
            self._opt(_IP, stdlib_socket.IP_MULTICAST_LOOP),
        )

    @overload
    def getsockopt(self, level: int, optname: int) -> int: ...

    @overload
    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes: ...

    def getsockopt(
        self, level: int, optname: int, buflen: int | None = None
    ) -> int | bytes:
        self._check_open()
        key = (level, optname)
        value: int
        if key == _RCVBUF:
            value = self._rcvbuf
        elif key == _SNDBUF:
            value = self._sndbuf
        elif key == _V6ONLY:
            if self._family != stdlib_socket.AF_INET6:
                raise oserror(errno.EOPNOTSUPP, "IPV6_V6ONLY on an IPv4 socket")
            value = int(self._v6only)
        elif key == (_SOL, stdlib_socket.SO_ERROR):
            code, self._error = self._error, None
            value = code or 0
        elif key == (_SOL, getattr(stdlib_socket, "SO_PROTOCOL", 38)):
            value = stdlib_socket.IPPROTO_UDP
        elif key == (_SOL, getattr(stdlib_socket, "SO_DOMAIN", 39)):
            value = int(self._family)
        elif key == _MULTICAST_IF:
            packed = stdlib_socket.inet_aton(self._multicast_if4[0])
            if buflen is not None:
                return packed[:buflen]
            value = int.from_bytes(packed, "little")
        elif key == _MULTICAST_IF6:
            self._check_family(key)
            value = self._multicast_if6
        elif key in INT_OPTIONS:
            self._check_family(key)
            value = self._opt(level, optname)
        else:
            _unsupported(f"getsockopt(level={level}, optname={optname})")
        if buflen is not None:
            return int_to_buffer(value, buflen, level)
        return value

    # ---- sending ----------------------------------------------------------

    async def send(self, data: Buffer, flags: int = 0, /) -> int:
        return await self._sendmsg([data], flags, None)

    @overload
    async def sendto(
        self, data: Buffer, address: tuple[object, ...] | str | Buffer, /
    ) -> int: ...

    @overload
    async def sendto(
        self, data: Buffer, flags: int, address: tuple[object, ...] | str | Buffer, /
    ) -> int: ...

    async def sendto(self, *args: object) -> int:
        if len(args) == 2:
            data, address = args
            flags: object = 0
        elif len(args) == 3:
            data, flags, address = args
        else:
            msg = f"sendto() takes 2 or 3 arguments ({len(args)} given)"
            raise TypeError(msg)
        assert isinstance(flags, int)
        # _sendmsg inlined: one coroutine less per datagram on the hot path.
        payload = data if type(data) is bytes else _joined([data])  # type: ignore[list-item]
        dst, family = self._destination(payload, flags, address)
        await trio.lowlevel.checkpoint_if_cancelled()
        self._transmit(payload, dst, family)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return len(payload)

    async def sendmsg(
        self,
        buffers: Iterable[Buffer],
        ancdata: Iterable[tuple[int, int, Buffer]] = (),
        flags: int = 0,
        address: object = None,
        /,
    ) -> int:
        items = list(ancdata)
        source = parse_send_ancillary(items, self._family) if items else None
        return await self._sendmsg(buffers, flags, address, source)

    async def _sendmsg(
        self,
        buffers: Iterable[Buffer],
        flags: int,
        address: object,
        source: str | None = None,
    ) -> int:
        payload = _joined(buffers)
        dst, family = self._destination(payload, flags, address)
        await trio.lowlevel.checkpoint_if_cancelled()
        self._transmit(payload, dst, family, source)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return len(payload)

    def _destination(
        self, payload: bytes, flags: int, address: object
    ) -> tuple[Endpoint, int]:
        """Check a send before its cancel point; ``(dst, packet family)``."""
        family: int
        if self._closed or self._shut:
            self._check_open()
            if self._shut & 2:
                raise oserror(errno.EPIPE, "shut down for writing")
        if flags and flags & ~_IGNORED_SEND_FLAGS:
            _unsupported(f"send flags {flags:#x}")
        if address is None:
            if self._peer is None:
                raise oserror(errno.EDESTADDRREQ)
            dst = self._peer
            family = stdlib_socket.AF_INET6 if ":" in dst[0] else stdlib_socket.AF_INET
        elif address == self._last_destination[0]:
            dst, family = self._last_destination[1]
        else:
            ip, port, family = self._parse(address, for_bind=False)
            assert ip is not None
            dst = (ip, port)
            if not port:
                raise oserror(errno.EINVAL, "destination port 0")
            if (
                type(address) is tuple
                and address[0] == ip
                and family == self._family
                and self._binding
            ):
                # Numeric and canonical already, on a bound socket: parsing it
                # again would give the same answer (no name, no mapped address).
                self._last_destination = (address, (dst, family))
        if len(payload) > _MAX_PAYLOAD[self._family]:
            raise oserror(errno.EMSGSIZE)
        return dst, family

    def _transmit(
        self, payload: bytes, dst: Endpoint, family: int, source: str | None = None
    ) -> None:
        if self._error is not None:
            self._raise_pending_error()
        if self._binding is None:
            self._autobind()
        self._net._send(self, payload, dst, family, source)

    async def wait_writable(self) -> None:
        self._check_open()
        await trio.lowlevel.checkpoint()

    # ---- receiving --------------------------------------------------------

    def _accept(self, packet: Packet) -> str | None:
        """Queue an arriving datagram; returns a drop reason, or None."""
        if self._closed:
            return "closed"
        if self._peer is not None and packet.src != self._peer:
            return "filtered"
        # Linux charges each datagram its buffer's true size, and always
        # takes one into an empty queue.
        size = truesize(len(packet.payload), self._family)
        if self._queued_bytes and self._queued_bytes + size > self._rcvbuf:
            self.rcvbuf_errors += 1
            return "rcvbuf"
        source: Sockaddr = packet.src
        if self._family == stdlib_socket.AF_INET6:
            v4_packet = packet.family == stdlib_socket.AF_INET
            source = self._sockaddr(packet.src, v4_packet=v4_packet)
        self._queue.append(
            (
                packet.payload,
                source,
                (packet, self._net.now()) if self._ancillary else None,
            )
        )
        self._queued_bytes += size
        self._waiters.unpark_all()
        return None

    def _set_error(self, code: int) -> None:
        self._error = code
        self._waiters.unpark_all()

    def is_readable(self) -> bool:
        self._check_open()
        return bool(self._queue) or self._error is not None

    async def _next(
        self, flags: int
    ) -> tuple[bytes, Sockaddr, tuple[Packet, float] | None]:
        # Like trio's real sockets: a datagram already queued costs a cancel
        # point and a schedule point; when there is none, waiting is both
        # (parking delivers a pending cancel at once), and the datagram that
        # ends the wait is returned without another.
        if self._closed:
            self._check_open()
        if flags and flags & ~_SUPPORTED_RECV_FLAGS:
            _unsupported(f"receive flags {flags:#x}")
        if self._queue or self._error is not None:
            await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while True:
            if self._error is not None:
                self._raise_pending_error()
            if self._queue:
                if flags & _MSG_PEEK:
                    item = self._queue[0]
                else:
                    item = self._queue.popleft()
                    self._queued_bytes -= truesize(len(item[0]), self._family)
                if not waited:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return item
            await self._waiters.park()
            waited = True
            if self._closed:
                msg = "another task closed this socket"
                raise trio.ClosedResourceError(msg)

    def _ancillary_data(
        self, extra: tuple[Packet, float] | None, ancbufsize: int
    ) -> tuple[list[tuple[int, int, bytes]], int]:
        """Ancillary items for a datagram, as Linux orders them, and MSG_CTRUNC."""
        if extra is None or not ancbufsize:
            return [], 0
        packet, when = extra
        items: list[tuple[int, int, bytes]] = []
        if self._opt(_SOL, SO_TIMESTAMPNS):
            items.append((_SOL, SO_TIMESTAMPNS, timespec(TIMESTAMP_EPOCH + when)))
        elif self._opt(_SOL, SO_TIMESTAMP):
            items.append((_SOL, SO_TIMESTAMP, timeval(TIMESTAMP_EPOCH + when)))
        dst = packet.dst[0]
        # Linux names the interface that owns the destination address.
        ifindex = packet.via or (
            LOOPBACK_IFINDEX
            if is_loopback(dst)
            and packet.sender is not None
            and packet.sender._host is self._host
            else ETHERNET_IFINDEX
        )
        v4 = packet.family == stdlib_socket.AF_INET
        if self._family == stdlib_socket.AF_INET6 and self._opt(_IP6, IPV6_RECVPKTINFO):
            address = f"::ffff:{dst}" if v4 else dst
            items.append((_IP6, IPV6_PKTINFO, in6_pktinfo(address, ifindex)))
        if v4 and self._opt(_IP, IP_PKTINFO):
            local = dst
            if packet.to is not None:  # broadcast or multicast: the interface's
                local = (
                    self._net._iface_address(self._host, ifindex, packet.family) or dst
                )
            items.append((_IP, IP_PKTINFO, in_pktinfo(ifindex, local, dst)))
        if v4 and self._opt(_IP, IP_RECVTTL):
            items.append((_IP, stdlib_socket.IP_TTL, (64).to_bytes(4, "little")))
        if v4 and self._opt(_IP, stdlib_socket.IP_RECVTOS):
            items.append((_IP, stdlib_socket.IP_TOS, b"\0"))
        kept, cut = fit_ancillary(items, ancbufsize)
        return kept, _MSG_CTRUNC if cut else 0

    async def recvmsg(
        self, bufsize: int, ancbufsize: int = 0, flags: int = 0, /
    ) -> tuple[bytes, list[tuple[int, int, bytes]], int, Sockaddr]:
        if bufsize < 0:
            msg = "negative buffer size in recvmsg()"
            raise ValueError(msg)
        if ancbufsize < 0:
            msg = "invalid ancillary data buffer length"
            raise ValueError(msg)
        payload, source, extra = await self._next(flags)
        ancdata, msg_flags = self._ancillary_data(extra, ancbufsize)
        if len(payload) > bufsize:
            return payload[:bufsize], ancdata, msg_flags | _MSG_TRUNC, source
        return payload, ancdata, msg_flags, source

    async def recvmsg_into(
        self, buffers: Iterable[Buffer], ancbufsize: int = 0, flags: int = 0, /
    ) -> tuple[int, list[tuple[int, int, bytes]], int, Sockaddr]:
        if ancbufsize < 0:
            msg = "invalid ancillary data buffer length"
            raise ValueError(msg)
        payload, source, extra = await self._next(flags)
        ancdata, msg_flags = self._ancillary_data(extra, ancbufsize)
        written = 0
        for buffer in buffers:
            with memoryview(buffer) as view:
                piece = payload[written : written + view.nbytes]
                view[: len(piece)] = piece
                written += len(piece)
        if written < len(payload):
            msg_flags |= _MSG_TRUNC
            if flags & _MSG_TRUNC:
                written = len(payload)  # Linux returns the real length
        return written, ancdata, msg_flags, source

    async def recvfrom(self, bufsize: int, flags: int = 0, /) -> tuple[bytes, Sockaddr]:
        if bufsize < 0:
            msg = "negative buffersize in recvfrom"
            raise ValueError(msg)
        # recvmsg inlined: one coroutine less per datagram on the hot path.
        payload, source, _ = await self._next(flags)
        if len(payload) <= bufsize:
            return payload, source
        return _truncated(payload, bufsize, flags), source

    async def recv(self, buflen: int, flags: int = 0, /) -> bytes:
        if buflen < 0:
            msg = "negative buffersize in recv"
            raise ValueError(msg)
        if buflen == 0:
            # CPython returns b"" without asking the kernel: nothing is taken.
            self._check_open()
            await trio.lowlevel.checkpoint()
            return b""
        payload, _, _ = await self._next(flags)
        return _truncated(payload, buflen, flags)

    async def recvfrom_into(
        self, buffer: Buffer, nbytes: int = 0, flags: int = 0
    ) -> tuple[int, Sockaddr]:
        with memoryview(buffer) as view:
            target = _into_target(
                view,
                nbytes,
                "recvfrom_into",
                "nbytes is greater than the length of the buffer",
            )
            written, _, _, source = await self.recvmsg_into([target], 0, flags)
        return written, source

    async def recv_into(self, buffer: Buffer, nbytes: int = 0, flags: int = 0) -> int:
        with memoryview(buffer) as view:
            target = _into_target(
                view, nbytes, "recv_into", "buffer too small for requested bytes"
            )
            if not target.nbytes:
                # CPython returns 0 without asking the kernel: nothing is taken.
                self._check_open()
                await trio.lowlevel.checkpoint()
                return 0
            written, _, _, _ = await self.recvmsg_into([target], 0, flags)
        return written

    # ---- what UDP or the simulation does not do ----------------------------

    def fileno(self) -> int:
        """-1 once closed, as a real socket; else :data:`VIRTUAL_FILENO`."""
        return -1 if self._closed else VIRTUAL_FILENO

    def detach(self) -> int:
        _unsupported("detach(): they have no file descriptor")

    def dup(self) -> trio.socket.SocketType:
        _unsupported("dup()")

    def shutdown(self, flag: int) -> None:
        """As Linux: ENOTCONN unless connected (but shut all the same); after SHUT_WR sends raise
        BrokenPipeError; SHUT_RD changes nothing a Trio program sees (queued
        and later datagrams are still received)."""
        self._check_open()
        bits = {
            stdlib_socket.SHUT_RD: 1,
            stdlib_socket.SHUT_WR: 2,
            stdlib_socket.SHUT_RDWR: 3,
        }.get(flag)
        if bits is None:
            raise oserror(errno.EINVAL)
        self._shut |= bits
        if self._peer is None:
            raise oserror(errno.ENOTCONN, "not connected (shut all the same)")

    def listen(self, backlog: int = 128) -> None:
        raise oserror(errno.EOPNOTSUPP, "listen() on a UDP socket")

    async def accept(self) -> tuple[trio.socket.SocketType, object]:
        raise oserror(errno.EOPNOTSUPP, "accept() on a UDP socket")

    def get_inheritable(self) -> bool:
        return False

    def set_inheritable(self, inheritable: bool) -> None:
        if inheritable:
            _unsupported("inheritable sockets")


def _truncated(payload: bytes, size: int, flags: int) -> bytes:
    """``payload`` cut to ``size``; with MSG_TRUNC, CPython keeps the real
    length and the bytes past ``size`` are whatever was in its buffer."""
    if len(payload) <= size:
        return payload
    if flags & _MSG_TRUNC:
        return payload[:size] + bytes(len(payload) - size)
    return payload[:size]


def _into_target(view: memoryview, nbytes: int, name: str, too_big: str) -> memoryview:
    """The part of ``view`` that ``nbytes`` asks for, checked as CPython does."""
    if nbytes < 0:
        msg = f"negative buffersize in {name}"
        raise ValueError(msg)
    if nbytes > view.nbytes:
        raise ValueError(too_big)
    return view[:nbytes] if nbytes else view
