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
wait in a heap that one Trio system task (started on first need) delivers
at their due time, so under ``MockClock(autojump_threshold=0)`` a test with
seconds of latency takes milliseconds.

Invariants:
    * The wire task's wake-up callback (its abort function) runs inside
      Trio's deadline processing and delivers due datagrams there, so
      receivers wake in the same scheduler pass as the wire task. Everything
      it reaches (``_deliver_due`` → ``_arrive`` → ``Sock.deliver``) is
      synchronous, never raises and only queues datagrams and reschedules
      tasks; an exception there would be a TrioInternalError. It delivers
      only when its own deadline has come: any other cancellation (uninstall,
      the end of the run) ends the wire task with Cancelled, as a sleep
      would, and what is still in flight is dropped (``uninstalled``) by
      :meth:`Wire.uninstall`.
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
import math
import socket as stdlib_socket
from typing import TYPE_CHECKING, final

import attrs
import trio

from ._links import plan_fate
from ._model import IP_HEADER, UDP_HEADER, Packet, is_loopback, is_multicast, oserror
from ._rules import UDPPacket, corrupted, judge
from ._trace import NetworkStats

if TYPE_CHECKING:
    import random

    from ._faults import Faults, Pair
    from ._groups import Groups
    from ._hosts import Hosts
    from ._links import LinkPolicy
    from ._model import Endpoint, Host
    from ._ports import Ports
    from ._sock import Sock
    from ._trace import Recorder

__all__ = ["Wire"]

