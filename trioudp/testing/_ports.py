"""Which socket holds which port on which host: binding, choosing an ephemeral port, and finding a datagram's receivers.

Two tables: sockets bound to one address, by ``(ip, port)``; sockets bound
to the wildcard, by ``(host, family, port)``. Each entry is a list, in bind
order, because ``SO_REUSEADDR`` and ``SO_REUSEPORT`` let sockets share.
"""

from __future__ import annotations

import errno
import socket as stdlib_socket
import zlib
from typing import TYPE_CHECKING, final

from ._model import Binding, is_multicast, oserror

if TYPE_CHECKING:
    from ._hosts import Hosts
    from ._model import Endpoint, Host, Packet
    from ._sock import Sock

__all__ = ["Ports"]

_EPHEMERAL_PORTS = range(32768, 61000)  # Linux's default ip_local_port_range


@final
class Ports:
    """The port tables of one network."""

    def __init__(self, hosts: Hosts) -> None:
        self._hosts = hosts
        self.bound: dict[Endpoint, list[Sock]] = {}
        self.wild: dict[tuple[Host, int, int], list[Sock]] = {}
        #: Multicast and broadcast addresses that sockets were bound to.
        self.bound_groups: set[str] = set()
        self._next_port = _EPHEMERAL_PORTS.start

    def bind(self, sock: Sock, ip: str | None, port: int) -> Binding:
        """Register ``sock`` at ``ip`` (None: the wildcard) and ``port`` (0:
        an ephemeral one). EADDRNOTAVAIL, EADDRINUSE as Linux."""
        family = sock.family if ip is None or ":" in ip else stdlib_socket.AF_INET
        if ip is None:
            host = sock.home
        elif ip in self._hosts.broadcasts or is_multicast(ip):
            host = sock.home  # bound to a group: hears it, sends from the host
            self.bound_groups.add(ip)
        else:
            found = self._hosts.host_of(ip)
            if found is None:
                raise oserror(
                    errno.EADDRNOTAVAIL, f"no host on this VirtualNetwork has {ip}"
                )
            host = found
        if port == 0:
            port = self._free_port(host)
        else:
            dual = ip is None and not sock.v6only
            users = self._users(host, family, port, ip, dual=dual)
            if any(not sock.may_share_port(other) for other in users):
                raise oserror(errno.EADDRINUSE, f"port {port} is taken on {host.name}")
        if ip is None:
            self.wild.setdefault((host, family, port), []).append(sock)
            wildcard = "::" if family == stdlib_socket.AF_INET6 else "0.0.0.0"
            return Binding(
                host=host, family=family, ip=None, port=port, address=(wildcard, port)
            )
        self.bound.setdefault((ip, port), []).append(sock)
        return Binding(host=host, family=family, ip=ip, port=port, address=(ip, port))

    def unbind(self, sock: Sock) -> None:
        """Take ``sock`` out of the tables (if it is in them)."""
        binding = sock.binding
        if binding is None:
            return
        table: dict[object, list[Sock]]
        key: object
        if binding.ip is None:
            table, key = self.wild, (binding.host, binding.family, binding.port)  # type: ignore[assignment]
        else:
            table, key = self.bound, (binding.ip, binding.port)  # type: ignore[assignment]
        users = table.get(key, [])
        if sock in users:
            users.remove(sock)
        if not users:
            table.pop(key, None)

    def _users(
        self, host: Host, family: int, port: int, ip: str | None, *, dual: bool
    ) -> list[Sock]:
        """Sockets a bind of ``ip`` (None: wildcard) on ``port`` would clash with.

        ``dual``: the binding socket is an IPv6 wildcard that also takes IPv4.
        """
        users = list(self.wild.get((host, family, port), ()))
        if ip is not None:
            users.extend(self.bound.get((ip, port), ()))
        else:
            # Every address the host may have sockets on (not every socket:
            # binding stays cheap with thousands of them).
            addresses = self._hosts.addresses_of(host)
            for address in (*addresses, *self.bound_groups):
                if (":" in address) == (family == stdlib_socket.AF_INET6):
                    socks = self.bound.get((address, port), ())
                    users.extend(sock for sock in socks if sock.host is host)
        if family == stdlib_socket.AF_INET6 and dual:
            users.extend(
                self._users(host, stdlib_socket.AF_INET, port, None, dual=False)
            )
        elif family == stdlib_socket.AF_INET:
            six = self.wild.get((host, stdlib_socket.AF_INET6, port), ())
            users.extend(sock for sock in six if not sock.v6only)
        return users

    def _free_port(self, host: Host) -> int:
        """The next ephemeral port that no socket of ``host`` uses, in any family."""
        size = len(_EPHEMERAL_PORTS)
        for step in range(size):
            offset = (self._next_port - _EPHEMERAL_PORTS.start + step) % size
            port = _EPHEMERAL_PORTS.start + offset
            if not any(
                self._users(host, family, port, None, dual=True)
                for family in (stdlib_socket.AF_INET, stdlib_socket.AF_INET6)
            ):
                self._next_port = _EPHEMERAL_PORTS.start + (offset + 1) % size
                return port
        raise oserror(errno.EADDRINUSE, "no ephemeral port is free")

    def receiver(self, packet: Packet) -> Sock | None:
        """The socket a unicast datagram goes to, or None (port unreachable)."""
        ip, port = packet.dst
        candidates = self.bound.get(packet.dst)
        if not candidates:
            host = self._hosts.by_ip.get(ip)
            if host is None:
                return None
            candidates = self.wild.get((host, packet.family, port))
            if not candidates and packet.family == stdlib_socket.AF_INET:
                dual = self.wild.get((host, stdlib_socket.AF_INET6, port), [])
                candidates = [sock for sock in dual if not sock.v6only]
        if not candidates:
            return None
        if len(candidates) == 1:
            only = candidates[0]
            return None if only.device and not only.takes(packet) else only
        # SO_BINDTODEVICE: a socket bound to another interface is no match.
        candidates = [sock for sock in candidates if sock.takes(packet)]
        if len(candidates) < 2:
            return candidates[0] if candidates else None
        last = candidates[-1]
        if not last.reuseport:
            return last  # SO_REUSEADDR: Linux gives it all to the last bound
        # SO_REUSEPORT: spread by a stable hash of the source, as Linux does.
        group = [sock for sock in candidates if sock.reuseport]
        key = f"{packet.src[0]}:{packet.src[1]}".encode()
        return group[zlib.crc32(key) % len(group)]

    def on_host(self, host: Host, family: int, group: str, port: int) -> list[Sock]:
        """The sockets of ``host`` that a multicast or broadcast copy to
        ``group`` and ``port`` may reach: wildcard ones, then ones bound to
        the group, before any membership filter."""
        candidates = list(self.wild.get((host, family, port), ()))
        if family == stdlib_socket.AF_INET:
            dual = self.wild.get((host, stdlib_socket.AF_INET6, port), ())
            candidates.extend(sock for sock in dual if not sock.v6only)
        candidates.extend(
            sock for sock in self.bound.get((group, port), ()) if sock.host is host
        )
        return candidates
