"""The hosts of a virtual network: their addresses, subnets and interfaces, and the routes a host sends by.

Every host has ``lo`` (:data:`LOOPBACK_IFINDEX`) and, if it has an address
that is not a loopback one, ``eth0`` (:data:`ETHERNET_IFINDEX`). The whole of
``127.0.0.0/8`` belongs to ``localhost``.

Routes (:meth:`Hosts.route`). A host reaches its own addresses through
``lo``, and everything else through ``eth0``, from its ``eth0`` address (one
on the destination's subnet if it has one), as if one router joined every
subnet and were every host's default route: an address another host owns
is reached, one that no host owns is lost there (``host_unreachable``), in
silence, as with Linux's default route. A host with no ``eth0`` address of
the family has no route: ``ENETUNREACH``. Kept on purpose, so that a test
body on ``localhost`` talks to any host: ``localhost`` without an ``eth0``
address still reaches the addresses other hosts own, from its loopback
address (Linux: ``ENETUNREACH``), and loopback addresses sent to from
another host are ``localhost``'s, reached through ``eth0``.
"""

from __future__ import annotations

import errno
import ipaddress
import socket as stdlib_socket
from typing import TYPE_CHECKING, final

from ._model import (
    LIMITED_BROADCAST,
    LOOPBACK_BROADCAST,
    Host,
    canonical_ip,
    is_loopback,
    oserror,
)
from ._sockopts import ETHERNET_IFINDEX, LOOPBACK_IFINDEX

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._model import Binding

__all__ = ["Hosts"]

_Subnet = ipaddress.IPv4Network | ipaddress.IPv6Network


