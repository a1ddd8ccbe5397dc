"""What stands between two hosts: each pair's link policy, partitions (either way or one way), hosts that are down, flapping links, rules, transmit queues, and datagrams held on the wire.

The wire asks this state about every datagram (``Wire.forward``): first
:meth:`Faults.blocked` (a host down, a partition, a flapping link that is
down), then the rules (``_rules``), then whether it is held; the network's
``partition``, ``heal``, ``hold``, ``release``, ``set_link``, ``flap``,
``add_rule`` and ``crash`` change it, each followed by :meth:`Faults.refresh`.
A pair is unordered (a link's policy, a hold and flapping hold both ways); a
partition is ordered, one entry per blocked direction.

Invariants:
    * :attr:`Faults.active` is false exactly when no per-pair state, down
      host or rule exists, so the wire's common case asks nothing more (every
      change is followed by :meth:`Faults.refresh`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

from ._links import LinkQueue

if TYPE_CHECKING:
    from ._flaps import Flapping
    from ._links import LinkPolicy
    from ._model import Host, Packet
    from ._rules import Rule

__all__ = ["Faults", "Pair"]

#: Two hosts, either way round (one host twice for a host's own traffic).
Pair = frozenset["Host"]


@final
class Faults:
    """The per-pair state of one network; empty, every link is the default."""

    def __init__(self, flapping: Flapping) -> None:
        #: Pairs with their own link policy.
        self.links: dict[Pair, LinkPolicy] = {}
        #: Blocked directions: (from, to).
        self.partitions: set[tuple[Host, Host]] = set()
        self.holds: set[Pair] = set()
        self.hold_all = False
        #: Datagrams held now, in the order they were held.
        self.held: list[Packet] = []
        #: Hosts crashed and not restarted.
        self.down: set[Host] = set()
        self.flapping = flapping
        #: The rules, in the order they were added.
        self.rules: list[Rule] = []
        #: One transmit queue per direction (from, to) of a link with a bandwidth.
        self.queues: dict[tuple[Host, Host], LinkQueue] = {}
        self.active = False

    def refresh(self) -> None:
        """Recompute :attr:`active` after a change."""
        self.active = bool(
            self.links
            or self.partitions
            or self.holds
            or self.hold_all
            or self.down
            or self.flapping
            or self.rules
        )

    def blocked(self, src: Host, dst: Host) -> str | None:
        """Why a datagram from host ``src`` to ``dst`` cannot go now (a drop
        reason), or None."""
        down = self.down
        if down and (src in down or dst in down):
            return "host_down"
        if self.partitions and (src, dst) in self.partitions:
            return "partition"
        if self.flapping and self.flapping.is_down(frozenset((src, dst))):
            return "link_down"
        return None

    def is_held(self, pair: Pair) -> bool:
        """Whether datagrams between ``pair`` are held now."""
        return self.hold_all or pair in self.holds

    def policy(self, pair: Pair | None, default: LinkPolicy) -> LinkPolicy:
        """The policy in force between ``pair`` (None: not a pair of hosts)."""
        return self.links.get(pair, default) if pair is not None else default

    def queue(self, src: Host, dst: Host) -> LinkQueue:
        """The transmit queue from ``src`` to ``dst`` (made on first use)."""
        queue = self.queues.get((src, dst))
        if queue is None:
            queue = self.queues[src, dst] = LinkQueue()
        return queue

    def partition(self, a: Host, b: Host, *, one_way: bool) -> None:
        """Block ``a`` to ``b`` and, unless ``one_way``, ``b`` to ``a``."""
        self.partitions.add((a, b))
        if not one_way:
            self.partitions.add((b, a))

    def heal(self, a: Host | None, b: Host | None, *, one_way: bool = False) -> None:
        """End the partition and flapping between ``a`` and ``b`` (only
        ``a`` to ``b``'s partition if ``one_way``), or (None) every one."""
        if a is None or b is None:
            self.partitions.clear()
            self.flapping.stop(None)
            return
        self.partitions.discard((a, b))
        if not one_way:
            self.partitions.discard((b, a))
            self.flapping.stop(frozenset((a, b)))

    def hold(self, pair: Pair | None) -> None:
        """Hold datagrams between ``pair``, or (None) everywhere."""
        if pair is None:
            self.hold_all = True
        else:
            self.holds.add(pair)

    def unhold(self, pair: Pair | None) -> None:
        """Stop holding between ``pair``, or (None) everywhere (the held
        datagrams stay until the wire releases them)."""
        if pair is None:
            self.hold_all = False
            self.holds.clear()
        else:
            self.holds.discard(pair)
