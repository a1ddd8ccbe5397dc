"""VirtualNetwork: the public face of an in-memory UDP network for Trio programs, exact and seeded; it wires the parts below together.

Model. The network is a set of hosts, each owning some IP addresses; the
default host ``localhost`` owns ``127.0.0.1`` and ``::1``. A socket bound to
a specific address lives on the host that owns it; a socket bound to a
wildcard (or never bound) lives on its *home* host: ``localhost``, or the host
named by :meth:`VirtualNetwork.on_host` where the socket was created.

Time. Datagrams travel on the Trio clock: one with no delay is delivered
inside ``sendto``, delayed ones by an alarm on the Trio clock (see ``_wire``;
a datagram due at the instant of a deadline comes first), so under
``MockClock(autojump_threshold=0)`` a test with seconds of latency takes
milliseconds. One ``random.Random(seed)`` drives every random choice of the
network.

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
``localhost`` by its ``eth0``, from its ``eth0`` address; Linux would keep it
on the sender's host); routes are flat (see ``_hosts``: one router joins
every subnet, an address no host has is lost there in silence as
``IP_RECVERR`` is not simulated, and ``localhost`` reaches the other hosts
even without an ``eth0``); a link without ``mtu`` has none (``IP_MTU``
reads 65535); a host with no ``eth0`` sends multicast through ``lo``, and ``lo``
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
deterministic-scheduling hook, see ``trioudp._trio_private``), trioudp's
clients draw their retransmission jitter from another derived generator
(``trioudp._rng``), and each flapping link its schedule from one of its own
(``_flaps``). Same seed and program under the autojump clock: the same
schedule and a byte-identical trace, in any process and under any
``PYTHONHASHSEED``. On uninstall Trio's scheduler is restored as it was.

The parts, each in its own module: ``_hosts`` (hosts, addresses,
interfaces), ``_resolver`` (name lookups), ``_ports`` (bindings),
``_groups`` (multicast and broadcast), ``_faults`` (link policies,
partitions, holds, down hosts, rules, transmit queues), ``_flaps``
(flapping links), ``_rules`` (the rule API and its verdicts), ``_outages``
(crashes and restarts: the sockets closed, the tasks cancelled), ``_wire``
(delivery and its alarm), ``_trace`` (what happened), ``_vsocket`` and
``_sock`` (the sockets: the calls, and the kernel's half that the network
holds), ``_stack`` (what a socket may call of the network), ``_model``
(values they share). Where new behaviour goes: a fault between hosts in
``_faults`` and its one gate, ``Faults.blocked`` (asked by
``Wire.forward``); a link's effect on one datagram in ``_links``; an ICMP
error back to the sender in ``Wire._report_unreachable`` and
``Sock.refuse``; what a crash does to a host's sockets and tasks in
``_outages``.
"""

from __future__ import annotations

import contextvars
import errno
import random
import socket as stdlib_socket
from contextlib import contextmanager
from typing import TYPE_CHECKING, ClassVar, final

import trio

from .._rng import lend_randomness
from .._trio_private import BatchShuffler, deterministic_scheduling
from ._faults import Faults
from ._flaps import Flapping
from ._groups import Groups
from ._hosts import Hosts
from ._links import LinkPolicy
from ._outages import Outages
from ._pcap import PCAP_EPOCH, write_entries
from ._ports import Ports
from ._resolver import Resolver, getaddrinfo, getnameinfo
from ._sockopts import ETHERNET_IFINDEX, LOOPBACK_IFINDEX
from ._stack import LINUX_RMEM_MAX, Stack, Sysctl
from ._trace import DEFAULT_TRACE_LIMIT, Recorder
from ._verbs import FaultVerbs
from ._vsocket import VirtualSocket
from ._wire import Wire

if TYPE_CHECKING:
    import os
    from collections.abc import Iterable, Iterator

    from ._model import Endpoint, Host, Sockaddr
    from ._resolver import AddrInfo
    from ._sock import Sock
    from ._trace import NetworkStats, TraceEvent

