"""Name lookups on a virtual network, answered from its hosts (never real DNS)."""

from __future__ import annotations

import socket as stdlib_socket
from typing import TYPE_CHECKING

import trio

from ._model import Sockaddr, canonical_ip

if TYPE_CHECKING:
    from trio._socket import _GetAddrInfoEntry

    from ._hosts import Hosts

__all__ = ["AddrInfo", "Resolver", "getaddrinfo", "getnameinfo"]

AddrInfo = tuple[
    stdlib_socket.AddressFamily, stdlib_socket.SocketKind, int, str, Sockaddr
]


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
    if isinstance(port, bytes):
        port = port.decode("ascii")
    try:
        port_number = int(port or 0)
    except ValueError as exc:
        raise stdlib_socket.gaierror(
            stdlib_socket.EAI_SERVICE, f"unknown service {port!r}"
        ) from exc
    if host is None:
        passive = flags & stdlib_socket.AI_PASSIVE
        ips = ["::", "0.0.0.0"] if passive else ["::1", "127.0.0.1"]
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
        sockaddr: Sockaddr = (
            (ip, port_number, 0, 0)
            if ip_family == stdlib_socket.AF_INET6
            else (ip, port_number)
        )
        results.append(
            (
                stdlib_socket.AddressFamily(ip_family),
                stdlib_socket.SocketKind(type or stdlib_socket.SOCK_DGRAM),
                proto or stdlib_socket.IPPROTO_UDP,
                "",
                sockaddr,
            )
        )
    if not results:
        raise stdlib_socket.gaierror(
            stdlib_socket.EAI_ADDRFAMILY,
            f"{host!r} has no address of family {family!r}",
        )
    return results


def getnameinfo(hosts: Hosts, sockaddr: Sockaddr, flags: int) -> tuple[str, str]:
    """Reverse-resolve like :func:`socket.getnameinfo`, from ``hosts``."""
    ip, port = sockaddr[0], sockaddr[1]
    parsed = canonical_ip(ip)
    host = hosts.by_ip.get(parsed[0]) if parsed else None
    if host is None or not host.names or flags & stdlib_socket.NI_NUMERICHOST:
        if flags & stdlib_socket.NI_NAMEREQD:
            raise stdlib_socket.gaierror(stdlib_socket.EAI_NONAME, f"no name for {ip}")
        return ip, str(port)
    return host.names[0], str(port)


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
