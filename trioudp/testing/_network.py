"""VirtualNetwork: an in-memory UDP network for Trio programs, exact and seeded.

Model. The network is a set of hosts, each owning some IP addresses; the
default host ``localhost`` owns ``127.0.0.1`` and ``::1``. A socket bound to
a specific address lives on the host that owns it; a socket bound to a
wildcard (or never bound) lives on its *home* host: ``localhost``, or the host
named by :meth:`VirtualNetwork.on_host` where the socket was created.

Time. Datagrams travel on the Trio clock. A datagram with no delay is
delivered inside ``sendto``; delayed ones wait in a heap that one Trio
system task (started on first need) delivers at their due time, so under
``MockClock(autojump_threshold=0)`` a test with seconds of latency takes
milliseconds. One ``random.Random(seed)`` drives every random choice of
the network.

Fidelity. Virtual sockets do what Linux does with the same calls (the
conformance suite, ``tests/testing/test_conformance.py``, runs the same
assertions on real loopback sockets, and in a network namespace for
multicast and broadcast). The whole of ``127.0.0.0/8`` belongs to
``localhost``. Every host has ``lo`` (interface index 1) and, if it has an
address that is not a loopback one, ``eth0`` (index 2). As on Linux,
``IP_PKTINFO``/``IPV6_RECVPKTINFO`` name the interface that owns the
destination address: ``lo`` only for a loopback address and a sender on the
same host; ``eth0`` for a host's other addresses and for every datagram from
another host. Addresses may carry
a prefix (``"10.0.0.2/24"``): hosts on one subnet hear its broadcasts; all
hosts with an ``eth0`` share one segment for multicast and ``255.255.255.255``.

Kept differences, on purpose: loopback addresses belong to ``localhost``
only (a socket on another host that sends to ``127.0.0.1`` reaches
``localhost``, arriving on ``eth0``; Linux would keep it on the sender's
host); a host with no ``eth0`` sends multicast through ``lo``, and ``lo``
carries IPv6 multicast too (Linux's does not); ``shutdown(SHUT_RD)`` leaves a
receive waiting (on Linux, Trio's receive spins on an empty queue); an open
socket's ``fileno()`` is :data:`VIRTUAL_FILENO`, a number Linux never gives a
descriptor, so that code which checks ``fileno() < 0`` works and code that
uses it as a descriptor fails with ``EBADF``; socket options and ancillary
data that the table in ``_sockopts`` does not know raise NotImplementedError;
``SO_TIMESTAMPNS`` stamps are virtual time since :data:`TIMESTAMP_EPOCH`.

Determinism. While installed, the network also seeds the rest of the run
from its seed: Trio's scheduler orders each batch of runnable tasks by
creation order and a generator derived from the seed (Trio's own
deterministic-scheduling hook, see ``trioudp._trio_private``), and trioudp's
clients draw their retransmission jitter from another derived generator
(``trioudp._rng``). Same seed and program under the autojump clock: the same
schedule and a byte-identical trace, in any process and under any
``PYTHONHASHSEED``. On uninstall Trio's scheduler is restored as it was.

Invariants:
    * The wire task's wake-up callback (its abort function) runs inside
      Trio's deadline processing and delivers due datagrams there, so
      receivers wake in the same scheduler pass as the wire task. Everything
      it reaches (``_deliver_due`` → ``_arrive`` → ``VirtualSocket._accept``)
      is synchronous, never raises and only queues datagrams and reschedules
      tasks; an exception there would be a TrioInternalError. It delivers
      only when its own deadline has come: any other cancellation (uninstall,
      the end of the run) ends the wire task with Cancelled, as a sleep
      would, and what is still in flight is dropped (``uninstalled``) by
      ``install``'s exit.
    * A trace entry holds only immutable atoms (see ``_Entry``).
"""

from __future__ import annotations

import contextvars
import errno
import heapq
import ipaddress
import math
import os
import random
import socket as stdlib_socket
import zlib
from collections import deque
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, ClassVar, final

import attrs
import trio

from .._rng import lend_randomness
from .._trio_private import BatchShuffler, deterministic_scheduling
from ._links import LinkPolicy, plan_fate
from ._pcap import PCAP_EPOCH
from ._pcap import write_pcap as _write_pcap
from ._sockopts import ETHERNET_IFINDEX, LOOPBACK_IFINDEX
from ._sockopts import IP_MULTICAST_ALL as _IP_MULTICAST_ALL

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from trio._socket import _GetAddrInfoEntry

    from ._vsocket import VirtualSocket

__all__ = ["Host", "NetworkStats", "TraceEvent", "VirtualNetwork"]

#: (ip, port) with the IP in canonical text form.
Endpoint = tuple[str, int]

_IP_HEADER: dict[int, int] = {stdlib_socket.AF_INET: 20, stdlib_socket.AF_INET6: 40}
_UDP_HEADER = 8
_EPHEMERAL_PORTS = range(32768, 61000)  # Linux's default ip_local_port_range
_LINUX_RMEM_MAX = 212_992  # net.core.rmem_max / wmem_max by default
_LIMITED_BROADCAST = "255.255.255.255"
_LOOPBACK_BROADCAST = "127.255.255.255"

#: Where the wall-clock of ``SO_TIMESTAMP(NS)`` ancillary data starts:
#: 2000-01-01T00:00:00Z, plus the network's virtual time.
TIMESTAMP_EPOCH = 946_684_800.0

#: How many events :attr:`VirtualNetwork.trace` keeps by default (the latest).
DEFAULT_TRACE_LIMIT = 100_000


def oserror(code: int, detail: str = "") -> OSError:
    """An OSError like the kernel's: errno, strerror, and optional detail."""
    message = os.strerror(code) + (f" ({detail})" if detail else "")
    return OSError(code, message)


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