@final
class Hosts:
    """The hosts of one network, found by address or by name; the first is
    ``localhost``, owning ``127.0.0.1`` and ``::1``."""

    def __init__(self) -> None:
        #: Subnet broadcast address -> the hosts on that subnet.
        self.broadcasts: dict[str, list[Host]] = {
            LOOPBACK_BROADCAST: [],
            LIMITED_BROADCAST: [],
        }
        self.hosts: list[Host] = []
        self.by_ip: dict[str, Host] = {}
        self.by_name: dict[str, Host] = {}
        #: Each host's addresses that carry a prefix, with their subnets.
        self.subnets: dict[Host, list[tuple[str, _Subnet]]] = {}
        # (host, destination, family) -> source: cleared when addresses change.
        self._routes: dict[tuple[Host, str, int], str] = {}
        #: Counts changes to the hosts' addresses: a route remembered from an
        #: earlier version may be wrong (see ``Sock.route_memo``).
        self.version = 0
        self.localhost = self.add(
            ["127.0.0.1", "::1"], names=["localhost"], name="localhost"
        )

    # ---- adding ------------------------------------------------------------

    def add(
        self,
        addresses: str | Iterable[str],
        *,
        names: Iterable[str] = (),
        name: str | None = None,
    ) -> Host:
        """A new host (see :meth:`VirtualNetwork.add_host`)."""
        ips, subnets = self._new_addresses(addresses)
        if not ips:
            msg = "a host needs at least one address"
            raise ValueError(msg)
        host = Host(
            name=name or ips[0],
            addresses=tuple(ips),
            names=tuple(n.lower() for n in names),
        )
        for lookup_name in host.names:
            if lookup_name in self.by_name:
                msg = f"the name {lookup_name!r} belongs to {self.by_name[lookup_name]!r} already"
                raise ValueError(msg)
        self.hosts.append(host)
        self.by_ip.update(dict.fromkeys(ips, host))
        self.by_name.update(dict.fromkeys(host.names, host))
        self._add_subnets(host, subnets)
        return host

    def add_address(self, host: Host, addresses: str | Iterable[str]) -> None:
        """Give ``host`` more addresses (see :meth:`VirtualNetwork.add_address`)."""
        ips, subnets = self._new_addresses(addresses)
        host.addresses = (*host.addresses, *ips)
        self.by_ip.update(dict.fromkeys(ips, host))
        self._add_subnets(host, subnets)

    def _new_addresses(
        self, addresses: str | Iterable[str]
    ) -> tuple[list[str], list[tuple[str, _Subnet]]]:
        ips: list[str] = []
        subnets: list[tuple[str, _Subnet]] = []
        for address in [addresses] if isinstance(addresses, str) else addresses:
            text, slash, prefix = address.partition("/")
            parsed = canonical_ip(text)
            if parsed is None or (slash and not prefix.isdigit()):
                msg = f"host addresses must be numeric IPs, not {address!r}"
                raise ValueError(msg)
            if parsed[0] in self.by_ip or (self.hosts and is_loopback(parsed[0])):
                owner = self.by_ip.get(parsed[0], self.localhost)
                msg = f"{address} belongs to {owner!r} already"
                raise ValueError(msg)
            ips.append(parsed[0])
            if slash:
                subnets.append((parsed[0], ipaddress.ip_network(address, strict=False)))
        return ips, subnets

    def _add_subnets(self, host: Host, subnets: list[tuple[str, _Subnet]]) -> None:
        self._routes.clear()
        self.version += 1
        for address, subnet in subnets:
            self.subnets.setdefault(host, []).append((address, subnet))
            if subnet.version == 4 and subnet.prefixlen < 31:
                hosts = self.broadcasts.setdefault(str(subnet.broadcast_address), [])
                hosts.append(host)

    # ---- finding -----------------------------------------------------------

    def host_of(self, ip: str) -> Host | None:
        """The host owning ``ip`` (canonical); all of 127/8 is ``localhost``'s."""
        found = self.by_ip.get(ip)
        if found is None and ip.startswith("127.") and ip != LOOPBACK_BROADCAST:
            found = self.by_ip[ip] = self.localhost
        return found

    def find(self, address_or_name: str | Host) -> Host:
        """The host owning an address, or known by a name (see
        :meth:`VirtualNetwork.host`)."""
        if isinstance(address_or_name, Host):
            return address_or_name
        parsed = canonical_ip(address_or_name)
        found = (
            self.host_of(parsed[0])
            if parsed
            else self.by_name.get(address_or_name.lower())
        )
        if found is None:
            msg = f"no host on this network has the address or name {address_or_name!r}"
            raise KeyError(msg)
        return found

    def addresses_of(self, host: Host) -> list[str]:
        """Every address ``host`` may have sockets on (127/8 ones once used)."""
        return [ip for ip, owner in self.by_ip.items() if owner is host]

    # ---- interfaces ----------------------------------------------------------

    def iface_address(self, host: Host, ifindex: int, family: int) -> str | None:
        """The address of ``host``'s interface ``ifindex`` (1 lo, 2 eth0), or None."""
        if ifindex == LOOPBACK_IFINDEX:
            return "127.0.0.1" if family == stdlib_socket.AF_INET else "::1"
        if ifindex == ETHERNET_IFINDEX:
            for ip in host.addresses:
                if (":" in ip) == (
                    family == stdlib_socket.AF_INET6
                ) and not is_loopback(ip):
                    return ip
        return None

    def default_iface(self, host: Host, family: int) -> int:
        """Where the host routes multicast: eth0 if it has one, else lo."""
        if self.iface_address(host, ETHERNET_IFINDEX, family) is not None:
            return ETHERNET_IFINDEX
        return LOOPBACK_IFINDEX

    def iface_index(self, host: Host, family: int, address: str, ifindex: int) -> int:
        """The interface an ``ip_mreqn``/``IP_MULTICAST_IF`` names (by index, or
        by address; neither: the default one). ENODEV if the host has none."""
        if ifindex:
            if self.iface_address(host, ifindex, family) is None:
                raise oserror(errno.ENODEV, f"{host.name} has no interface {ifindex}")
            return ifindex
        if address in ("0.0.0.0", "::"):
            return self.default_iface(host, family)
        if is_loopback(address):
            return LOOPBACK_IFINDEX
        if self.by_ip.get(address) is host:
            return ETHERNET_IFINDEX
        raise oserror(errno.ENODEV, f"{host.name} has no interface with {address}")

    # ---- routing ---------------------------------------------------------------

    def source_for(self, binding: Binding, dst_ip: str, family: int) -> str:
        """The source address the "kernel" picks for a socket bound at
        ``binding`` sending to ``dst_ip`` (see :meth:`route`)."""
        if binding.ip is not None:
            if (":" in binding.ip) != (family == stdlib_socket.AF_INET6):
                raise oserror(errno.EAFNOSUPPORT, "bound to an IPv4 address")
            self.route(binding.host, dst_ip, family)
            return binding.ip
        return self.route(binding.host, dst_ip, family)

    def route(self, host: Host, dst_ip: str, family: int) -> str:
        """The source address ``host`` sends from to unicast ``dst_ip``
        (canonical, of ``family``), as the module notes describe.

        Raises:
            OSError: ENETUNREACH, no route.
        """
        key = (host, dst_ip, family)
        source = self._routes.get(key)
        if source is None:
            source = self._routes[key] = self._find_route(host, dst_ip, family)
        return source

    def _find_route(self, host: Host, dst_ip: str, family: int) -> str:
        loopback = "127.0.0.1" if family == stdlib_socket.AF_INET else "::1"
        owner = self.host_of(dst_ip)
        if owner is host:
            # Linux: to an address of its own, from that address (lo).
            return loopback if is_loopback(dst_ip) else dst_ip
        source = self.on_link(host, dst_ip) or self.iface_address(
            host, ETHERNET_IFINDEX, family
        )
        if source is not None:
            return source  # by eth0: a host there, or no one
        if owner is not None and host is self.localhost:
            return loopback
        raise oserror(errno.ENETUNREACH, f"{host.name} has no route to {dst_ip}")

    def on_link(self, host: Host, ip: str) -> str | None:
        """``host``'s address on a subnet that holds ``ip``, or None."""
        subnets = self.subnets.get(host)
        if not subnets:
            return None
        parsed = ipaddress.ip_address(ip)
        for address, subnet in subnets:
            if parsed.version == subnet.version and parsed in subnet:
                return address
        return None
