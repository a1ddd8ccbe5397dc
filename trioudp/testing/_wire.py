"""Delivery on a virtual network: a datagram from ``sendto`` to a receive queue, through faults, link fates and the clock.

The path of one datagram: :meth:`Wire.send` picks its source and records
it; :meth:`Wire.forward` drops, holds or routes it by the faults between
its hosts (``Faults.blocked``: a crashed host, a partition, a flapping link
that is down) and the rules (``_rules``, in :meth:`Wire._let_through`);
:meth:`Wire._route` queues it behind its link's bandwidth
(``_links.LinkQueue``) and asks its link's policy for a fate
(``_links.plan_fate``): lost, or arriving after some delays;
:meth:`Wire._arrive` finds its receiver (``_ports``, or ``_groups`` for a
multicast or broadcast copy) and hands it to :meth:`Sock.deliver`, or
reports the port unreachable back to a connected sender.

Time. A datagram with no delay is delivered inside ``sendto``; delayed ones
wait in a heap ordered by due time, then send order, and an alarm on the
Trio clock (``trioudp._trio_private.new_alarm``) delivers them at their due
time, so under ``MockClock(autojump_threshold=0)`` a test with seconds of
latency takes milliseconds.

One instant, two things due. A datagram due at time T is delivered before
any deadline at T expires: a receive whose timeout is T gets a datagram due
at T. Trio expires the deadlines of one instant in an order that depends on
memory addresses (it breaks ties by ``id()`` of the cancel scope), so the
rule is kept on the receiver's side: a receiver cancelled while parked
first has the network deliver everything already due
(:meth:`Wire.catch_up`), and takes a datagram if one arrived.

Invariants:
    * The alarm's ``fire`` (:meth:`Wire._deliver_due`) runs inside Trio's
      run loop (its deadline processing, or just before its I/O wait), so
      receivers wake in the same scheduler pass. Everything it reaches
      (``_arrive`` → ``Sock.deliver``) is synchronous, never raises and only
      queues datagrams and reschedules tasks; an exception there would be a
      TrioInternalError. Uninstalling closes the alarm; what is still in
      flight then is dropped (``uninstalled``) by :meth:`Wire.uninstall`.
    * Every random choice about a datagram is drawn here, from one
      ``random.Random``, in the order datagrams are routed (a flapping
      link's schedule comes from a generator of its own, ``_flaps``).
    * A datagram that arrives when its host has crashed is dropped
      (``host_down``) before any receiver is looked up, so a crashed host
      never answers with an ICMP error.
"""

from __future__ import annotations

import errno
import heapq
import socket as stdlib_socket
from math import inf
from typing import TYPE_CHECKING, final

import attrs
import trio

from .._trio_private import new_alarm
from ._links import plan_fate
from ._model import (
    IP_HEADER,
    NOTHING_ASKED,
    UDP_HEADER,
    Packet,
    is_loopback,
    is_multicast,
    oserror,
)
from ._rules import UDPPacket, corrupted, judge
from ._sockopts import ETHERNET_IFINDEX
from ._trace import NetworkStats

if TYPE_CHECKING:
    import random

    from .._trio_private import Alarm
    from ._faults import Faults, Pair
    from ._groups import Groups
    from ._hosts import Hosts
    from ._links import LinkPolicy
    from ._model import Asked, Endpoint, Host
    from ._ports import Ports
    from ._sock import Sock
    from ._trace import Recorder

__all__ = ["Wire"]

# What a heap entry carries: a datagram arriving (0), or an ICMP error
# arriving back at the datagram's sender (its errno).
_ARRIVAL = 0
_MAX_MTU = 65535


