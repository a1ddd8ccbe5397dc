"""The verbs of VirtualNetwork that shape and break the network: link settings, partitions, flapping links, holds, rules and crashes.

A base class of :class:`~trioudp.testing.VirtualNetwork` (``_network``), kept
apart so that each module stays small; it reads the parts the network
wires together and the methods it declares below, and holds no state of
its own. What each verb changes lives in ``_faults`` (per-pair state),
``_flaps``, ``_rules`` and ``_outages``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._faults import Faults, Pair
    from ._hosts import Hosts
    from ._links import LinkPolicy
    from ._model import Host
    from ._outages import Outages
    from ._rules import Rule
    from ._trace import Recorder
    from ._wire import Wire

__all__ = ["FaultVerbs"]


class FaultVerbs:
    """Link settings and faults of a :class:`VirtualNetwork` (see there)."""

    _faults: Faults
    _outages: Outages
    _trace: Recorder
    _wire: Wire
    _installed: bool
    _hosts: Hosts

    # ---- link behaviour ---------------------------------------------------

    @property
    def policy(self) -> LinkPolicy:
        """The default :class:`LinkPolicy` of every link."""
        return self._wire.policy

    def configure(self, **settings: float | None) -> None:
        """Change default link settings while the network runs.

        Example::

            net.configure(loss=0.3, latency=0.02)
        """
        self._wire.policy = self._wire.policy.evolve(**settings)

    def _pair(self, a: str | Host, b: str | Host) -> Pair:
        return frozenset((self._hosts.find(a), self._hosts.find(b)))

    def set_link(self, a: str | Host, b: str | Host, **settings: float | None) -> None:
        """Give the link between hosts ``a`` and ``b`` (both ways) its own policy,
        starting from the default one. ``a`` may equal ``b``.

        Example::

            net.set_link("10.0.0.1", "10.0.0.2", latency=0.1, loss=0.05)
        """
        self._faults.links[self._pair(a, b)] = self._wire.policy.evolve(**settings)
        self._faults.refresh()

    def link(self, a: str | Host, b: str | Host) -> LinkPolicy:
        """The policy in force between hosts ``a`` and ``b``."""
        return self._faults.policy(self._pair(a, b), self._wire.policy)

    def partition(self, a: str | Host, b: str | Host, *, one_way: bool = False) -> None:
        """Drop every datagram between hosts ``a`` and ``b`` (both ways, or
        with ``one_way`` only from ``a`` to ``b``) until :meth:`heal`.

        Dropped datagrams count as ``partition`` in :attr:`stats`; the
        trace records the partition (``partition a > b``, or ``a <> b``).

        Example::

            net.partition("10.0.0.1", "10.0.0.2", one_way=True)
            # 10.0.0.1 -> 10.0.0.2 is dropped; 10.0.0.2 -> 10.0.0.1 flows
        """
        host_a, host_b = self._hosts.find(a), self._hosts.find(b)
        self._faults.partition(host_a, host_b, one_way=one_way)
        self._faults.refresh()
        self._trace.note("partition", _between(host_a, host_b, one_way=one_way))

    def heal(
        self,
        a: str | Host | None = None,
        b: str | Host | None = None,
        *,
        one_way: bool = False,
    ) -> None:
        """End the partition between ``a`` and ``b`` (with ``one_way``, only
        its ``a`` to ``b`` direction) and stop their link flapping
        (:meth:`flap`), leaving it up; without hosts, end every partition
        and every flapping.

        Example::

            net.heal("10.0.0.1", "10.0.0.2")
            net.heal()  # everything
        """
        if a is None or b is None:
            self._faults.heal(None, None)
            what = "all"
        else:
            host_a, host_b = self._hosts.find(a), self._hosts.find(b)
            self._faults.heal(host_a, host_b, one_way=one_way)
            what = _between(host_a, host_b, one_way=one_way)
        self._faults.refresh()
        self._trace.note("heal", what)

    def flap(
        self, a: str | Host, b: str | Host, *, fail_rate: float, repair_rate: float
    ) -> None:
        """Make the link between ``a`` and ``b`` fail and repair, from now
        until :meth:`heal`: up for times with mean ``1 / fail_rate``
        seconds, down (both ways: reason ``link_down``) for times with mean
        ``1 / repair_rate``, both exponential and drawn from the seed.

        The link is up now. Each change is a trace event (``link_down``,
        ``link_up``) at the moment it happens, whether or not a datagram
        crosses; the schedule depends only on the seed and the two hosts,
        not on the traffic. Under the autojump clock the network wakes at
        each change, so a test that flaps a link ends or heals it.

        Raises:
            ValueError: a rate is negative or not a number.

        Example::

            net.flap("10.0.0.1", "10.0.0.2", fail_rate=0.5, repair_rate=4.0)
            # up about 2 s at a time, down about 0.25 s
        """
        host_a, host_b = self._hosts.find(a), self._hosts.find(b)
        key = "/".join(sorted((host_a.addresses[0], host_b.addresses[0])))
        self._faults.flapping.start(
            frozenset((host_a, host_b)),
            key,
            _between(host_a, host_b, one_way=False),
            fail_rate,
            repair_rate,
        )
        self._faults.refresh()

    def hold(self, a: str | Host | None = None, b: str | Host | None = None) -> None:
        """Keep datagrams between ``a`` and ``b`` (or all) on the wire until :meth:`release`."""
        self._faults.hold(None if a is None or b is None else self._pair(a, b))
        self._faults.refresh()

    def release(self, a: str | Host | None = None, b: str | Host | None = None) -> None:
        """Stop holding (between ``a`` and ``b``, or everywhere) and send the held
        datagrams on, each with its link's delay counted from now; the faults
        and rules in force now apply to them."""
        self._faults.unhold(None if a is None or b is None else self._pair(a, b))
        self._faults.refresh()
        self._wire.release()

    @property
    def held(self) -> int:
        """How many datagrams are held now."""
        return len(self._faults.held)

    # ---- rules ---------------------------------------------------------------

    def add_rule(self, rule: Rule) -> Rule:
        """Let ``rule`` judge each datagram as it goes onto its link, until
        :meth:`remove_rule`; returns ``rule`` (so it works as a decorator).

        A rule is called with a frozen :class:`UDPPacket` and returns a
        :class:`Verdict` (drop it, delay it, copy it, change its bytes), or
        None to leave it to the next rule and then to its link. Rules are
        asked in the order they were added, the first verdict decides, after
        crashes, partitions and flapping and before the link's own fate;
        a held datagram is judged when it is released. A rule runs inside
        the ``sendto`` (or :meth:`release`) that put the datagram on the
        wire, and what it raises, that call raises. Its effects are traced:
        ``drop rule``, ``corrupt``, ``delay``, ``duplicate``.

        Example::

            @net.add_rule
            def lose_the_first_vote(packet: UDPPacket) -> Verdict | None:
                if packet.payload.startswith(b"vote"):
                    net.remove_rule(lose_the_first_vote)
                    return Verdict(drop=True)
                return None
        """
        if not callable(rule):
            msg = f"a rule is a callable taking a UDPPacket, not {rule!r}"
            raise TypeError(msg)
        self._faults.rules.append(rule)
        self._faults.refresh()
        return rule

    def remove_rule(self, rule: Rule) -> None:
        """Stop asking ``rule`` (added by :meth:`add_rule`).

        Raises:
            ValueError: ``rule`` is not one of this network's rules.

        Example::

            net.remove_rule(lose_the_first_vote)
        """
        try:
            self._faults.rules.remove(rule)
        except ValueError:
            msg = f"{rule!r} is not a rule of this network"
            raise ValueError(msg) from None
        self._faults.refresh()

    # ---- crashes ---------------------------------------------------------------

    def crash(self, host: str | Host) -> None:
        """Crash ``host``: it goes silent until :meth:`restart`.

        At once, as a power cut would: the tasks started under
        :meth:`on_host` for it are cancelled; every socket on it is closed
        (operations on them raise as after ``close()``; a task that was
        not started under :meth:`on_host` and waits on one gets
        ``trio.ClosedResourceError``); every datagram from or to it, those
        in flight included, is dropped with reason ``host_down`` and no
        ICMP error, so its peers see silence. The trace records ``crash``.

        Raises:
            RuntimeError: ``host`` has crashed already, or the network is
                not installed.

        Example::

            with net.on_host("10.0.0.2"):
                nursery.start_soon(node, 2)
            ...
            net.crash("10.0.0.2")
        """
        if not self._installed:
            msg = "crash() needs the network installed (inside trio.run, in install())"
            raise RuntimeError(msg)
        self._outages.crash(self._hosts.find(host))

    def restart(self, host: str | Host) -> None:
        """Bring a crashed ``host`` back, empty: no socket, no task; start
        its program again under :meth:`on_host`. The trace records
        ``restart``.

        Raises:
            RuntimeError: ``host`` has not crashed.

        Example::

            net.restart("10.0.0.2")
            with net.on_host("10.0.0.2"):
                nursery.start_soon(node, 2)
        """
        self._outages.restart(self._hosts.find(host))


def _between(a: Host, b: Host, *, one_way: bool) -> str:
    """Two hosts as the trace names a fault between them."""
    return f"{a.name} {'>' if one_way else '<>'} {b.name}"