__all__ = ["VirtualNetwork"]


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


@final
class VirtualNetwork(FaultVerbs):
    """A seeded, in-memory UDP network that unmodified Trio code runs on.

    Args:
        seed: seeds the one ``random.Random`` behind every random choice.
        latency, jitter, loss, duplicate, reorder, mtu, tail, tail_shape, bandwidth, queue: the
            default :class:`LinkPolicy` of every link (see there).
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
        tail: float = 0.0,
        tail_shape: float | None = None,
        bandwidth: float | None = None,
        queue: int | None = 1000,
        record: bool = True,
        rmem_max: int = LINUX_RMEM_MAX,
        wmem_max: int = LINUX_RMEM_MAX,
        trace_limit: int | None = DEFAULT_TRACE_LIMIT,
    ) -> None:
        if trace_limit is not None and trace_limit < 1:
            msg = f"trace_limit must be a positive count or None, not {trace_limit!r}"
            raise ValueError(msg)
        self.seed = seed
        # Separate streams (str seeds hash with SHA-512, not hash()), so the
        # scheduler's and clients' draws never shift the network's fates.
        self._scheduler_rng = BatchShuffler(f"trio-scheduler/{seed}")
        self._client_rng = random.Random(f"trioudp-clients/{seed}")
        policy = LinkPolicy(
            latency=latency,
            jitter=jitter,
            loss=loss,
            duplicate=duplicate,
            reorder=reorder,
            mtu=mtu,
            tail=tail,
            tail_shape=tail_shape,
            bandwidth=bandwidth,
            queue=queue,
        )
        self._sysctl = Sysctl(rmem_max=rmem_max, wmem_max=wmem_max)
        self._hosts = Hosts()
        self.localhost = self._hosts.localhost
        self._home: contextvars.ContextVar[Host | None] = contextvars.ContextVar(
            f"trioudp-home-{id(self)}", default=None
        )
        self._trace = Recorder(record=record, limit=trace_limit)
        self._ports = Ports(self._hosts)
        self._groups = Groups(self._hosts, self._ports)
        self._faults = Faults(Flapping(self._trace, seed))
        self._outages = Outages(
            faults=self._faults,
            trace=self._trace,
            close=self._close_sock,
            home=self._home,
        )
        self._wire = Wire(
            hosts=self._hosts,
            ports=self._ports,
            groups=self._groups,
            faults=self._faults,
            trace=self._trace,
            rng=random.Random(seed),
            policy=policy,
        )
        self._stack = Stack(
            hosts=self._hosts,
            ports=self._ports,
            groups=self._groups,
            wire=self._wire,
            sysctl=self._sysctl,
            now=self._trace.now,
            opened=self._outages.opened,
        )
        self._installed = False

    def _close_sock(self, sk: Sock) -> None:
        self._stack.close(sk)

    @property
    def rmem_max(self) -> int:
        """``net.core.rmem_max``: the most ``SO_RCVBUF`` takes (then doubled)."""
        return self._sysctl.rmem_max

    @rmem_max.setter
    def rmem_max(self, value: int) -> None:
        self._sysctl.rmem_max = value

    @property
    def wmem_max(self) -> int:
        """``net.core.wmem_max``: the most ``SO_SNDBUF`` takes (then doubled)."""
        return self._sysctl.wmem_max

    @wmem_max.setter
    def wmem_max(self, value: int) -> None:
        self._sysctl.wmem_max = value

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
        old_resolver = trio.socket.set_custom_hostname_resolver(Resolver(self._hosts))
        self._installed = True
        self._trace.start()
        self._outages.install()
        self._faults.flapping.resume()
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
            self._outages.uninstall()
            self._faults.flapping.uninstall()
            self._wire.uninstall()

    def _new_socket(
        self, family: int, type_: int, proto: int
    ) -> trio.socket.SocketType:
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
            self._stack, family, self._home.get() or self.localhost, proto
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
        return self._hosts.add(addresses, names=names, name=name)

    def add_address(self, host: str | Host, addresses: str | Iterable[str]) -> None:
        """Give an existing host more addresses (with optional prefix lengths).

        Example::

            net.add_address(net.localhost, "10.0.0.1/24")  # localhost gets an eth0
        """
        self._hosts.add_address(self.host(host), addresses)

    def host(self, address_or_name: str | Host) -> Host:
        """The host owning an address, or known by a name.

        Raises:
            KeyError: no host has it.
        """
        return self._hosts.find(address_or_name)

    @contextmanager
    def on_host(self, host: str | Host) -> Iterator[Host]:
        """Make ``host`` the home of sockets created in this block (and in
        tasks started from it): their wildcard binds and source addresses
        are that host's. The tasks started in the block (and the tasks they
        start) are the host's program: :meth:`crash` cancels them.

        Raises:
            RuntimeError: ``host`` has crashed and not restarted.

        Example::

            with net.on_host("10.0.0.2"):
                nursery.start_soon(run_client)   # its sockets live on 10.0.0.2
        """
        found = self.host(host)
        self._outages.check_up(found)
        self._outages.watch()
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
    ) -> list[AddrInfo]:
        """Resolve like :func:`socket.getaddrinfo`, from this network's hosts.

        Raises:
            socket.gaierror: the name is unknown here (``EAI_NONAME``).
        """
        return getaddrinfo(self._hosts, host, port, family, type, proto, flags)

    def getnameinfo(self, sockaddr: Sockaddr, flags: int) -> tuple[str, str]:
        """Reverse-resolve like :func:`socket.getnameinfo`, from this network's hosts."""
        return getnameinfo(self._hosts, sockaddr, flags)

    # ---- observing --------------------------------------------------------

    def now(self) -> float:
        """Seconds on the Trio clock since this network was first installed
        (the time base of :attr:`trace`)."""
        return self._trace.now()

    @property
    def trace(self) -> list[TraceEvent]:
        """The events so far in order, all of them or the latest
        ``trace_limit`` (empty when ``record=False``)."""
        return self._trace.events()

    def trace_text(self, last: int | None = None) -> str:
        """The trace as text, one event a line (the ``last`` ones only, if
        given); same seed and program, same text.

        Example::

            print(net.trace_text(last=20))
        """
        return self._trace.text(last)

    @property
    def stats(self) -> NetworkStats:
        """A snapshot of the counters."""
        return self._wire.stats()

    def write_pcap(
        self, path: str | os.PathLike[str], *, epoch: float = PCAP_EPOCH
    ) -> int:
        """Write the trace as a pcapng capture; returns how many packets it holds.

        What crossed the wire, with synthesised IP, UDP and ICMP headers, each
        packet commented with its fate (delivered, dropped and why, held,
        duplicated); datagrams that never left their host
        (``host_unreachable``, ``no_route``) are only in the trace. Virtual
        time 0 is written as ``epoch`` (default 2000-01-01 UTC). ``tcpdump
        -r`` and Wireshark read it; ``tshark -V`` shows the comments. See
        :func:`write_pcap`. It streams: a million-datagram trace is written
        in seconds, holding little more memory than the trace itself.

        Raises:
            RuntimeError: the network was made with ``record=False``, so it
                kept nothing to write (no file is created).

        Example::

            net.write_pcap(tmp_path / "run.pcapng")
        """
        if not self._trace.record:
            msg = (
                "this VirtualNetwork was made with record=False and kept no"
                " packets; make it with record=True to write a capture"
            )
            raise RuntimeError(msg)
        entries, origin = self._trace.snapshot()
        with open(path, "wb") as file:
            return write_entries(file, entries, origin, epoch=epoch)

    # ---- for tests of the package ------------------------------------------

    @property
    def _bound(self) -> dict[Endpoint, list[Sock]]:
        # tests/test_server.py checks that no socket stays bound.
        return self._ports.bound

    @property
    def _wild(self) -> dict[tuple[Host, int, int], list[Sock]]:
        return self._ports.wild
