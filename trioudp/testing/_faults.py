"""What stands between two hosts: each pair's link policy, partitions, and datagrams held on the wire.

The wire asks this state about every datagram (``Wire.forward``); the
network's ``partition``, ``heal``, ``hold``, ``release`` and ``set_link``
change it. A pair is unordered: a fault between ``a`` and ``b`` holds both
ways.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from ._links import LinkPolicy
    from ._model import Host, Packet

__all__ = ["Faults", "Pair"]

#: Two hosts, either way round (one host twice for a host's own traffic).
Pair = frozenset["Host"]


@final
class Faults:
    """The per-pair state of one network; empty, every link is the default."""

    def __init__(self) -> None:
        #: Pairs with their own link policy.
        self.links: dict[Pair, LinkPolicy] = {}
        self.partitions: set[Pair] = set()
        self.holds: set[Pair] = set()
        self.hold_all = False
        #: Datagrams held now, in the order they were held.
        self.held: list[Packet] = []

    def is_held(self, pair: Pair) -> bool:
        """Whether datagrams between ``pair`` are held now."""
        return self.hold_all or pair in self.holds

    def policy(self, pair: Pair | None, default: LinkPolicy) -> LinkPolicy:
        """The policy in force between ``pair`` (None: not a pair of hosts)."""
        return self.links.get(pair, default) if pair is not None else default

    def heal(self, pair: Pair | None) -> None:
        """End the partition of ``pair``, or (None) every partition."""
        if pair is None:
            self.partitions.clear()
        else:
            self.partitions.discard(pair)

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
