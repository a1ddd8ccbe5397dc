"""Multicast and broadcast on a virtual network: memberships, which hosts hear a group datagram, and which of their sockets take it.

A group datagram is sent once and copied to every host that hears it; each
copy (a :class:`Packet` with ``to`` and ``via`` set) then crosses the wire on
its own. Hosts with an ``eth0`` share one segment for multicast and
``255.255.255.255``; a subnet's broadcast address reaches that subnet only;
``127.255.255.255`` stays on the sending host.
"""

from __future__ import annotations

import errno
import socket as stdlib_socket
from typing import TYPE_CHECKING, final

from ._model import (
    LIMITED_BROADCAST,
    LOOPBACK_BROADCAST,
    is_loopback,
    is_multicast,
    oserror,
)
from ._sockopts import ETHERNET_IFINDEX, LOOPBACK_IFINDEX

if TYPE_CHECKING:
    from ._hosts import Hosts
    from ._model import Endpoint, Host, Packet
    from ._ports import Ports
    from ._sock import Sock

__all__ = ["Groups"]


@final
class Groups:
    """The multicast memberships of one network's hosts."""

    def __init__(self, hosts: Hosts, ports: Ports) -> None:
        self._hosts = hosts
        self._ports = ports
        #: (host, group, ifindex) -> how many sockets there joined it.
        self.members: dict[tuple[Host, str, int], int] = {}

    def join(self, sock: Sock, group: str, ifindex: int, *, join: bool) -> None:
        """``IP_ADD_MEMBERSHIP`` (``join``) or ``IP_DROP_MEMBERSHIP``."""
        key = (sock.host, group, ifindex)
        if join:
            if (group, ifindex) in sock.groups:
                raise oserror(errno.EADDRINUSE, f"{group} joined already")
            sock.groups.add((group, ifindex))
            self.members[key] = self.members.get(key, 0) + 1
            return
        if (group, ifindex) not in sock.groups:
            raise oserror(errno.EADDRNOTAVAIL, f"{group} was not joined")
        sock.groups.discard((group, ifindex))
        self.members[key] -= 1
        if not self.members[key]:
            del self.members[key]

    def multicast_iface(self, sock: Sock, family: int) -> int:
        """The interface ``sock``'s multicast leaves by (0: the host's default)."""
        if family == stdlib_socket.AF_INET6:
            return sock.multicast_if6
        address, ifindex = sock.multicast_if4
        if address == "0.0.0.0" and not ifindex:
            return 0
        return self._hosts.iface_index(sock.host, family, address, ifindex)

    def copies(
        self, sock: Sock, dst: Endpoint, family: int, source: str | None
    ) -> tuple[Endpoint, list[tuple[Host, int]]]:
        """Where a datagram from ``sock`` to a group or broadcast address
        goes: its source endpoint, and each (host, arrival interface) that
        gets a copy. ``source``: the one ``sendmsg`` asked for, if any.

        Raises:
            OSError: ENETUNREACH (no eth0 for a broadcast), EACCES (broadcast
                without SO_BROADCAST), ENODEV (a multicast interface gone),
                EINVAL (a loopback source on eth0).
        """
        hosts = self._hosts
        host = sock.host
        group = dst[0]
        targets: list[tuple[Host, int]]
        if group in hosts.broadcasts:
            bound = source or (sock.binding.ip if sock.binding else None)
            if group == LOOPBACK_BROADCAST or (
                group == LIMITED_BROADCAST and bound is not None and is_loopback(bound)
            ):
                # From a loopback address, Linux routes 255.255.255.255 by lo.
                ifindex, targets = LOOPBACK_IFINDEX, [(host, LOOPBACK_IFINDEX)]
            else:
                ifindex = ETHERNET_IFINDEX
                if hosts.iface_address(host, ifindex, family) is None:
                    raise oserror(errno.ENETUNREACH, f"{host.name} has no eth0")
                hearing = hosts.broadcasts[group] or [
                    other
                    for other in hosts.hosts
                    if hosts.iface_address(other, ifindex, family) is not None
                ]
                targets = [(other, ifindex) for other in hearing]
            if not sock.opt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_BROADCAST):
                raise oserror(errno.EACCES, "broadcast needs SO_BROADCAST")
        else:
            ifindex = self.multicast_iface(sock, family) or hosts.default_iface(
                host, family
            )
            ttl, loop = sock.multicast_ttl_loop(family)
            targets = []
            if ifindex == LOOPBACK_IFINDEX or loop:
                targets.append((host, ifindex))
            if ifindex == ETHERNET_IFINDEX and ttl > 0:
                targets.extend(
                    (other, ifindex)
                    for other in hosts.hosts
                    if other is not host
                    and hosts.iface_address(other, ifindex, family) is not None
                )
        binding = sock.binding
        assert binding is not None
        if source is None:
            bound = binding.ip
            if bound is None or bound in hosts.broadcasts or is_multicast(bound):
                source = hosts.iface_address(host, ifindex, family)
            else:
                source = bound
        if ifindex == ETHERNET_IFINDEX and is_loopback(source):
            raise oserror(errno.EINVAL, f"{source} cannot send on eth0")
        assert source is not None
        return (source, binding.port), targets

    def receivers(self, packet: Packet) -> list[Sock]:
        """The sockets of its host that take a multicast or broadcast copy."""
        host, via = packet.to, packet.via
        assert host is not None
        group, port = packet.dst
        candidates = self._ports.on_host(host, packet.family, group, port)
        candidates = [sock for sock in candidates if sock.takes(packet)]
        if is_multicast(group):
            joined = (host, group, via) in self.members
            candidates = [sock for sock in candidates if sock.hears(group, via, joined)]
        return candidates