# What a heap entry carries: a datagram arriving, or an ICMP error arriving
# back at the datagram's sender.
_ARRIVAL, _ICMP = 0, 1


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
        self._policy_seen_instant = False
        self._packets = 0
        self.sent = 0
        self.delivered = 0
        self.duplicated = 0
        self.held = 0
        self.dropped: dict[str, int] = {}
        self._heap: list[tuple[float, int, Packet, int]] = []
        self._heap_seq = 0
        self._wake_scope: trio.CancelScope | None = None
        self._task_scope: trio.CancelScope | None = None

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
        source: str | None = None,
    ) -> None:
        """Put a datagram from bound ``sock`` on the wire (``dst`` canonical,
        of ``family``); ``source``: the source address ``sendmsg`` asked for."""
        binding = sock.binding
        assert binding is not None
        dst_ip = dst[0]
        if dst_ip in self._broadcasts or is_multicast(dst_ip):
            self._send_group(sock, payload, dst, family, source)
            return
        explicit = source is not None
        ip = binding.ip
        if source is None:
            if ip is not None and (":" in ip) == (family == stdlib_socket.AF_INET6):
                source = ip  # a specific address is its own source
            else:
                source = self._hosts.source_for(binding, dst_ip, family)
        elif self._hosts.host_of(source) is not sock.host:
            raise oserror(errno.EINVAL, f"{source} is not an address of this host")
        if (
            family == stdlib_socket.AF_INET
            and (explicit or ip is not None)
            and not is_loopback(dst_ip)
            and is_loopback(source)
            and self._host_by_ip.get(dst_ip) is not sock.host
        ):
            # Linux: an IPv4 loopback source only reaches the host's own
            # addresses (an IPv6 one leaves, and the peer drops it).
            raise oserror(errno.EINVAL, f"no route from {source} to {dst_ip}")
        address = binding.address
        src = address if source is address[0] else (source, binding.port)
        self._packets += 1
        packet = Packet(self._packets, family, src, dst, payload, sock)
        self.sent += 1
        # What follows happens at one instant: the clock is read once.
        trace = self._trace
        trace.instant = trace.clock_time()
        try:
            trace.event("send", packet)
            self.forward(packet)
        finally:
            trace.instant = None

    def _send_group(
        self,
        sock: Sock,
        payload: bytes,
        dst: Endpoint,
        family: int,
        source: str | None,
    ) -> None:
        """A multicast or broadcast datagram: one copy per host that hears it."""
        src, targets = self._groups.copies(sock, dst, family, source)
        self._packets += 1
        self.sent += 1
        first = Packet(self._packets, family, src, dst, payload, sock)
        # What follows happens at one instant: the clock is read once.
        trace = self._trace
        trace.instant = trace.clock_time()
        try:
            trace.event("send", first)
            for target, via in targets:
                packet = Packet(first.id, family, src, dst, payload, sock, target, via)
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
                self._drop(packet, "no_route")
            return
        ends = self.ends(packet)
        if ends is None:
            self._drop(packet, "no_route")
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
                self._drop(packet, "no_route")
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
        if policy is not self._policy_seen:  # is_instant compares every field
            self._policy_seen = policy
            self._policy_seen_instant = policy.is_instant
        if self._policy_seen_instant:
            if extra <= 0:
                self._arrive(packet)
            else:
                self._schedule(trio.current_time() + extra, packet, _ARRIVAL)
            return
        size = len(packet.payload) + UDP_HEADER + IP_HEADER[packet.family]
        if policy.bandwidth is not None:
            ends = ends or self.ends(packet)
            assert ends is not None  # forward dropped a datagram with no route
            wait = self._faults.queue(*ends).admit(
                trio.current_time() + extra,
                size,
                bandwidth=policy.bandwidth,
                limit=policy.queue,
            )
            if wait is None:
                self._drop(packet, "queue")
                return
            extra += wait
        fate = plan_fate(policy, size, self._rng)
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
                self._schedule(trio.current_time() + delay, packet, _ARRIVAL)

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

    def _report_unreachable(self, packet: Packet) -> None:
        """ICMP port unreachable: Linux reports it to connected sockets only."""
        sender = packet.sender
        if sender is None or not sender.connected_to(packet.dst):
            return
        self._trace.event("icmp", packet)
        ends = self.ends(packet)
        policy = self._faults.policy(
            None if ends is None else frozenset(ends), self.policy
        )
        if policy.latency <= 0:
            sender.refuse()
        else:
            self._schedule(trio.current_time() + policy.latency, packet, _ICMP)

    def _drop(self, packet: Packet, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self._trace.event("drop", packet, reason)

    # ---- the wire task: delayed deliveries ---------------------------------

    def _schedule(self, when: float, packet: Packet, kind: int) -> None:
        self._heap_seq += 1
        heapq.heappush(self._heap, (when, self._heap_seq, packet, kind))
        if self._task_scope is None:
            self._task_scope = trio.CancelScope()
            trio.lowlevel.spawn_system_task(
                self._run,
                self._task_scope,
                name="trioudp VirtualNetwork wire",
            )
        elif self._wake_scope is not None and when < self._wake_scope.deadline:
            self._wake_scope.deadline = when

    async def _run(self, task_scope: trio.CancelScope) -> None:
        heap = self._heap
        task = trio.lowlevel.current_task()

        def wake(_: object) -> trio.lowlevel.Abort:
            # Called by Trio inside its deadline processing. A real
            # cancellation (uninstall, the run ending) ends the task as usual.
            # A deadline is a delivery time: deliver what is due right here,
            # so the receivers run in the same scheduler pass as this task
            # rather than one later, and resume normally, so no Cancelled is
            # raised and caught on every wake. See the module's invariants.
            scope = self._wake_scope
            if scope is None or trio.current_time() < scope.deadline:
                return trio.lowlevel.Abort.SUCCEEDED
            self._deliver_due()
            trio.lowlevel.reschedule(task)
            return trio.lowlevel.Abort.FAILED

        with task_scope:
            while True:
                with trio.CancelScope(
                    deadline=heap[0][0] if heap else math.inf
                ) as scope:
                    self._wake_scope = scope
                    await trio.lowlevel.wait_task_rescheduled(wake)
                self._wake_scope = None
                self._deliver_due()
        if self._task_scope is task_scope:
            self._task_scope = None
            self._wake_scope = None

    def _deliver_due(self) -> None:
        """Deliver every datagram (and ICMP report) whose time has come.

        Runs in the wire task and in its wake-up callback; it never awaits
        and never raises: it only queues datagrams and reschedules tasks.
        """
        heap = self._heap
        now = trio.current_time()
        down = self._faults.down
        while heap and heap[0][0] <= now:
            _, _, packet, kind = heapq.heappop(heap)
            if kind == _ARRIVAL:
                if down and self._to_down_host(packet):
                    self._drop(packet, "host_down")
                    continue
                self._arrive(packet)
            elif packet.sender is not None:
                packet.sender.refuse()

    def _to_down_host(self, packet: Packet) -> bool:
        """Whether a datagram arriving now arrives at a crashed host."""
        host = packet.to or self._hosts.host_of(packet.dst[0])
        return host in self._faults.down

    def uninstall(self) -> None:
        """End the wire task and drop what is still in flight (``uninstalled``)."""
        task_scope, self._task_scope = self._task_scope, None
        self._wake_scope = None
        if task_scope is not None:
            task_scope.cancel()
        for _, _, packet, _ in self._heap:
            self._drop(packet, "uninstalled")
        self._heap.clear()