@attrs.frozen(kw_only=True)
class TraceEvent:
    """One thing that happened on the network, at a virtual time.

    Kinds: ``send``, ``deliver``, ``drop`` (with a ``reason``: ``loss``,
    ``partition``, ``mtu``, ``rcvbuf``, ``port_unreachable``, ``no_route``,
    ``filtered``, ``closed``, ``uninstalled``, ``no_receiver``: a multicast
    or broadcast copy that no socket of its host takes), ``duplicate``, ``hold``,
    ``release`` and ``icmp`` (an unreachable report on its way back).
    ``str(event)`` is one stable line; equal traces print equal text.

    Example:
        >>> e = TraceEvent(time=0.5, kind="send", packet=1, src=("127.0.0.1", 1),
        ...                dst=("127.0.0.1", 2), size=3)
        >>> str(e)
        '0.500000000 send      #1 127.0.0.1:1 > 127.0.0.1:2 3B'
    """

    time: float
    kind: str
    packet: int
    src: Endpoint
    dst: Endpoint
    size: int
    reason: str | None = None
    payload: bytes = attrs.field(default=b"", repr=False, eq=False)

    def __str__(self) -> str:
        reason = f" {self.reason}" if self.reason else ""
        return (
            f"{self.time:.9f} {self.kind:<9} #{self.packet}"
            f" {_show(self.src)} > {_show(self.dst)} {self.size}B{reason}"
        )


def _show(endpoint: Endpoint) -> str:
    ip, port = endpoint
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@attrs.frozen(kw_only=True)
class NetworkStats:
    """Counters of a :class:`VirtualNetwork`.

    Example:
        >>> NetworkStats().dropped_total
        0
    """

    sent: int = 0
    delivered: int = 0
    duplicated: int = 0
    held: int = 0
    dropped: dict[str, int] = attrs.field(factory=dict)

    @property
    def dropped_total(self) -> int:
        """Datagrams dropped, whatever the reason."""
        return sum(self.dropped.values())


@attrs.define(eq=False, slots=True)
class Packet:
    """A datagram on the virtual wire (internal)."""

    id: int
    family: int
    src: Endpoint
    dst: Endpoint
    payload: bytes
    sender: VirtualSocket | None
    #: For a multicast or broadcast copy: the host it goes to, and the
    #: interface index it arrives on there.
    to: Host | None = None
    via: int = 0


#: A trace entry as stored: (clock time, kind, packet id, src, dst, payload,
#: reason). TraceEvents are built on read, with times from the epoch. Only
#: immutable atoms inside, so the garbage collector untracks entries after one
#: pass instead of rescanning a long trace on every collection; the events of
#: one datagram share its addresses and payload.
_Entry = tuple[float, str, int, Endpoint, Endpoint, bytes, "str | None"]


def _event(entry: _Entry, epoch: float) -> TraceEvent:
    time, kind, packet, src, dst, payload, reason = entry
    return TraceEvent(
        time=time - epoch,
        kind=kind,
        packet=packet,
        src=src,
        dst=dst,
        size=len(payload),
        reason=reason,
        payload=payload,
    )


class _Factory(trio.abc.SocketFactory):
    def __init__(self, net: VirtualNetwork) -> None:
        self._net = net

    def socket(
        self,
        family: stdlib_socket.AddressFamily | int = stdlib_socket.AF_INET,
        type: stdlib_socket.SocketKind | int = stdlib_socket.SOCK_STREAM,  # noqa: A002
        proto: int = 0,
    ) -> trio.socket.SocketType:
        return self._net._new_socket(family, type, proto)


class _Resolver(trio.abc.HostnameResolver):
    def __init__(self, net: VirtualNetwork) -> None:
        self._net = net

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
        return self._net.getaddrinfo(host, port, family, type, proto, flags)  # type: ignore[return-value]

    async def getnameinfo(
        self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int
    ) -> tuple[str, str]:
        await trio.lowlevel.checkpoint()
        return self._net.getnameinfo(sockaddr, flags)


