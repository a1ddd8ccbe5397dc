"""Name lookups on a virtual network, answered from its hosts (never real DNS)."""

from __future__ import annotations

import contextlib
import socket as stdlib_socket
from typing import TYPE_CHECKING

import trio

from ._model import Sockaddr, canonical_ip

if TYPE_CHECKING:
    from trio._socket import _GetAddrInfoEntry

    from ._hosts import Hosts

__all__ = ["AddrInfo", "Resolver", "getaddrinfo", "getnameinfo", "service_port"]

AddrInfo = tuple[
    stdlib_socket.AddressFamily, stdlib_socket.SocketKind, int, str, Sockaddr
]


#: What getaddrinfo answers for ``type=0, proto=0``, in glibc's order: each
#: socket type, its protocol, and the services database's name for it.
_SOCKET_TYPES = (
    (stdlib_socket.SOCK_STREAM, stdlib_socket.IPPROTO_TCP, "tcp"),
    (stdlib_socket.SOCK_DGRAM, stdlib_socket.IPPROTO_UDP, "udp"),
    (stdlib_socket.SOCK_RAW, 0, None),
)


_KNOWN_PROTOCOLS = frozenset({stdlib_socket.IPPROTO_TCP, stdlib_socket.IPPROTO_UDP})


def _no_service(port: object) -> stdlib_socket.gaierror:
    return stdlib_socket.gaierror(
        stdlib_socket.EAI_SERVICE,
        f"Servname not supported for ai_socktype (service {port!r})",
    )


def _kinds(
    port: bytes | str | int | None, type_: int, proto: int
) -> list[tuple[stdlib_socket.SocketKind, int, int]]:
    """``(socket type, protocol, port number)`` of each entry per address,
    as glibc gives them: a numeric port for every socket type asked for, a
    service name (``/etc/services``) for the types that know it."""
    if isinstance(port, bytes):
        port = port.decode("ascii")
    if port is not None and not isinstance(port, (str, int)):
        msg = "Int or String expected"
        raise OSError(msg)
    if type_ and type_ not in {kind for kind, _, _ in _SOCKET_TYPES}:
        raise stdlib_socket.gaierror(
            stdlib_socket.EAI_SOCKTYPE, "ai_socktype not supported"
        )
    numeric = port is None or isinstance(port, int) or port.isdigit() or not port
    kinds = []
    for kind, protocol, service_protocol in _SOCKET_TYPES:
        if type_ and type_ != kind:
            continue
        if proto and proto != protocol and (protocol or proto in _KNOWN_PROTOCOLS):
            continue
        if numeric:
            if kind == stdlib_socket.SOCK_RAW and type_ and port is not None:
                raise _no_service(port)
            number = int(port or 0)
        elif service_protocol is None:
            continue
        else:
            assert isinstance(port, str)
            try:
                number = stdlib_socket.getservbyname(port, service_protocol)
            except OSError:
                continue
        kinds.append((stdlib_socket.SocketKind(kind), proto or protocol, number))
    if not kinds:
        if type_ and proto:
            raise stdlib_socket.gaierror(
                stdlib_socket.EAI_SOCKTYPE, "ai_socktype not supported"
            )
        raise _no_service(port)
    return kinds


def service_port(port: bytes | str | int | None) -> int:
    """The UDP port number that ``port`` (a number, a numeric string or a
    service name) names, as ``getaddrinfo`` resolves it for a datagram socket.

    Raises:
        socket.gaierror: EAI_SERVICE, an unknown service.
        OSError: ``port`` is neither an int nor a string.
    """
    if isinstance(port, int):
        return port
    return _kinds(port, stdlib_socket.SOCK_DGRAM, 0)[0][2]


def getaddrinfo(
    hosts: Hosts,
    host: bytes | str | None,
    port: bytes | str | int | None,
    family: int = 0,
    type: int = 0,  # noqa: A002
    proto: int = 0,
    flags: int = 0,
) -> list[AddrInfo]:
    """Resolve like :func:`socket.getaddrinfo`, from ``hosts``
    (see :meth:`VirtualNetwork.getaddrinfo`)."""
    if isinstance(host, bytes):
        host = host.decode("ascii")
    kinds = _kinds(port, type, proto)
    if host is None:
        passive = flags & stdlib_socket.AI_PASSIVE
        ips = ["0.0.0.0", "::"] if passive else ["::1", "127.0.0.1"]
    elif canonical_ip(host):
        ips = [host]
    else:
        known = hosts.by_name.get(host.lower().rstrip("."))
        if known is None:
            raise stdlib_socket.gaierror(
                stdlib_socket.EAI_NONAME,
                f"{host!r} is not a name on this VirtualNetwork",
            )
        ips = list(known.addresses)
    results: list[AddrInfo] = []
    for ip in ips:
        parsed = canonical_ip(ip)
        assert parsed is not None
        ip_family = parsed[1]
        if family and ip_family != family:
            continue
        for kind, protocol, number in kinds:
            sockaddr: Sockaddr = (
                (ip, number, 0, 0)
                if ip_family == stdlib_socket.AF_INET6
                else (ip, number)
            )
            results.append(
                (stdlib_socket.AddressFamily(ip_family), kind, protocol, "", sockaddr)
            )
    if not results:
        raise stdlib_socket.gaierror(
            stdlib_socket.EAI_ADDRFAMILY,
            f"{host!r} has no address of family {family!r}",
        )
    return results


def getnameinfo(hosts: Hosts, sockaddr: Sockaddr, flags: int) -> tuple[str, str]:
    """Reverse-resolve like :func:`socket.getnameinfo`, from ``hosts``: the
    port as its service name (``/etc/services``, UDP's with ``NI_DGRAM``)
    unless ``NI_NUMERICSERV``."""
    ip, port = sockaddr[0], sockaddr[1]
    service = str(port)
    if not flags & stdlib_socket.NI_NUMERICSERV:
        protocol = "udp" if flags & stdlib_socket.NI_DGRAM else "tcp"
        with contextlib.suppress(OSError):
            service = stdlib_socket.getservbyport(port, protocol)
    parsed = canonical_ip(ip)
    host = hosts.by_ip.get(parsed[0]) if parsed else None
    if host is None or not host.names or flags & stdlib_socket.NI_NUMERICHOST:
        if flags & stdlib_socket.NI_NAMEREQD:
            raise stdlib_socket.gaierror(stdlib_socket.EAI_NONAME, f"no name for {ip}")
        return ip, service
    return host.names[0], service


class Resolver(trio.abc.HostnameResolver):
    """What ``trio.socket.getaddrinfo`` asks while a network is installed."""

    def __init__(self, hosts: Hosts) -> None:
        self._hosts = hosts

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,  # noqa: A002
        proto: int = 0,
        flags: int = 0,
    ) -> list[_GetAddrInfoEntry]:
        await trio.lowlevel.checkpoint()
        # trio types entries per family with Literal tags; ours are built dynamically.
        return getaddrinfo(self._hosts, host, port, family, type, proto, flags)  # type: ignore[return-value]

    async def getnameinfo(self, sockaddr: Sockaddr, flags: int) -> tuple[str, str]:
        await trio.lowlevel.checkpoint()
        return getnameinfo(self._hosts, sockaddr, flags)
