"""VirtualSocket: the ``trio.socket.SocketType`` that a VirtualNetwork makes, turning each call into what Linux UDP would do.

It keeps what only the calls see (shutdown state, the last destination
parsed) and leaves the rest to its kernel half, a :class:`~._sock.Sock`,
which is all the network holds of it. It reaches the network only through a
:class:`~._stack.Stack`: ``ports`` to bind, ``wire`` to send, ``hosts`` and
``groups`` for addresses, interfaces and memberships. Options are
``_options``; the option table and encodings ``_sockopts``.
"""

from __future__ import annotations

import errno
import socket as stdlib_socket
from typing import TYPE_CHECKING, final, overload

import trio

from ._model import (
    NOTHING_ASKED,
    canonical_ip,
    is_multicast,
    oserror,
    unmapped,
    unsupported,
)
from ._options import getsockopt, setsockopt
from ._resolver import getaddrinfo, service_port
from ._sock import Sock
from ._sockopts import parse_send_ancillary

if TYPE_CHECKING:
    import builtins
    from collections.abc import Iterable
    from types import TracebackType

    from typing_extensions import Buffer, Self

    from ._model import Asked, Endpoint, Host, Sockaddr
    from ._stack import Stack

__all__ = ["VIRTUAL_FILENO", "VirtualSocket"]

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
_MSG_TRUNC = int(stdlib_socket.MSG_TRUNC)
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})


