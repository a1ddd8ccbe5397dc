"""VirtualSocket: a trio socket on a VirtualNetwork that behaves like Linux UDP."""

from __future__ import annotations

import errno
import socket as stdlib_socket
from collections import deque
from typing import TYPE_CHECKING, NoReturn, final, overload

import trio

from ._network import Endpoint, Host, Packet, canonical_ip, oserror, unmapped

if TYPE_CHECKING:
    import builtins
    from collections.abc import Iterable
    from types import TracebackType

    from typing_extensions import Buffer, Self

    from ._network import VirtualNetwork

__all__ = ["VirtualSocket"]

Sockaddr = tuple[str, int] | tuple[str, int, int, int]

_LINUX_DEFAULT_RCVBUF = 212_992  # net.core.rmem_default
_LINUX_MAX_BUF = 212_992  # net.core.rmem_max / wmem_max
_LINUX_MIN_RCVBUF = 2_304
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
_SUPPORTED_RECV_FLAGS = _MSG_PEEK | _MSG_TRUNC
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})

_BOOLEAN_OPTIONS = {
    (stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR): "SO_REUSEADDR",
    (stdlib_socket.SOL_SOCKET, stdlib_socket.SO_BROADCAST): "SO_BROADCAST",
}
if hasattr(stdlib_socket, "SO_REUSEPORT"):
    _BOOLEAN_OPTIONS[(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEPORT)] = (
        "SO_REUSEPORT"
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

    def __init__(self, net: VirtualNetwork, family: int, home: Host) -> None:
        super().__init__()
        self._net = net
        self._family = stdlib_socket.AddressFamily(family)
        self._home = home
        self._host = home
        self._binding: Endpoint | None = None
        self._wildcard = False
        self._peer: Endpoint | None = None
        self._closed = False
        self._error: int | None = None
        self._queue: deque[tuple[bytes, Sockaddr]] = deque()
        self._queued_bytes = 0
        self._rcvbuf = _LINUX_DEFAULT_RCVBUF
        self._sndbuf = _LINUX_DEFAULT_RCVBUF
        self._options: dict[str, int] = {}
        self._v6only = False
        self._waiters = _Waiters()
        # The last numeric destination sendto parsed, and what it gave.
        self._last_destination: tuple[object, tuple[Endpoint, int]] = (
            None,
            (("", 0), 0),
        )
        self.rcvbuf_errors = 0

    @classmethod
    def _create(cls, net: VirtualNetwork, family: int, home: Host) -> VirtualSocket:
        return cls(net, family, home)

    # ---- properties -------------------------------------------------------

    @property
    def family(self) -> stdlib_socket.AddressFamily:
        return self._family

    @property
    def type(self) -> stdlib_socket.SocketKind:
        return stdlib_socket.SOCK_DGRAM

    @property
    def proto(self) -> int:
        return stdlib_socket.IPPROTO_UDP

    @property
    def did_shutdown_SHUT_WR(self) -> bool:
        return False

    @property
    def _shares_port(self) -> bool:
        return bool(
            self._options.get("SO_REUSEPORT") or self._options.get("SO_REUSEADDR")
        )

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
            # A name: resolve it on the virtual network (no real DNS, ever).
            info = self._net.getaddrinfo(
                host, port, self._family, stdlib_socket.SOCK_DGRAM
            )
            parsed = canonical_ip(info[0][4][0])
            assert parsed is not None
        ip, family = parsed
        if family != self._family:
            raise stdlib_socket.gaierror(
                stdlib_socket.EAI_ADDRFAMILY,
                f"{ip} is not an address of this {self._family.name} socket's family",
            )
        mapped = unmapped(ip)
        if mapped is not None:
            if self._v6only:
                raise oserror(
                    errno.ENETUNREACH, "IPv4-mapped address on an IPV6_V6ONLY socket"
                )
            return mapped, port, stdlib_socket.AF_INET
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
        self._host = self._home if ip is None else self._net.host(ip)

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
        self._error = None

    def getsockname(self) -> Sockaddr:
        self._check_open()
        if self._binding is None:
            wildcard = "::" if self._family == stdlib_socket.AF_INET6 else "0.0.0.0"
            return self._sockaddr((wildcard, 0))
        if self._wildcard and self._peer is not None:
            source = self._net._source_for(self, self._peer[0], self._family)
            return self._sockaddr((source, self._binding[1]))
        return self._sockaddr(self._binding)

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
        if not isinstance(value, int):
            _unsupported(f"setsockopt({level}, {optname}) with a bytes value")
        key = (level, optname)
        if key == (stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF):
            # Linux doubles the request (for bookkeeping) within its limits.
            self._rcvbuf = max(_LINUX_MIN_RCVBUF, min(value, _LINUX_MAX_BUF) * 2)
        elif key == (stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF):
            self._sndbuf = max(4_608, min(value, _LINUX_MAX_BUF) * 2)
        elif key in _BOOLEAN_OPTIONS:
            self._options[_BOOLEAN_OPTIONS[key]] = int(bool(value))
        elif key == (stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY):
            if self._family != stdlib_socket.AF_INET6:
                raise oserror(errno.ENOPROTOOPT, "IPV6_V6ONLY on an IPv4 socket")
            if self._binding is not None:
                raise oserror(errno.EINVAL, "IPV6_V6ONLY must be set before bind")
            self._v6only = bool(value)
        else:
            _unsupported(f"setsockopt(level={level}, optname={optname})")

    @overload
    def getsockopt(self, level: int, optname: int) -> int: ...

    @overload
    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes: ...

    def getsockopt(
        self, level: int, optname: int, buflen: int | None = None
    ) -> int | bytes:
        self._check_open()
        if buflen is not None:
            _unsupported(f"getsockopt({level}, {optname}) with a buffer length")
        key = (level, optname)
        if key == (stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF):
            return self._rcvbuf
        if key == (stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF):
            return self._sndbuf
        if key in _BOOLEAN_OPTIONS:
            return self._options.get(_BOOLEAN_OPTIONS[key], 0)
        if key == (stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY):
            return int(self._v6only)
        if key == (stdlib_socket.SOL_SOCKET, stdlib_socket.SO_TYPE):
            return int(stdlib_socket.SOCK_DGRAM)
        if key == (stdlib_socket.SOL_SOCKET, stdlib_socket.SO_ERROR):
            code, self._error = self._error, None
            return code or 0
        _unsupported(f"getsockopt(level={level}, optname={optname})")

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
        if list(ancdata):
            _unsupported("ancillary data in sendmsg")
        return await self._sendmsg(buffers, flags, address)

    async def _sendmsg(
        self, buffers: Iterable[Buffer], flags: int, address: object
    ) -> int:
        payload = _joined(buffers)
        dst, family = self._destination(payload, flags, address)
        await trio.lowlevel.checkpoint_if_cancelled()
        self._transmit(payload, dst, family)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return len(payload)

    def _destination(
        self, payload: bytes, flags: int, address: object
    ) -> tuple[Endpoint, int]:
        """Check a send before its cancel point; ``(dst, packet family)``."""
        family: int
        if self._closed:
            self._check_open()
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

    def _transmit(self, payload: bytes, dst: Endpoint, family: int) -> None:
        if self._error is not None:
            self._raise_pending_error()
        if self._binding is None:
            self._autobind()
        self._net._send(self, payload, dst, family)

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
        size = len(packet.payload)
        if self._queue and self._queued_bytes + size > self._rcvbuf:
            self.rcvbuf_errors += 1
            return "rcvbuf"
        source: Sockaddr = packet.src
        if self._family == stdlib_socket.AF_INET6:
            v4_packet = packet.family == stdlib_socket.AF_INET
            source = self._sockaddr(packet.src, v4_packet=v4_packet)
        self._queue.append((packet.payload, source))
        self._queued_bytes += size
        self._waiters.unpark_all()
        return None

    def _set_error(self, code: int) -> None:
        self._error = code
        self._waiters.unpark_all()

    def is_readable(self) -> bool:
        self._check_open()
        return bool(self._queue) or self._error is not None

    async def _next(self, flags: int) -> tuple[bytes, Sockaddr]:
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
                    self._queued_bytes -= len(item[0])
                if not waited:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return item
            await self._waiters.park()
            waited = True
            if self._closed:
                msg = "another task closed this socket"
                raise trio.ClosedResourceError(msg)

    async def recvmsg(
        self, bufsize: int, ancbufsize: int = 0, flags: int = 0, /
    ) -> tuple[bytes, list[tuple[int, int, bytes]], int, Sockaddr]:
        if bufsize < 0:
            msg = "negative buffer size in recvmsg()"
            raise ValueError(msg)
        payload, source = await self._next(flags)
        if len(payload) > bufsize:
            return payload[:bufsize], [], _MSG_TRUNC, source
        return payload, [], 0, source

    async def recvmsg_into(
        self, buffers: Iterable[Buffer], ancbufsize: int = 0, flags: int = 0, /
    ) -> tuple[int, list[tuple[int, int, bytes]], int, Sockaddr]:
        payload, source = await self._next(flags)
        written = 0
        for buffer in buffers:
            with memoryview(buffer) as view:
                piece = payload[written : written + view.nbytes]
                view[: len(piece)] = piece
                written += len(piece)
        msg_flags = _MSG_TRUNC if written < len(payload) else 0
        return written, [], msg_flags, source

    async def recvfrom(self, bufsize: int, flags: int = 0, /) -> tuple[bytes, Sockaddr]:
        if bufsize < 0:
            msg = "negative buffersize in recvfrom"
            raise ValueError(msg)
        # recvmsg inlined: one coroutine less per datagram on the hot path.
        payload, source = await self._next(flags)
        return payload[:bufsize] if len(payload) > bufsize else payload, source

    async def recv(self, buflen: int, flags: int = 0, /) -> bytes:
        payload, _, _, _ = await self.recvmsg(buflen, 0, flags)
        return payload

    async def recvfrom_into(
        self, buffer: Buffer, nbytes: int = 0, flags: int = 0
    ) -> tuple[int, Sockaddr]:
        with memoryview(buffer) as view:
            target = view[:nbytes] if nbytes else view
            written, _, _, source = await self.recvmsg_into([target], 0, flags)
        return written, source

    async def recv_into(self, buffer: Buffer, nbytes: int = 0, flags: int = 0) -> int:
        written, _ = await self.recvfrom_into(buffer, nbytes, flags)
        return written

    # ---- what UDP or the simulation does not do ----------------------------

    def fileno(self) -> int:
        _unsupported("fileno(): they have no file descriptor")

    def detach(self) -> int:
        _unsupported("detach(): they have no file descriptor")

    def dup(self) -> trio.socket.SocketType:
        _unsupported("dup()")

    def shutdown(self, flag: int) -> None:
        _unsupported("shutdown()")

    def listen(self, backlog: int = 128) -> None:
        raise oserror(errno.EOPNOTSUPP, "listen() on a UDP socket")

    async def accept(self) -> tuple[trio.socket.SocketType, object]:
        raise oserror(errno.EOPNOTSUPP, "accept() on a UDP socket")

    def get_inheritable(self) -> bool:
        return False

    def set_inheritable(self, inheritable: bool) -> None:
        if inheritable:
            _unsupported("inheritable sockets")
