"""Rules: per-datagram hooks that pass, drop, delay, duplicate or corrupt one specific message (trio's FakeNet ``route_packet``, turmoil's rules).

A rule is a plain callable: it receives a frozen :class:`UDPPacket` and
returns a :class:`Verdict`, or None to leave the datagram to the next rule
(and, after the last, to its link). The first verdict decides. The wire
(``Wire._judged``) applies it; this module is pure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

import attrs

from ._links import _seconds

if TYPE_CHECKING:
    import random
    from collections.abc import Iterable

    from ._model import Endpoint, Host

__all__ = ["Rule", "UDPPacket", "Verdict", "corrupted", "judge"]


@attrs.frozen(kw_only=True)
class UDPPacket:
    """A datagram on its way, as a rule sees it.

    Attributes:
        number: its number in the trace (``#3``); a multicast or broadcast
            datagram's copies share one.
        src, dst: ``(address, port)`` it is from and to.
        payload: its bytes.
        sender, receiver: the hosts it goes between (for a multicast or
            broadcast copy, the host that copy goes to).
        time: virtual seconds since the network was first installed, now,
            as it goes onto its link.

    Example::

        def drop_votes_to_node_3(packet: UDPPacket) -> Verdict | None:
            if packet.receiver.name == "node-3" and packet.payload.startswith(b"vote"):
                return Verdict(drop=True)
            return None
    """

    number: int
    src: Endpoint
    dst: Endpoint
    payload: bytes = attrs.field(repr=lambda payload: repr(payload[:32]))
    sender: Host
    receiver: Host
    time: float


def _count(minimum: int) -> Callable[[object, attrs.Attribute[int], int], None]:
    def check(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            msg = f"{attribute.name} must be an int >= {minimum}, not {value!r}"
            raise ValueError(msg)

    return check


@attrs.frozen(kw_only=True)
class Verdict:
    """What a rule decides for one datagram; ``Verdict()`` lets it pass as is.

    Args:
        drop: drop it (reason ``rule``); nothing else may be set then.
        delay: seconds it waits before its link's delay starts.
        copies: how many copies go onto the link (2 or more duplicates it;
            each copy meets the link's loss and delays on its own).
        payload: the bytes that arrive instead of its own (a rewrite).
        flip: how many of its bits are flipped, at positions drawn from
            the network's seed (corruption; checksums are not modelled, so
            the receiver gets the damaged bytes).

    Example:
        >>> Verdict(delay=0.5, copies=2)
        Verdict(drop=False, delay=0.5, copies=2, payload=None, flip=0)
        >>> Verdict(drop=True, delay=1.0)
        Traceback (most recent call last):
        ...
        ValueError: a dropped datagram cannot also be delayed, copied or changed
    """

    drop: bool = False
    delay: float = attrs.field(default=0.0, validator=_seconds)
    copies: int = attrs.field(default=1, validator=_count(1))
    payload: bytes | None = None
    flip: int = attrs.field(default=0, validator=_count(0))

    def __attrs_post_init__(self) -> None:
        if self.drop and (
            self.delay or self.copies != 1 or self.payload is not None or self.flip
        ):
            msg = "a dropped datagram cannot also be delayed, copied or changed"
            raise ValueError(msg)

    @property
    def changes_bytes(self) -> bool:
        """Whether the datagram arrives with other bytes than it was sent with."""
        return self.payload is not None or self.flip > 0


#: A rule: given a datagram, a verdict, or None for "not mine".
Rule: TypeAlias = Callable[[UDPPacket], "Verdict | None"]


def judge(rules: Iterable[Rule], packet: UDPPacket) -> Verdict | None:
    """The first verdict of ``rules`` on ``packet``, or None if none decides.

    Example:
        >>> from trioudp.testing import VirtualNetwork
        >>> host = VirtualNetwork().localhost
        >>> packet = UDPPacket(number=1, src=("127.0.0.1", 1), dst=("127.0.0.1", 2),
        ...                    payload=b"x", sender=host, receiver=host, time=0.0)
        >>> judge([lambda p: None, lambda p: Verdict(copies=2)], packet).copies
        2
    """
    for rule in tuple(rules):  # a rule may remove itself
        verdict = rule(packet)
        if verdict is not None:
            if not isinstance(verdict, Verdict):
                msg = (
                    f"a rule returns a Verdict or None, not {verdict!r} (from {rule!r})"
                )
                raise TypeError(msg)
            return verdict
    return None


def corrupted(payload: bytes, verdict: Verdict, rng: random.Random) -> bytes:
    """``payload`` as ``verdict`` makes it arrive.

    Example:
        >>> import random
        >>> corrupted(b"\\x00", Verdict(flip=1), random.Random(1))
        b'\\x04'
    """
    if verdict.payload is not None:
        payload = verdict.payload
    if not verdict.flip or not payload:
        return payload
    damaged = bytearray(payload)
    for _ in range(verdict.flip):
        bit = rng.randrange(len(damaged) * 8)
        damaged[bit // 8] ^= 1 << (bit % 8)
    return bytes(damaged)