@final
class VirtualNetwork:
    """A seeded, in-memory UDP network that unmodified Trio code runs on.

    Args:
        seed: seeds the one ``random.Random`` behind every random choice.
        latency, jitter, loss, duplicate, reorder, mtu: the default
            :class:`LinkPolicy` of every link (see there).
        record: keep :attr:`trace` (and payloads for :meth:`write_pcap`).
        rmem_max, wmem_max: Linux's ``net.core.rmem_max``/``wmem_max``, the
            most ``SO_RCVBUF``/``SO_SNDBUF`` take (then doubled, as Linux does).
        trace_limit: keep only the latest this many events (default
            ``DEFAULT_TRACE_LIMIT``, 100,000), or None for all. An event
            costs about 80 bytes plus its share of the payload, which the
            events of one datagram share and which is kept as long as one
            of them is (131 bytes an event with 64-byte payloads, measured
            by ``benchmarks/virtual_network.py``: 13 MB at the default).

    Use it inside ``trio.run`` with :meth:`install`; every
    ``trio.socket.socket(AF_INET or AF_INET6, SOCK_DGRAM)`` is then virtual.

    Every host's interfaces have fixed indexes, :attr:`LOOPBACK_IFINDEX` (1,
    ``lo``) and :attr:`ETHERNET_IFINDEX` (2, ``eth0``): the ``ipi_ifindex`` of
    ``IP_PKTINFO`` and ``ipi6_ifindex`` of ``IPV6_PKTINFO``, and what
    ``ip_mreqn``, ``ipv6_mreq`` and ``IPV6_MULTICAST_IF`` take.

    Example::

        net = VirtualNetwork(seed=1, latency=0.05, loss=0.2)
        with net.install():
            async with trio.open_nursery() as nursery:
                server = await nursery.start(trioudp.serve_udp, handler, 0)
                ...
        print(net.stats.dropped)
    """

    LOOPBACK_IFINDEX: ClassVar[int] = LOOPBACK_IFINDEX
    ETHERNET_IFINDEX: ClassVar[int] = ETHERNET_IFINDEX

    def __init__(
        self,
        seed: int = 0,
        *,
        latency: float = 0.0,
        jitter: float = 0.0,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        mtu: int | None = None,
        record: bool = True,
        rmem_max: int = _LINUX_RMEM_MAX,
        wmem_max: int = _LINUX_RMEM_MAX,
        trace_limit: int | None = DEFAULT_TRACE_LIMIT,
    ) -> None:
        if trace_limit is not None and trace_limit < 1:
            msg = f"trace_limit must be a positive count or None, not {trace_limit!r}"
            raise ValueError(msg)
        self.seed = seed
        self._rng = random.Random(seed)
        # Separate streams (str seeds hash with SHA-512, not hash()), so the
        # scheduler's and clients' draws never shift the network's fates.
        self._scheduler_rng = BatchShuffler(f"trio-scheduler/{seed}")
        self._client_rng = random.Random(f"trioudp-clients/{seed}")
        self._policy = LinkPolicy(
            latency=latency,
            jitter=jitter,
            loss=loss,
            duplicate=duplicate,
            reorder=reorder,
            mtu=mtu,
        )
        self._links: dict[frozenset[Host], LinkPolicy] = {}
        #: The most SO_RCVBUF/SO_SNDBUF take (Linux's net.core.rmem_max, wmem_max).
        self.rmem_max = rmem_max
        self.wmem_max = wmem_max
        #: Subnet broadcast address -> the hosts on that subnet.
        self._broadcasts: dict[str, list[Host]] = {
            _LOOPBACK_BROADCAST: [],
            _LIMITED_BROADCAST: [],
        }
        #: (host, group, ifindex) -> how many sockets there joined it.
        self._members: dict[tuple[Host, str, int], int] = {}
        #: Multicast and broadcast addresses that sockets were bound to.
        self._bound_groups: set[str] = set()
        self._hosts: list[Host] = []
        self._host_by_ip: dict[str, Host] = {}
        self._host_by_name: dict[str, Host] = {}
        self.localhost = self.add_host(
            ["127.0.0.1", "::1"], names=["localhost"], name="localhost"
        )
        self._home: contextvars.ContextVar[Host | None] = contextvars.ContextVar(
            f"trioudp-home-{id(self)}", default=None
        )
        self._bound: dict[Endpoint, list[VirtualSocket]] = {}
        self._wild: dict[tuple[Host, int, int], list[VirtualSocket]] = {}
        self._next_port = _EPHEMERAL_PORTS.start
        self._partitions: set[frozenset[Host]] = set()
        self._holds: set[frozenset[Host]] = set()
        self._hold_all = False
        self._held: list[Packet] = []
        self._record = record
        self._epoch: float | None = None
        # The clock's own current_time, bound at install: trio.current_time()
        # costs two more calls per trace event.
        self._clock_time: Callable[[], float] = trio.current_time
        # Set while one send runs: the time of everything it causes at once.
        self._instant: float | None = None
        self._trace: deque[_Entry] = deque(maxlen=trace_limit)
        self._policy_seen: LinkPolicy | None = None
        self._policy_seen_instant = False
        self._packets = 0
        self._sent = 0
        self._delivered = 0
        self._duplicated = 0
        self._held_count = 0
        self._dropped: dict[str, int] = {}
        self._wire: list[tuple[float, int, Packet, int]] = []
        self._wire_seq = 0
        self._wire_scope: trio.CancelScope | None = None
        self._wire_task_scope: trio.CancelScope | None = None
        self._installed = False

    # ---- installing -------------------------------------------------------

    @contextmanager
    def install(self) -> Iterator[VirtualNetwork]:
        """Route ``trio.socket`` UDP sockets and name lookups through this network.

        Must be called inside ``trio.run``; restores the previous socket
        factory and resolver on exit. Datagrams still in flight then are
        dropped (reason ``uninstalled``).

        While installed, Trio's scheduler and trioudp's clients draw from
        generators derived from :attr:`seed`, so a program with many tasks
        replays exactly; Trio's scheduler is restored on exit.

        Raises:
            RuntimeError: it is installed already.
        """
        if self._installed:
            msg = "this VirtualNetwork is installed already"
            raise RuntimeError(msg)
        old_factory = trio.socket.set_custom_socket_factory(_Factory(self))
        old_resolver = trio.socket.set_custom_hostname_resolver(_Resolver(self))
        self._installed = True
        if self._epoch is None:
            self._epoch = trio.current_time()
        self._clock_time = trio.lowlevel.current_clock().current_time
        try:
            with (
                deterministic_scheduling(self._scheduler_rng),
                lend_randomness(self._client_rng),
            ):
                yield self
        finally:
            trio.socket.set_custom_socket_factory(old_factory)
            trio.socket.set_custom_hostname_resolver(old_resolver)
            self._installed = False
            wire_task_scope, self._wire_task_scope = self._wire_task_scope, None
            self._wire_scope = None
            if wire_task_scope is not None:
                wire_task_scope.cancel()
            for _, _, packet, _ in self._wire:
                self._drop(packet, "uninstalled")
            self._wire.clear()

    def _new_socket(
        self, family: int, type_: int, proto: int
    ) -> trio.socket.SocketType:
        from ._vsocket import VirtualSocket

        if family not in (stdlib_socket.AF_INET, stdlib_socket.AF_INET6):
            msg = f"VirtualNetwork only makes AF_INET and AF_INET6 sockets, not family={family!r}"
            raise OSError(errno.EAFNOSUPPORT, msg)
        if (
            type_
            & ~(
                getattr(stdlib_socket, "SOCK_NONBLOCK", 0)
                | getattr(stdlib_socket, "SOCK_CLOEXEC", 0)
            )
            != stdlib_socket.SOCK_DGRAM
        ):
            msg = f"VirtualNetwork only makes UDP (SOCK_DGRAM) sockets, not type={type_!r}; TCP is not simulated"
            raise OSError(errno.EPROTONOSUPPORT, msg)
        if proto not in (0, stdlib_socket.IPPROTO_UDP):
            msg = f"VirtualNetwork only makes UDP sockets, not proto={proto!r}"
            raise OSError(errno.EPROTONOSUPPORT, msg)
        return VirtualSocket._create(
            self, family, self._home.get() or self.localhost, proto
        )

    # ---- hosts and names --------------------------------------------------

    def add_host(
        self,
        addresses: str | Iterable[str],
        *,
        names: Iterable[str] = (),
        name: str | None = None,
    ) -> Host:
        """Add a host owning ``addresses``, found by ``names`` in name lookups.

        An address may carry a prefix length (``"10.0.0.2/24"``): the host
        then hears that subnet's broadcasts (``10.0.0.255``).

        Example::

            net.add_host("10.0.0.2", names=["db.test"])
            net.add_host(["10.0.0.3/24", "fd00::3"])
        """
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
            if lookup_name in self._host_by_name:
                msg = f"the name {lookup_name!r} belongs to {self._host_by_name[lookup_name]!r} already"
                raise ValueError(msg)
        self._hosts.append(host)
        self._host_by_ip.update(dict.fromkeys(ips, host))
        self._host_by_name.update(dict.fromkeys(host.names, host))
        self._add_subnets(host, subnets)
        return host

    def add_address(self, host: str | Host, addresses: str | Iterable[str]) -> None:
        """Give an existing host more addresses (with optional prefix lengths).

        Example::

            net.add_address(net.localhost, "10.0.0.1/24")  # localhost gets an eth0
        """
        found = self.host(host)
        ips, subnets = self._new_addresses(addresses)
        found.addresses = (*found.addresses, *ips)
        self._host_by_ip.update(dict.fromkeys(ips, found))
        self._add_subnets(found, subnets)

    def _new_addresses(
        self, addresses: str | Iterable[str]
    ) -> tuple[list[str], list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
        ips: list[str] = []
        subnets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for address in [addresses] if isinstance(addresses, str) else addresses:
            text, slash, prefix = address.partition("/")
            parsed = canonical_ip(text)
            if parsed is None or (slash and not prefix.isdigit()):
                msg = f"host addresses must be numeric IPs, not {address!r}"
                raise ValueError(msg)
            if parsed[0] in self._host_by_ip or (
                self._hosts and is_loopback(parsed[0])
            ):
                owner = self._host_by_ip.get(parsed[0], self.localhost)
                msg = f"{address} belongs to {owner!r} already"
                raise ValueError(msg)
            ips.append(parsed[0])
            if slash:
                subnets.append(ipaddress.ip_network(address, strict=False))
        return ips, subnets

    def _add_subnets(
        self,
        host: Host,
        subnets: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    ) -> None:
        for subnet in subnets:
            if subnet.version == 4 and subnet.prefixlen < 31:
                hosts = self._broadcasts.setdefault(str(subnet.broadcast_address), [])
                hosts.append(host)

    def _host_of(self, ip: str) -> Host | None:
        """The host owning ``ip`` (canonical); all of 127/8 is ``localhost``'s."""
        found = self._host_by_ip.get(ip)
        if found is None and ip.startswith("127.") and ip != _LOOPBACK_BROADCAST:
            found = self._host_by_ip[ip] = self.localhost
        return found

    def host(self, address_or_name: str | Host) -> Host:
        """The host owning an address, or known by a name.

        Raises:
            KeyError: no host has it.
        """
        if isinstance(address_or_name, Host):
            return address_or_name
        parsed = canonical_ip(address_or_name)
        found = (
            self._host_of(parsed[0])
            if parsed
            else self._host_by_name.get(address_or_name.lower())
        )
        if found is None:
            msg = f"no host on this network has the address or name {address_or_name!r}"
            raise KeyError(msg)
        return found

    @contextmanager
    def on_host(self, host: str | Host) -> Iterator[Host]:
        """Make ``host`` the home of sockets created in this block (and in
        tasks started from it): their wildcard binds and source addresses
        are that host's.

        Example::

            with net.on_host("10.0.0.2"):
                nursery.start_soon(run_client)   # its sockets live on 10.0.0.2
        """
        found = self.host(host)
        token = self._home.set(found)
        try:
            yield found
        finally:
            self._home.reset(token)

    def getaddrinfo(
        self,
        host: bytes | str | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,  # noqa: A002
        proto: int = 0,
        flags: int = 0,
    ) -> list[
        tuple[
            stdlib_socket.AddressFamily,
            stdlib_socket.SocketKind,
            int,
            str,
            tuple[str, int] | tuple[str, int, int, int],
        ]
    ]:
        """Resolve like :func:`socket.getaddrinfo`, from this network's hosts.

        Raises:
            socket.gaierror: the name is unknown here (``EAI_NONAME``).
        """
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
            known = self._host_by_name.get(host.lower().rstrip("."))
            if known is None:
                raise stdlib_socket.gaierror(
                    stdlib_socket.EAI_NONAME,
                    f"{host!r} is not a name on this VirtualNetwork",
                )
            ips = list(known.addresses)
        results = []
        for ip in ips:
            parsed = canonical_ip(ip)
            assert parsed is not None
            ip_family = parsed[1]
            if family and ip_family != family:
                continue
            sockaddr: tuple[str, int] | tuple[str, int, int, int] = (
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

    def getnameinfo(
        self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int
    ) -> tuple[str, str]:
        """Reverse-resolve like :func:`socket.getnameinfo`, from this network's hosts."""
        ip, port = sockaddr[0], sockaddr[1]
        parsed = canonical_ip(ip)
        host = self._host_by_ip.get(parsed[0]) if parsed else None
        if host is None or not host.names or flags & stdlib_socket.NI_NUMERICHOST:
            if flags & stdlib_socket.NI_NAMEREQD:
                raise stdlib_socket.gaierror(
                    stdlib_socket.EAI_NONAME, f"no name for {ip}"
                )
            return ip, str(port)
        return host.names[0], str(port)

    # ---- link behaviour ---------------------------------------------------

    @property
    def policy(self) -> LinkPolicy:
        """The default :class:`LinkPolicy` of every link."""
        return self._policy

    def configure(self, **settings: float | None) -> None:
        """Change default link settings while the network runs.

        Example::

            net.configure(loss=0.3, latency=0.02)
        """
        self._policy = self._policy.evolve(**settings)

    def set_link(self, a: str | Host, b: str | Host, **settings: float | None) -> None:
        """Give the link between hosts ``a`` and ``b`` (both ways) its own policy,
        starting from the default one. ``a`` may equal ``b``.

        Example::

            net.set_link("10.0.0.1", "10.0.0.2", latency=0.1, loss=0.05)
        """
        self._links[frozenset((self.host(a), self.host(b)))] = self._policy.evolve(
            **settings
        )

    def link(self, a: str | Host, b: str | Host) -> LinkPolicy:
        """The policy in force between hosts ``a`` and ``b``."""
        return self._links.get(frozenset((self.host(a), self.host(b))), self._policy)

    def partition(self, a: str | Host, b: str | Host) -> None:
        """Drop every datagram between hosts ``a`` and ``b`` (both ways) until :meth:`heal`."""
        self._partitions.add(frozenset((self.host(a), self.host(b))))

    def heal(self, a: str | Host | None = None, b: str | Host | None = None) -> None:
        """End the partition between ``a`` and ``b``, or every partition."""
        if a is None or b is None:
            self._partitions.clear()
        else:
            self._partitions.discard(frozenset((self.host(a), self.host(b))))

    def hold(self, a: str | Host | None = None, b: str | Host | None = None) -> None:
        """Keep datagrams between ``a`` and ``b`` (or all) on the wire until :meth:`release`."""
        if a is None or b is None:
            self._hold_all = True
        else:
            self._holds.add(frozenset((self.host(a), self.host(b))))

    def release(self, a: str | Host | None = None, b: str | Host | None = None) -> None:
        """Stop holding (between ``a`` and ``b``, or everywhere) and send the held
        datagrams on, each with its link's delay counted from now."""
        if a is None or b is None:
            self._hold_all = False
            self._holds.clear()
        else:
            self._holds.discard(frozenset((self.host(a), self.host(b))))
        still_held = []
        for packet in self._held:
            pair = self._pair(packet)
            if pair is not None and self._is_held(pair):
                still_held.append(packet)
            else:
                self._record_event("release", packet)
                self._route(packet, pair)
        self._held = still_held

    @property
    def held(self) -> int:
        """How many datagrams are held now."""
        return len(self._held)

    # ---- observing --------------------------------------------------------

    def now(self) -> float:
        """Seconds on the Trio clock since this network was first installed
        (the time base of :attr:`trace`)."""
        return trio.current_time() - (self._epoch or 0.0)

    @property
    def trace(self) -> list[TraceEvent]:
        """The events so far in order, all of them or the latest
        ``trace_limit`` (empty when ``record=False``)."""
        epoch = self._epoch or 0.0
        return [_event(entry, epoch) for entry in self._trace]

    def trace_text(self) -> str:
        """The trace as text, one event a line; same seed and program, same text."""
        epoch = self._epoch or 0.0
        return "".join(f"{_event(entry, epoch)}\n" for entry in self._trace)

    @property
    def stats(self) -> NetworkStats:
        """A snapshot of the counters."""
        return NetworkStats(
            sent=self._sent,
            delivered=self._delivered,
            duplicated=self._duplicated,
            held=self._held_count,
            dropped=dict(self._dropped),
        )

    def write_pcap(
        self, path: str | os.PathLike[str], *, epoch: float = PCAP_EPOCH
    ) -> int:
        """Write the trace as a pcapng capture; returns how many packets it holds.

        What crossed the wire, with synthesised IP, UDP and ICMP headers, each
        packet commented with its fate (delivered, dropped and why, held,
        duplicated); datagrams that never left their host (``mtu``,
        ``no_route``) are only in the trace. Virtual time 0 is written as
        ``epoch`` (default 2000-01-01 UTC). ``tcpdump -r`` and Wireshark read
        it; ``tshark -V`` shows the comments. See :func:`write_pcap`.

        Raises:
            RuntimeError: the network was made with ``record=False``, so it
                kept nothing to write (no file is created).

        Example::

            net.write_pcap(tmp_path / "run.pcapng")
        """
        if not self._record:
            msg = (
                "this VirtualNetwork was made with record=False and kept no"
                " packets; make it with record=True to write a capture"
            )
            raise RuntimeError(msg)
        events = self.trace
        with open(path, "wb") as file:
            return _write_pcap(file, events, epoch=epoch)

    # ---- sockets' side ----------------------------------------------------

    def _users(
        self, host: Host, family: int, port: int, ip: str | None, *, dual: bool
    ) -> list[VirtualSocket]:
        """Sockets a bind of ``ip`` (None: wildcard) on ``port`` would clash with.

        ``dual``: the binding socket is an IPv6 wildcard that also takes IPv4.
        """
        users = list(self._wild.get((host, family, port), ()))
        if ip is not None:
            users.extend(self._bound.get((ip, port), ()))
        else:
            # Every address the host may have sockets on (not every socket:
            # binding stays cheap with thousands of them).
            addresses = [ip for ip, owner in self._host_by_ip.items() if owner is host]
            for address in (*addresses, *self._bound_groups):
                if (":" in address) == (family == stdlib_socket.AF_INET6):
                    socks = self._bound.get((address, port), ())
                    users.extend(sock for sock in socks if sock._host is host)
        if family == stdlib_socket.AF_INET6 and dual:
            users.extend(
                self._users(host, stdlib_socket.AF_INET, port, None, dual=False)
            )
        elif family == stdlib_socket.AF_INET:
            six = self._wild.get((host, stdlib_socket.AF_INET6, port), ())
            users.extend(sock for sock in six if not sock._v6only)
        return users

    def _bind(self, sock: VirtualSocket, ip: str | None, port: int) -> Endpoint:
        """Register a binding; ``ip`` None is the wildcard. Returns (ip, port)."""
        family = sock.family if ip is None or ":" in ip else stdlib_socket.AF_INET
        if ip is None:
            host = sock._home
        elif ip in self._broadcasts or is_multicast(ip):
            host = sock._home  # bound to a group: hears it, sends from the host
            self._bound_groups.add(ip)
        else:
            found = self._host_of(ip)
            if found is None:
                raise oserror(
                    errno.EADDRNOTAVAIL, f"no host on this VirtualNetwork has {ip}"
                )
            host = found
        if port == 0:
            port = self._free_port(host)
        else:
            dual = ip is None and not sock._v6only
            users = self._users(host, family, port, ip, dual=dual)
            if any(not sock._may_share_port(other) for other in users):
                raise oserror(errno.EADDRINUSE, f"port {port} is taken on {host.name}")
        if ip is None:
            self._wild.setdefault((host, family, port), []).append(sock)
            return ("::" if family == stdlib_socket.AF_INET6 else "0.0.0.0", port)
        self._bound.setdefault((ip, port), []).append(sock)
        return (ip, port)

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

    def _unbind(self, sock: VirtualSocket) -> None:
        binding = sock._binding
        if binding is None:
            return
        ip, port = binding
        table: dict[object, list[VirtualSocket]]
        key: object
        if sock._wildcard:
            table, key = self._wild, (sock._host, sock.family, port)  # type: ignore[assignment]
        else:
            table, key = self._bound, (ip, port)  # type: ignore[assignment]
        users = table.get(key, [])
        if sock in users:
            users.remove(sock)
        if not users:
            table.pop(key, None)

    def _source_for(self, sock: VirtualSocket, dst_ip: str, family: int) -> str:
        """The source address the "kernel" picks for ``sock`` sending to ``dst_ip``."""
        binding = sock._binding
        if binding is not None and not sock._wildcard:
            if (":" in binding[0]) != (family == stdlib_socket.AF_INET6):
                raise oserror(errno.EAFNOSUPPORT, "bound to an IPv4 address")
            return binding[0]
        if ipaddress.ip_address(dst_ip).is_loopback:
            return "127.0.0.1" if family == stdlib_socket.AF_INET else "::1"
        host = sock._host
        if self._host_by_ip.get(dst_ip) is host:
            return dst_ip  # Linux: to an address of its own, from that address
        source = self._iface_address(host, ETHERNET_IFINDEX, family) or (
            host.address_of(family)
        )
        if source is None:
            raise oserror(
                errno.ENETUNREACH, f"{sock._host.name} has no address of that family"
            )
        return source

    def _send(
        self,
        sock: VirtualSocket,
        payload: bytes,
        dst: Endpoint,
        family: int,
        source: str | None = None,
    ) -> None:
        """Put a datagram on the wire (``dst`` canonical, of ``family``);
        ``source``: the source address that ``sendmsg`` asked for."""
        binding = sock._binding
        assert binding is not None
        dst_ip = dst[0]
        if dst_ip in self._broadcasts or is_multicast(dst_ip):
            self._send_group(sock, payload, dst, family, source)
            return
        explicit = source is not None
        if source is None:
            if not sock._wildcard and (":" in binding[0]) == (
                family == stdlib_socket.AF_INET6
            ):
                source = binding[0]  # a specific address is its own source
            else:
                source = self._source_for(sock, dst_ip, family)
        elif self._host_of(source) is not sock._host:
            raise oserror(errno.EINVAL, f"{source} is not an address of this host")
        if (
            family == stdlib_socket.AF_INET
            and (explicit or not sock._wildcard)
            and not is_loopback(dst_ip)
            and is_loopback(source)
            and self._host_by_ip.get(dst_ip) is not sock._host
        ):
            # Linux: an IPv4 loopback source only reaches the host's own
            # addresses (an IPv6 one leaves, and the peer drops it).
            raise oserror(errno.EINVAL, f"no route from {source} to {dst_ip}")
        src = binding if source is binding[0] else (source, binding[1])
        self._packets += 1
        packet = Packet(self._packets, family, src, dst, payload, sock)
        self._sent += 1
        # What follows happens at one instant: the clock is read once.
        self._instant = self._clock_time()
        try:
            self._record_event("send", packet)
            self._forward(packet)
        finally:
            self._instant = None

    def _forward(self, packet: Packet) -> None:
        """Route a datagram just sent (or one multicast or broadcast copy of
        it), unless a partition or a hold keeps it."""
        if not (self._partitions or self._hold_all or self._holds or self._links):
            # The common case: no per-pair state to look up, only a route.
            if packet.to is not None or (
                packet.src[0] in self._host_by_ip
                and (
                    packet.dst[0] in self._host_by_ip
                    or self._host_of(packet.dst[0]) is not None
                )
            ):
                self._route(packet, None)
            else:
                self._drop(packet, "no_route")
            return
        pair = self._pair(packet)
        if pair is None:
            self._drop(packet, "no_route")
        elif self._partitions and pair in self._partitions:
            self._drop(packet, "partition")
        elif (self._hold_all or self._holds) and self._is_held(pair):
            self._held.append(packet)
            self._held_count += 1
            self._record_event("hold", packet)
        else:
            self._route(packet, pair)

    def _pair(self, packet: Packet) -> frozenset[Host] | None:
        if packet.to is not None:
            assert packet.sender is not None
            return frozenset((packet.sender._host, packet.to))
        src_host = self._host_by_ip.get(packet.src[0])
        dst_host = self._host_by_ip.get(packet.dst[0]) or self._host_of(packet.dst[0])
        if src_host is None or dst_host is None:
            return None
        return frozenset((src_host, dst_host))

    def _is_held(self, pair: frozenset[Host]) -> bool:
        return self._hold_all or pair in self._holds

    def _route(self, packet: Packet, pair: frozenset[Host] | None) -> None:
        policy = (
            self._links.get(pair, self._policy)
            if pair is not None and self._links
            else self._policy
        )
        if policy is not self._policy_seen:  # is_instant compares every field
            self._policy_seen = policy
            self._policy_seen_instant = policy.is_instant
        if self._policy_seen_instant:
            self._arrive(packet)
            return
        size = len(packet.payload) + _UDP_HEADER + _IP_HEADER[packet.family]
        fate = plan_fate(policy, size, self._rng)
        if fate.drop is not None:
            self._drop(packet, fate.drop)
            return
        for copy, delay in enumerate(fate.delays):
            if copy:
                self._duplicated += 1
                self._record_event("duplicate", packet)
            if delay <= 0:
                self._arrive(packet)
            else:
                self._schedule(trio.current_time() + delay, packet, 0)

    def _arrive(self, packet: Packet) -> None:
        if packet.to is not None:
            self._arrive_group(packet)
            return
        receiver = self._lookup(packet)
        if receiver is None:
            self._drop(packet, "port_unreachable")
            self._report_unreachable(packet)
            return
        reason = receiver._accept(packet)
        if reason is not None:
            self._drop(packet, reason)
            return
        self._delivered += 1
        self._record_event("deliver", packet)

    def _lookup(self, packet: Packet) -> VirtualSocket | None:
        ip, port = packet.dst
        candidates = self._bound.get(packet.dst)
        if not candidates:
            host = self._host_by_ip.get(ip)
            if host is None:
                return None
            candidates = self._wild.get((host, packet.family, port))
            if not candidates and packet.family == stdlib_socket.AF_INET:
                dual = self._wild.get((host, stdlib_socket.AF_INET6, port), [])
                candidates = [sock for sock in dual if not sock._v6only]
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        last = candidates[-1]
        if not last._reuseport:
            return last  # SO_REUSEADDR: Linux gives it all to the last bound
        # SO_REUSEPORT: spread by a stable hash of the source, as Linux does.
        group = [sock for sock in candidates if sock._reuseport]
        key = f"{packet.src[0]}:{packet.src[1]}".encode()
        return group[zlib.crc32(key) % len(group)]

    def _report_unreachable(self, packet: Packet) -> None:
        """ICMP port unreachable: Linux reports it to connected sockets only."""
        sender = packet.sender
        if sender is None or sender._closed or sender._peer != packet.dst:
            return
        self._record_event("icmp", packet)
        pair = self._pair(packet)
        policy = (
            self._links.get(pair, self._policy) if pair is not None else self._policy
        )
        if policy.latency <= 0:
            sender._set_error(errno.ECONNREFUSED)
        else:
            self._schedule(trio.current_time() + policy.latency, packet, 1)

    def _drop(self, packet: Packet, reason: str) -> None:
        self._dropped[reason] = self._dropped.get(reason, 0) + 1
        self._record_event("drop", packet, reason)

    def _record_event(
        self, kind: str, packet: Packet, reason: str | None = None
    ) -> None:
        if self._record:
            instant = self._instant
            self._trace.append(
                (
                    self._clock_time() if instant is None else instant,
                    kind,
                    packet.id,
                    packet.src,
                    packet.dst,
                    packet.payload,
                    reason,
                )
            )

    # ---- interfaces, multicast and broadcast ---------------------------------

    def _iface_address(self, host: Host, ifindex: int, family: int) -> str | None:
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

    def _default_iface(self, host: Host, family: int) -> int:
        """Where the host routes multicast: eth0 if it has one, else lo."""
        if self._iface_address(host, ETHERNET_IFINDEX, family) is not None:
            return ETHERNET_IFINDEX
        return LOOPBACK_IFINDEX

    def _iface_index(self, host: Host, family: int, address: str, ifindex: int) -> int:
        """The interface an ``ip_mreqn``/``IP_MULTICAST_IF`` names (by index, or
        by address; neither: the default one). ENODEV if the host has none."""
        if ifindex:
            if self._iface_address(host, ifindex, family) is None:
                raise oserror(errno.ENODEV, f"{host.name} has no interface {ifindex}")
            return ifindex
        if address in ("0.0.0.0", "::"):
            return self._default_iface(host, family)
        if is_loopback(address):
            return LOOPBACK_IFINDEX
        if self._host_by_ip.get(address) is host:
            return ETHERNET_IFINDEX
        raise oserror(errno.ENODEV, f"{host.name} has no interface with {address}")

    def _join(
        self, sock: VirtualSocket, group: str, ifindex: int, *, join: bool
    ) -> None:
        key = (sock._host, group, ifindex)
        if join:
            if (group, ifindex) in sock._groups:
                raise oserror(errno.EADDRINUSE, f"{group} joined already")
            sock._groups.add((group, ifindex))
            self._members[key] = self._members.get(key, 0) + 1
            return
        if (group, ifindex) not in sock._groups:
            raise oserror(errno.EADDRNOTAVAIL, f"{group} was not joined")
        sock._groups.discard((group, ifindex))
        self._members[key] -= 1
        if not self._members[key]:
            del self._members[key]

    def _send_group(
        self,
        sock: VirtualSocket,
        payload: bytes,
        dst: Endpoint,
        family: int,
        source: str | None,
    ) -> None:
        """A multicast or broadcast datagram: one copy per host that hears it."""
        host = sock._host
        group = dst[0]
        targets: list[tuple[Host, int]]
        if group in self._broadcasts:
            if group == _LOOPBACK_BROADCAST:
                ifindex, targets = LOOPBACK_IFINDEX, [(host, LOOPBACK_IFINDEX)]
            else:
                ifindex = ETHERNET_IFINDEX
                if self._iface_address(host, ifindex, family) is None:
                    raise oserror(errno.ENETUNREACH, f"{host.name} has no eth0")
                hosts = self._broadcasts[group] or [
                    other
                    for other in self._hosts
                    if self._iface_address(other, ifindex, family) is not None
                ]
                targets = [(other, ifindex) for other in hosts]
            if not sock._opt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_BROADCAST):
                raise oserror(errno.EACCES, "broadcast needs SO_BROADCAST")
        else:
            ifindex = sock._multicast_iface(family) or self._default_iface(host, family)
            ttl, loop = sock._multicast_ttl_loop(family)
            targets = []
            if ifindex == LOOPBACK_IFINDEX or loop:
                targets.append((host, ifindex))
            if ifindex == ETHERNET_IFINDEX and ttl > 0:
                targets.extend(
                    (other, ifindex)
                    for other in self._hosts
                    if other is not host
                    and self._iface_address(other, ifindex, family) is not None
                )
        if source is None:
            binding = sock._binding
            assert binding is not None
            bound = binding[0]
            if sock._wildcard or bound in self._broadcasts or is_multicast(bound):
                source = self._iface_address(host, ifindex, family)
            else:
                source = bound
        if ifindex == ETHERNET_IFINDEX and is_loopback(source):
            raise oserror(errno.EINVAL, f"{source} cannot send on eth0")
        assert source is not None
        assert sock._binding is not None
        self._packets += 1
        self._sent += 1
        src = (source, sock._binding[1])
        first = Packet(self._packets, family, src, dst, payload, sock)
        # What follows happens at one instant: the clock is read once.
        self._instant = self._clock_time()
        try:
            self._record_event("send", first)
            for target, via in targets:
                packet = Packet(first.id, family, src, dst, payload, sock, target, via)
                self._forward(packet)
        finally:
            self._instant = None

    def _arrive_group(self, packet: Packet) -> None:
        host, via = packet.to, packet.via
        assert host is not None
        group, port = packet.dst
        candidates = list(self._wild.get((host, packet.family, port), ()))
        if packet.family == stdlib_socket.AF_INET:
            dual = self._wild.get((host, stdlib_socket.AF_INET6, port), ())
            candidates.extend(sock for sock in dual if not sock._v6only)
        candidates.extend(
            sock for sock in self._bound.get((group, port), ()) if sock._host is host
        )
        if is_multicast(group):
            joined = (host, group, via) in self._members
            candidates = [
                sock
                for sock in candidates
                if (group, via) in sock._groups
                or (joined and sock._opt(stdlib_socket.IPPROTO_IP, _IP_MULTICAST_ALL))
            ]
        if not candidates:
            self._drop(packet, "no_receiver")
            return
        for sock in candidates:
            reason = sock._accept(packet)
            if reason is not None:
                self._drop(packet, reason)
            else:
                self._delivered += 1
                self._record_event("deliver", packet)

    # ---- the wire: delayed deliveries --------------------------------------

    def _schedule(self, when: float, packet: Packet, kind: int) -> None:
        self._wire_seq += 1
        heapq.heappush(self._wire, (when, self._wire_seq, packet, kind))
        if self._wire_task_scope is None:
            self._wire_task_scope = trio.CancelScope()
            trio.lowlevel.spawn_system_task(
                self._run_wire,
                self._wire_task_scope,
                name="trioudp VirtualNetwork wire",
            )
        elif self._wire_scope is not None and when < self._wire_scope.deadline:
            self._wire_scope.deadline = when

    async def _run_wire(self, task_scope: trio.CancelScope) -> None:
        wire = self._wire
        task = trio.lowlevel.current_task()

        def wake(_: object) -> trio.lowlevel.Abort:
            # Called by Trio inside its deadline processing. A real
            # cancellation (uninstall, the run ending) ends the task as usual.
            # A deadline is a delivery time: deliver what is due right here,
            # so the receivers run in the same scheduler pass as this task
            # rather than one later, and resume normally, so no Cancelled is
            # raised and caught on every wake. See the module's invariants.
            scope = self._wire_scope
            if scope is None or trio.current_time() < scope.deadline:
                return trio.lowlevel.Abort.SUCCEEDED
            self._deliver_due()
            trio.lowlevel.reschedule(task)
            return trio.lowlevel.Abort.FAILED

        with task_scope:
            while True:
                with trio.CancelScope(
                    deadline=wire[0][0] if wire else math.inf
                ) as scope:
                    self._wire_scope = scope
                    await trio.lowlevel.wait_task_rescheduled(wake)
                self._wire_scope = None
                self._deliver_due()
        if self._wire_task_scope is task_scope:
            self._wire_task_scope = None
            self._wire_scope = None

    def _deliver_due(self) -> None:
        """Deliver every datagram (and ICMP report) whose time has come.

        Runs in the wire task and in its wake-up callback; it never awaits
        and never raises: it only queues datagrams and reschedules tasks.
        """
        wire = self._wire
        now = trio.current_time()
        while wire and wire[0][0] <= now:
            _, _, packet, kind = heapq.heappop(wire)
            if kind == 0:
                self._arrive(packet)
            elif packet.sender is not None and not packet.sender._closed:
                packet.sender._set_error(errno.ECONNREFUSED)