@final
class Wire:
    """The delivery of one network's datagrams, and its counters."""

    def __init__(
        self,
        *,
        hosts: Hosts,
        ports: Ports,
        groups: Groups,
        faults: Faults,
        trace: Recorder,
        rng: random.Random,
        policy: LinkPolicy,
    ) -> None:
        self._hosts = hosts
        self._host_by_ip = hosts.by_ip
        self._broadcasts = hosts.broadcasts
        self._ports = ports
        self._groups = groups
        self._faults = faults
        self._trace = trace
        self._rng = rng
        #: The default link policy (``VirtualNetwork.configure`` replaces it).
        self.policy = policy
        self._policy_seen: LinkPolicy | None = None
        self._policy_seen_delay: tuple[float, float] | None = None
        self._packets = 0
        self.sent = 0
        self.delivered = 0
        self.duplicated = 0
        self.held = 0
        self.dropped: dict[str, int] = {}
        self._heap: list[tuple[float, int, Packet, int]] = []
        self._heap_seq = 0
        self._alarm: Alarm | None = None

    def stats(self) -> NetworkStats:
        """A snapshot of the counters."""
        return NetworkStats(
            sent=self.sent,
            delivered=self.delivered,
            duplicated=self.duplicated,
            held=self.held,
            dropped=dict(self.dropped),
        )

    # ---- sending ------------------------------------------------------------

    def send(
        self,
        sock: Sock,
        payload: bytes,
        dst: Endpoint,
        family: int,
        asked: Asked = NOTHING_ASKED,
    ) -> None:
        """Put a datagram from bound ``sock`` on the wire (``dst`` canonical,
        of ``family``); ``asked``: what ``sendmsg``'s ancillary data asked for.

        Raises:
            OSError: ENETUNREACH (no route, see ``Hosts.route``), EINVAL (a
                loopback source leaving its host), EMSGSIZE (larger than the
                link's MTU with DF set: ``IP_PMTUDISC_DO``).
        """
        source, ttl, tos = asked
        memo = sock.route_memo
        if (
            memo is not None
            and memo[0] is dst
            and source is None
            and memo[1] == self._hosts.version
        ):
            src = memo[2]  # the route of its last datagram, still valid
        else:
            found = self._source(sock, payload, dst, family, asked)
            if found is None:
                return  # a multicast or broadcast datagram, sent
            src = found
            if source is None:
                sock.route_memo = (dst, self._hosts.version, src)
        if self.policy.mtu is not None or self._faults.links:
            self._check_size(sock, len(payload), dst[0], family)
        self._packets += 1
        default_ttl, default_tos = (
            sock.ttl_tos4 if family == stdlib_socket.AF_INET else sock.ttl_tos6
        )
        packet = Packet(
            self._packets,
            family,
            src,
            dst,
            payload,
            sock,
            None,
            0,
            default_ttl if ttl is None else ttl,
            default_tos if tos is None else tos,
        )
        self.sent += 1
        # What follows happens at one instant: the clock is read once.
        trace = self._trace
        trace.instant = trace.clock_time()
        try:
            trace.event("send", packet)
            if sock.device and not self._leaves_by_device(sock, dst[0]):
                self._drop(packet, "no_route")
            else:
                self.forward(packet)
        finally:
            trace.instant = None

    def _source(
        self, sock: Sock, payload: bytes, dst: Endpoint, family: int, asked: Asked
    ) -> Endpoint | None:
        """The source endpoint of a unicast datagram (None: ``dst`` is a
        group or broadcast address, and the datagram was sent to it)."""
        binding = sock.binding
        assert binding is not None
        dst_ip = dst[0]
        if dst_ip in self._broadcasts or is_multicast(dst_ip):
            self._send_group(sock, payload, dst, family, asked)
            return None
        source = asked[0]
        explicit = source is not None
        ip = binding.ip
        host_by_ip = self._host_by_ip
        if source is None:
            if (
                ip is not None
                and dst_ip in host_by_ip
                and (":" in ip) == (family == stdlib_socket.AF_INET6)
            ):
                source = ip  # a specific address is its own source
            else:
                source = self._hosts.source_for(binding, dst_ip, family)
        else:
            if self._hosts.host_of(source) is not sock.host:
                raise oserror(errno.EINVAL, f"{source} is not an address of this host")
            self._hosts.route(sock.host, dst_ip, family)
        if (
            family == stdlib_socket.AF_INET
            and (explicit or ip is not None)
            and is_loopback(source)
            and (
                (not is_loopback(dst_ip) and host_by_ip.get(dst_ip) is not sock.host)
                or (sock.device == ETHERNET_IFINDEX and is_loopback(dst_ip))
            )
        ):
            # Linux: an IPv4 loopback source only reaches the host's own
            # addresses (an IPv6 one leaves, and the peer drops it), and
            # never by eth0.
            raise oserror(errno.EINVAL, f"no route from {source} to {dst_ip}")
        address = binding.address
        return address if source == address[0] else (source, binding.port)

    def _leaves_by_device(self, sock: Sock, dst_ip: str) -> bool:
        """Whether a socket bound to a device (SO_BINDTODEVICE) reaches
        ``dst_ip`` through it. Linux sends by that device anyway, where the
        datagram is lost: one bound to ``eth0`` cannot reach a loopback
        address, one bound to ``lo`` cannot leave its host."""
        if sock.device == ETHERNET_IFINDEX:
            return not is_loopback(dst_ip)
        return self._hosts.host_of(dst_ip) is sock.host

    def _check_size(self, sock: Sock, size: int, dst_ip: str, family: int) -> None:
        """EMSGSIZE for a datagram above the path MTU that may not be
        fragmented (DF set); others are fragmented on the link."""
        if not sock.dont_fragment(family):
            return
        dst_host = self._hosts.host_of(dst_ip)
        mtu = self._link_policy(sock.host, dst_host).mtu
        if mtu is not None and size + UDP_HEADER + IP_HEADER[family] > mtu:
            raise oserror(errno.EMSGSIZE, f"larger than the path MTU, {mtu}")

    def _link_policy(self, a: Host, b: Host | None) -> LinkPolicy:
        if b is None or not self._faults.links:
            return self.policy
        return self._faults.policy(frozenset((a, b)), self.policy)

    def path_mtu(self, sock: Sock, dst_ip: str) -> int:
        """``IP_MTU`` of a socket connected to ``dst_ip``: its link's MTU, or
        65535 (Linux's most) where the link has none."""
        mtu = self._link_policy(sock.host, self._hosts.host_of(dst_ip)).mtu
        return _MAX_MTU if mtu is None else min(mtu, _MAX_MTU)

    def _send_group(
        self, sock: Sock, payload: bytes, dst: Endpoint, family: int, asked: Asked
    ) -> None:
        """A multicast or broadcast datagram: one copy per host that hears it."""
        source, ttl, tos = asked
        src, targets = self._groups.copies(sock, dst, family, source)
        self._packets += 1
        self.sent += 1
        unicast_ttl, default_tos = (
            sock.ttl_tos4 if family == stdlib_socket.AF_INET else sock.ttl_tos6
        )
        if ttl is None:
            ttl = (
                sock.multicast_ttl_loop(family)[0]
                if is_multicast(dst[0])
                else unicast_ttl
            )
        if tos is None:
            tos = default_tos
        first = Packet(
            self._packets, family, src, dst, payload, sock, None, 0, ttl, tos
        )
        # What follows happens at one instant: the clock is read once.
        trace = self._trace
        trace.instant = trace.clock_time()
        try:
            trace.event("send", first)
            for target, via in targets:
                packet = Packet(
                    first.id, family, src, dst, payload, sock, target, via, ttl, tos
                )
                self.forward(packet)
        finally:
            trace.instant = None

    # ---- between the hosts ----------------------------------------------------

    def forward(self, packet: Packet) -> None:
        """Route a datagram just sent (or one multicast or broadcast copy of
        it), unless a fault between its hosts (``Faults.blocked``), a rule
        or a hold keeps it."""
        faults = self._faults
        if not faults.active:
            # The common case: no per-pair state to look up, only a route.
            if packet.to is not None or (
                packet.src[0] in self._host_by_ip
                and (
                    packet.dst[0] in self._host_by_ip
                    or self._hosts.host_of(packet.dst[0]) is not None
                )
            ):
                self._route(packet, None)
            else:
                self._drop(packet, "host_unreachable")
            return
        ends = self.ends(packet)
        if ends is None:
            self._drop(packet, "host_unreachable")
            return
        pair = frozenset(ends)
        if (faults.hold_all or faults.holds) and faults.is_held(pair):
            reason = faults.blocked(*ends)
            if reason is not None:
                self._drop(packet, reason)
                return
            faults.held.append(packet)
            self.held += 1
            self._trace.event("hold", packet)
            return
        self._let_through(packet, ends, pair)

    def ends(self, packet: Packet) -> tuple[Host, Host] | None:
        """The hosts a datagram goes from and to, or None if either is unknown."""
        if packet.to is not None:
            assert packet.sender is not None
            return packet.sender.host, packet.to
        host_by_ip = self._host_by_ip
        src_host = host_by_ip.get(packet.src[0])
        dst_host = host_by_ip.get(packet.dst[0]) or self._hosts.host_of(packet.dst[0])
        if src_host is None or dst_host is None:
            return None
        return src_host, dst_host

    def release(self) -> None:
        """Send on every held datagram no hold keeps any more, each with its
        link's delay counted from now (and the faults and rules of now)."""
        faults = self._faults
        still_held = []
        for packet in faults.held:
            ends = self.ends(packet)
            if ends is not None and faults.is_held(frozenset(ends)):
                still_held.append(packet)
                continue
            self._trace.event("release", packet)
            if ends is None:
                self._drop(packet, "host_unreachable")
            else:
                self._let_through(packet, ends, frozenset(ends))
        faults.held = still_held

    def _let_through(self, packet: Packet, ends: tuple[Host, Host], pair: Pair) -> None:
        """Route a datagram onto its link unless a fault blocks it now, as
        the rules decide (``_rules``)."""
        faults = self._faults
        reason = faults.blocked(*ends)
        if reason is not None:
            self._drop(packet, reason)
            return
        if not faults.rules:
            self._route(packet, pair)
            return
        time = trio.current_time() - (self._trace.epoch or 0.0)
        verdict = judge(
            faults.rules,
            UDPPacket(
                number=packet.id,
                src=packet.src,
                dst=packet.dst,
                payload=packet.payload,
                sender=ends[0],
                receiver=ends[1],
                time=time,
            ),
        )
        if verdict is None:
            self._route(packet, pair)
            return
        if verdict.drop:
            self._drop(packet, "rule")
            return
        if verdict.changes_bytes:
            payload = corrupted(packet.payload, verdict, self._rng)
            packet = attrs.evolve(packet, payload=payload)
            self._trace.event("corrupt", packet, "rule")
        if verdict.delay:
            self._trace.event("delay", packet, "rule")
        for copy in range(verdict.copies):
            if copy:
                self.duplicated += 1
                self._trace.event("duplicate", packet, "rule")
            self._route(packet, pair, verdict.delay, ends)

    def _route(
        self,
        packet: Packet,
        pair: Pair | None,
        extra: float = 0.0,
        ends: tuple[Host, Host] | None = None,
    ) -> None:
        """Put a datagram on its link: the link's fate, ``extra`` seconds
        later (a rule's delay)."""
        links = self._faults.links
        policy = (
            links.get(pair, self.policy) if pair is not None and links else self.policy
        )
        if policy is not self._policy_seen:
            self._policy_seen = policy
            self._policy_seen_delay = (
                None
                if policy.loss
                or policy.duplicate
                or policy.reorder
                or policy.tail
                or policy.bandwidth is not None
                else (policy.latency, policy.jitter)
            )
        trace = self._trace
        now = trace.instant
        if now is None:
            now = trace.clock_time()
        delay_only = self._policy_seen_delay
        if delay_only is not None:
            # plan_fate's arithmetic, inlined for the common link (the
            # instant one included): latency plus uniform jitter, the same
            # draws and the same floats.
            latency, jitter = delay_only
            delay = latency + jitter * self._rng.random() if jitter else latency
            delay += extra
            if delay <= 0:
                self._arrive(packet)
            else:
                self._schedule(now + delay, packet, _ARRIVAL)
            return
        family = packet.family
        size = len(packet.payload) + UDP_HEADER + IP_HEADER[family]
        if policy.bandwidth is not None:
            ends = ends or self.ends(packet)
            assert ends is not None  # forward dropped a datagram with no route
            wait = self._faults.queue(*ends).admit(
                now + extra,
                size,
                bandwidth=policy.bandwidth,
                limit=policy.queue,
            )
            if wait is None:
                self._drop(packet, "queue")
                return
            extra += wait
        fate = plan_fate(policy, size, self._rng, ipv6=family == stdlib_socket.AF_INET6)
        if fate.drop is not None:
            self._drop(packet, fate.drop)
            return
        for copy, delay in enumerate(fate.delays):
            if copy:
                self.duplicated += 1
                self._trace.event("duplicate", packet)
            delay += extra
            if delay <= 0:
                self._arrive(packet)
            else:
                self._schedule(now + delay, packet, _ARRIVAL)

    # ---- arriving -------------------------------------------------------------

    def _arrive(self, packet: Packet) -> None:
        if packet.to is not None:
            self._arrive_group(packet)
            return
        receiver = self._ports.receiver(packet)
        if receiver is None:
            self._drop(packet, "port_unreachable")
            self._report_unreachable(packet)
            return
        reason = receiver.deliver(packet)
        if reason is not None:
            self._drop(packet, reason)
            return
        self.delivered += 1
        self._trace.event("deliver", packet)

    def _arrive_group(self, packet: Packet) -> None:
        receivers = self._groups.receivers(packet)
        if not receivers:
            self._drop(packet, "no_receiver")
            return
        for sock in receivers:
            reason = sock.deliver(packet)
            if reason is not None:
                self._drop(packet, reason)
            else:
                self.delivered += 1
                self._trace.event("deliver", packet)

    def _report_unreachable(
        self, packet: Packet, code: int = errno.ECONNREFUSED
    ) -> None:
        """An ICMP error back to the sender, after the link's latency, as
        error ``code`` (port unreachable: ECONNREFUSED). Linux reports one
        without ``IP_RECVERR`` to connected sockets only."""
        sender = packet.sender
        if sender is None or not sender.connected_to(packet.dst):
            return
        self._trace.event("icmp", packet)
        ends = self.ends(packet)
        policy = self._faults.policy(
            None if ends is None else frozenset(ends), self.policy
        )
        if policy.latency <= 0:
            sender.refuse(code)
        else:
            self._schedule(trio.current_time() + policy.latency, packet, code)

    def _drop(self, packet: Packet, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self._trace.event("drop", packet, reason)

    # ---- delayed deliveries ----------------------------------------------------

    def _schedule(self, when: float, packet: Packet, kind: int) -> None:
        self._heap_seq += 1
        heapq.heappush(self._heap, (when, self._heap_seq, packet, kind))
        alarm = self._alarm
        if alarm is None:
            alarm = self._alarm = new_alarm(
                self._deliver_due, "trioudp VirtualNetwork wire"
            )
        if when < alarm.when:
            alarm.set(when)

    def _deliver_due(self) -> None:
        """Deliver every datagram (and ICMP report) whose time has come, and
        set the alarm for the next one.

        The alarm's ``fire``: it never awaits and never raises; it only
        queues datagrams and reschedules tasks.
        """
        heap = self._heap
        trace = self._trace
        # Everything delivered now happens at one instant: one clock read.
        outer, trace.instant = trace.instant, trace.clock_time()
        now = trace.instant
        try:
            down = self._faults.down
            while heap and heap[0][0] <= now:
                _, _, packet, kind = heapq.heappop(heap)
                if kind == _ARRIVAL:
                    if down and self._to_down_host(packet):
                        self._drop(packet, "host_down")
                        continue
                    self._arrive(packet)
                elif packet.sender is not None:
                    packet.sender.refuse(kind)
        finally:
            trace.instant = outer
        if self._alarm is not None:
            self._alarm.set(heap[0][0] if heap else inf)

    def _to_down_host(self, packet: Packet) -> bool:
        """Whether a datagram arriving now arrives at a crashed host."""
        host = packet.to or self._hosts.host_of(packet.dst[0])
        return host in self._faults.down

    def catch_up(self) -> None:
        """Deliver what is due now and not yet delivered: a receiver calls
        this when cancelled, so that a datagram due at the instant its
        deadline expired reaches it whichever Trio expired first."""
        heap = self._heap
        if heap and heap[0][0] <= trio.current_time():
            self._deliver_due()

    def uninstall(self) -> None:
        """Close the alarm and drop what is still in flight (``uninstalled``)."""
        alarm, self._alarm = self._alarm, None
        if alarm is not None:
            alarm.close()
        heap, self._heap = self._heap, []
        for _, _, packet, _ in sorted(heap):
            self._drop(packet, "uninstalled")