def _joined(buffers: Iterable[Buffer]) -> bytes:
    """The datagram's bytes; a lone ``bytes`` buffer is used as is, uncopied."""
    if type(buffers) is list and len(buffers) == 1 and type(buffers[0]) is bytes:
        return buffers[0]
    return b"".join(bytes(memoryview(buffer)) for buffer in buffers)


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

    def __init__(self, stack: Stack, family: int, home: Host, proto: int = 0) -> None:
        super().__init__()
        self._stack = stack
        self._family = stdlib_socket.AddressFamily(family)
        self._proto = proto
        self._sk = Sock(self._family, home, stack.now, stack.wire.catch_up)
        stack.opened(self._sk)
        self._wire_send = stack.wire.send
        self._shut = 0  # 1: SHUT_RD, 2: SHUT_WR
        # The last numeric destination sendto parsed, and what it gave.
        self._last_destination: tuple[object, tuple[Endpoint, int]] = (
            None,
            (("", 0), 0),
        )

    @classmethod
    def _create(
        cls, stack: Stack, family: int, home: Host, proto: int = 0
    ) -> VirtualSocket:
        return cls(stack, family, home, proto)

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

    @property
    def rcvbuf_errors(self) -> int:
        """Datagrams dropped because the receive queue was full."""
        return self._sk.rcvbuf_errors

    def __repr__(self) -> str:
        sk = self._sk
        state = (
            "closed"
            if sk.closed
            else f"bound to {sk.binding.address}"
            if sk.binding
            else "unbound"
        )
        return f"<trioudp VirtualSocket {self._family.name} {state} on {sk.host.name}>"

    # ---- lifetime ---------------------------------------------------------

    def close(self) -> None:
        self._stack.close(self._sk)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: builtins.type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ---- addresses --------------------------------------------------------

    def _parse(self, address: object, *, for_bind: bool) -> tuple[str | None, int, int]:
        """``(canonical ip or None for wildcard, port, packet family)``, or
        the errors trio's real sockets raise for the same address."""
        if self._family == stdlib_socket.AF_INET:
            if not isinstance(address, tuple) or len(address) != 2:
                msg = f"address should be a (host, port) tuple, not {address!r}"
                raise ValueError(msg)
        elif not isinstance(address, tuple) or not 2 <= len(address) <= 4:
            msg = (
                "address should be a (host, port, [flowinfo, [scopeid]]) tuple,"
                f" not {address!r}"
            )
            raise ValueError(msg)
        host, port = address[0], address[1]
        if isinstance(host, bytes):
            host = host.decode("ascii")
        if not isinstance(host, str):
            msg = f"host must be a str, not {host!r}"
            raise TypeError(msg)
        if host == "<broadcast>":
            host = "255.255.255.255"  # as trio and the socket module read it
        if not isinstance(port, int):
            # trio resolves a port given as a string (or None), service
            # names included.
            port = service_port(port)
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
            dual = self._family == stdlib_socket.AF_INET6 and not self._sk.v6only
            info = getaddrinfo(
                self._stack.hosts,
                host,
                port,
                0 if dual else self._family,
                stdlib_socket.SOCK_DGRAM,
            )
            info.sort(key=lambda entry: entry[0] != self._family)
            parsed = canonical_ip(info[0][4][0])
            assert parsed is not None
        ip, family = parsed
        mapped = unmapped(ip) if family == stdlib_socket.AF_INET6 else None
        if mapped is not None:
            if self._sk.v6only:
                raise oserror(
                    errno.EINVAL if for_bind else errno.ENETUNREACH,
                    "IPv4-mapped address on an IPV6_V6ONLY socket",
                )
            # An IPv4 socket takes one too: glibc's getaddrinfo unmaps it.
            return mapped, port, stdlib_socket.AF_INET
        if family != self._family and (
            family != stdlib_socket.AF_INET or self._sk.v6only
        ):
            raise stdlib_socket.gaierror(
                stdlib_socket.EAI_ADDRFAMILY,
                f"{ip} is not an address of this {self._family.name} socket's family",
            )
        # An IPv4 address on a dual-stack socket: trio resolves it with
        # AI_V4MAPPED, so the kernel sees ::ffff:a.b.c.d.
        return ip, port, family

    async def bind(self, address: object) -> None:
        self._sk.check_open()
        await trio.lowlevel.checkpoint()
        self._bind_now(address)

    def _bind_now(self, address: object) -> None:
        sk = self._sk
        if sk.binding is not None:
            raise oserror(errno.EINVAL, "the virtual socket is bound already")
        ip, port, _ = self._parse(address, for_bind=True)
        sk.binding = self._stack.ports.bind(sk, ip, port)
        if ip is not None:
            sk.host = self._stack.hosts.host_of(ip) or sk.home
            if ":" in ip and not is_multicast(ip):
                sk.v6only = True  # Linux: an IPv6 address binds IPv6 only

    def _autobind(self) -> None:
        if self._sk.binding is None:
            self._bind_now(("", 0))

    async def connect(self, address: object) -> None:
        self._sk.check_open()
        await trio.lowlevel.checkpoint()
        ip, port, family = self._parse(address, for_bind=False)
        assert ip is not None
        self._autobind()
        if not (ip in self._stack.hosts.broadcasts or is_multicast(ip)):
            # Linux looks the route up: ENETUNREACH where there is none.
            self._stack.hosts.route(self._sk.host, ip, family)
        self._sk.peer = (ip, port)
        # Linux keeps a pending error (an earlier refusal) across connect().

    def getsockname(self) -> Sockaddr:
        sk = self._sk
        sk.check_open()
        binding = sk.binding
        if binding is None:
            wildcard = "::" if self._family == stdlib_socket.AF_INET6 else "0.0.0.0"
            return sk.sockaddr((wildcard, 0))
        if binding.ip is None and sk.peer is not None:
            v4 = ":" not in sk.peer[0]
            family = stdlib_socket.AF_INET if v4 else stdlib_socket.AF_INET6
            source = self._stack.hosts.source_for(binding, sk.peer[0], family)
            return sk.sockaddr((source, binding.port), v4_packet=v4)
        address = binding.address
        return sk.sockaddr(address, v4_packet=":" not in address[0])

    def getpeername(self) -> Sockaddr:
        self._sk.check_open()
        if self._sk.peer is None:
            raise oserror(errno.ENOTCONN)
        return self._sk.sockaddr(
            self._sk.peer,
            v4_packet=":" not in self._sk.peer[0]
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
        setsockopt(self._sk, self._stack, level, optname, value)

    @overload
    def getsockopt(self, level: int, optname: int) -> int: ...

    @overload
    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes: ...

    def getsockopt(
        self, level: int, optname: int, buflen: int | None = None
    ) -> int | bytes:
        return getsockopt(self._sk, self._stack, level, optname, buflen)

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
        asked = parse_send_ancillary(items, self._family) if items else NOTHING_ASKED
        return await self._sendmsg(buffers, flags, address, asked)

    async def _sendmsg(
        self,
        buffers: Iterable[Buffer],
        flags: int,
        address: object,
        asked: Asked = NOTHING_ASKED,
    ) -> int:
        payload = _joined(buffers)
        dst, family = self._destination(payload, flags, address)
        await trio.lowlevel.checkpoint_if_cancelled()
        self._transmit(payload, dst, family, asked)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return len(payload)

    def _destination(
        self, payload: bytes, flags: int, address: object
    ) -> tuple[Endpoint, int]:
        """Check a send before its cancel point; ``(dst, packet family)``.

        A closed or shut socket is refused by :meth:`_transmit`, after the
        cancel point, as Trio's real sockets do: a cancelled task sending on
        a socket closed under it sees Cancelled, not EBADF."""
        family: int
        sk = self._sk
        if flags and flags & ~_IGNORED_SEND_FLAGS:
            unsupported(f"send flags {flags:#x}")
        if address is None:
            if sk.peer is None:
                if sk.closed:
                    return ("", 0), 0  # EBADF, after the cancel point
                raise oserror(errno.EDESTADDRREQ)
            dst = sk.peer
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
                and sk.binding is not None
            ):
                # Numeric and canonical already, on a bound socket: parsing it
                # again would give the same answer (no name, no mapped address).
                self._last_destination = (address, (dst, family))
        if len(payload) > _MAX_PAYLOAD[self._family]:
            raise oserror(errno.EMSGSIZE)
        return dst, family

    def _transmit(
        self, payload: bytes, dst: Endpoint, family: int, asked: Asked = NOTHING_ASKED
    ) -> None:
        sk = self._sk
        if sk.closed or self._shut:
            sk.check_open()
            if self._shut & 2:
                raise oserror(errno.EPIPE, "shut down for writing")
        if sk.error is not None:
            sk.raise_pending_error()
        if sk.binding is None:
            self._autobind()
        self._wire_send(sk, payload, dst, family, asked)

    async def wait_writable(self) -> None:
        self._sk.check_open()
        await trio.lowlevel.checkpoint()

    # ---- receiving --------------------------------------------------------

    def is_readable(self) -> bool:
        self._sk.check_open()
        return bool(self._sk.queue) or self._sk.error is not None

    async def recvmsg(
        self, bufsize: int, ancbufsize: int = 0, flags: int = 0, /
    ) -> tuple[bytes, list[tuple[int, int, bytes]], int, Sockaddr]:
        if bufsize < 0:
            msg = "negative buffer size in recvmsg()"
            raise ValueError(msg)
        if ancbufsize < 0:
            msg = "invalid ancillary data buffer length"
            raise ValueError(msg)
        payload, source, extra, _ = await self._sk.take(flags)
        ancdata, msg_flags = self._sk.ancillary_data(
            extra, ancbufsize, self._stack.hosts
        )
        if len(payload) > bufsize:
            return payload[:bufsize], ancdata, msg_flags | _MSG_TRUNC, source
        return payload, ancdata, msg_flags, source

    async def recvmsg_into(
        self, buffers: Iterable[Buffer], ancbufsize: int = 0, flags: int = 0, /
    ) -> tuple[int, list[tuple[int, int, bytes]], int, Sockaddr]:
        if ancbufsize < 0:
            msg = "invalid ancillary data buffer length"
            raise ValueError(msg)
        payload, source, extra, _ = await self._sk.take(flags)
        ancdata, msg_flags = self._sk.ancillary_data(
            extra, ancbufsize, self._stack.hosts
        )
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
        payload, source, _, _ = await self._sk.take(flags)
        if len(payload) <= bufsize:
            return payload, source
        return _truncated(payload, bufsize, flags), source

    async def recv(self, buflen: int, flags: int = 0, /) -> bytes:
        if buflen < 0:
            msg = "negative buffersize in recv"
            raise ValueError(msg)
        if buflen == 0:
            # CPython returns b"" without asking the kernel: nothing is taken.
            self._sk.check_open()
            await trio.lowlevel.checkpoint()
            return b""
        payload, _, _, _ = await self._sk.take(flags)
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
                self._sk.check_open()
                await trio.lowlevel.checkpoint()
                return 0
            written, _, _, _ = await self.recvmsg_into([target], 0, flags)
        return written

    # ---- what UDP or the simulation does not do ----------------------------

    def fileno(self) -> int:
        """-1 once closed, as a real socket; else :data:`VIRTUAL_FILENO`."""
        return -1 if self._sk.closed else VIRTUAL_FILENO

    def detach(self) -> int:
        unsupported("detach(): they have no file descriptor")

    def dup(self) -> trio.socket.SocketType:
        unsupported("dup()")

    def shutdown(self, flag: int) -> None:
        """As Linux: ENOTCONN unless connected (but shut all the same); after SHUT_WR sends raise
        BrokenPipeError; SHUT_RD changes nothing a Trio program sees (queued
        and later datagrams are still received)."""
        self._sk.check_open()
        bits = {
            stdlib_socket.SHUT_RD: 1,
            stdlib_socket.SHUT_WR: 2,
            stdlib_socket.SHUT_RDWR: 3,
        }.get(flag)
        if bits is None:
            raise oserror(errno.EINVAL)
        self._shut |= bits
        if self._sk.peer is None:
            raise oserror(errno.ENOTCONN, "not connected (shut all the same)")

    def listen(self, backlog: int = 128) -> None:
        raise oserror(errno.EOPNOTSUPP, "listen() on a UDP socket")

    async def accept(self) -> tuple[trio.socket.SocketType, object]:
        raise oserror(errno.EOPNOTSUPP, "accept() on a UDP socket")

    def get_inheritable(self) -> bool:
        return False

    def set_inheritable(self, inheritable: bool) -> None:
        if inheritable:
            unsupported("inheritable sockets")

    # ---- for trioudp's own tests: an ICMP error the network cannot make ----

    @property
    def _error(self) -> int | None:
        return self._sk.error

    @_error.setter
    def _error(self, code: int | None) -> None:
        self._sk.error = code

    def _set_error(self, code: int) -> None:
        self._sk.set_error(code)


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
