"""Values that the virtual network, its sockets and its trace share: addresses, hosts, bindings and packets.

Nothing here holds state about a running network, so every other module of
``trioudp.testing`` may import it and it imports none of them.
"""

from __future__ import annotations

import ipaddress
import os
import socket as stdlib_socket
from functools import lru_cache
from typing import NoReturn, Protocol, final

import attrs

__all__ = [
    "NOTHING_ASKED",
    "Asked",
    "Binding",
    "Endpoint",
    "Host",
    "Packet",
    "Sender",
    "canonical_ip",
    "is_loopback",
    "is_multicast",
    "oserror",
    "unmapped",
    "unsupported",
]

#: (ip, port) with the IP in canonical text form.
Endpoint = tuple[str, int]
#: A socket address as Python's socket module gives it: (ip, port) for IPv4,
#: (ip, port, flowinfo, scope_id) for IPv6.
Sockaddr = tuple[str, int] | tuple[str, int, int, int]

#: What ``sendmsg``'s ancillary data asks of one datagram: (source address,
#: TTL, TOS), each None where it asks nothing.
Asked = tuple["str | None", "int | None", "int | None"]
NOTHING_ASKED: Asked = (None, None, None)

IP_HEADER: dict[int, int] = {stdlib_socket.AF_INET: 20, stdlib_socket.AF_INET6: 40}
UDP_HEADER = 8
LIMITED_BROADCAST = "255.255.255.255"
LOOPBACK_BROADCAST = "127.255.255.255"


def oserror(code: int, detail: str = "") -> OSError:
    """An OSError like the kernel's: errno, strerror, and optional detail."""
    message = os.strerror(code) + (f" ({detail})" if detail else "")
    return OSError(code, message)


def unsupported(what: str) -> NoReturn:
    """Refuse, naming it, what virtual sockets do not simulate."""
    msg = f"virtual sockets do not support {what}"
    raise NotImplementedError(msg)


@lru_cache(maxsize=4096)
def canonical_ip(text: str) -> tuple[str, int] | None:
    """``(canonical text, family)`` of a numeric IP, or None if it is not one."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    family = stdlib_socket.AF_INET if ip.version == 4 else stdlib_socket.AF_INET6
    return ip.compressed, family


@lru_cache(maxsize=4096)
def is_loopback(ip: str) -> bool:
    """Whether ``ip`` (canonical) is a loopback address."""
    return ip.startswith("127.") or ip == "::1"


@lru_cache(maxsize=4096)
def is_multicast(ip: str) -> bool:
    """Whether ``ip`` (canonical) is a multicast group."""
    return ipaddress.ip_address(ip).is_multicast


def unmapped(ip: str) -> str | None:
    """The IPv4 address inside an IPv4-mapped IPv6 address, else None."""
    if ":" not in ip:
        return None
    mapped = ipaddress.IPv6Address(ip).ipv4_mapped
    return None if mapped is None else str(mapped)


@final
@attrs.define(eq=False, repr=False)
class Host:
    """A host on a :class:`VirtualNetwork`: a name, addresses and DNS names.

    Made by :meth:`VirtualNetwork.add_host`.

    Example::

        db = net.add_host("10.0.0.2", names=["db.test"])
        assert db.addresses == ("10.0.0.2",)
    """

    name: str
    addresses: tuple[str, ...]
    names: tuple[str, ...] = ()

    def address_of(self, family: int) -> str | None:
        """This host's first address of ``family``, or None."""
        for ip in self.addresses:
            parsed = canonical_ip(ip)
            if parsed is not None and parsed[1] == family:
                return ip
        return None

    def __repr__(self) -> str:
        return f"<Host {self.name} {list(self.addresses)}>"


@final
@attrs.frozen(kw_only=True)
class Binding:
    """Where a socket is bound, as the network knows it (trio's FakeNet
    ``UDPBinding``): what a socket hands the network when it sends, leaves
    or asks for a source address. Made by ``Ports.bind``.

    ``ip`` None is the wildcard; ``address`` is what ``getsockname`` starts
    from (``0.0.0.0`` or ``::`` for the wildcard); ``family`` is the family
    of the table it is in: the socket's for the wildcard, else the address's.
    """

    host: Host
    family: int
    ip: str | None
    port: int
    address: Endpoint


class Sender(Protocol):
    """What a datagram remembers of the socket that sent it: the host it left
    from and where an ICMP error goes back to."""

    @property
    def host(self) -> Host: ...

    def connected_to(self, dst: Endpoint) -> bool:
        """Whether it is open and connected to ``dst`` (Linux reports ICMP
        errors to connected sockets only)."""
        ...

    def refuse(self, code: int = ...) -> None:
        """An ICMP error came back (port unreachable: ``ECONNREFUSED``, the
        default): the pending error ``code``, if still open."""
        ...


@attrs.define(eq=False, slots=True)
class Packet:
    """A datagram on the virtual wire (internal)."""

    id: int
    family: int
    src: Endpoint
    dst: Endpoint
    payload: bytes
    sender: Sender | None
    #: For a multicast or broadcast copy: the host it goes to, and the
    #: interface index it arrives on there.
    to: Host | None = None
    via: int = 0
    #: The IP header's TTL (hop limit) and TOS (traffic class) as sent.
    ttl: int = 64
    tos: int = 0
