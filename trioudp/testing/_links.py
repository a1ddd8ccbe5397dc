"""Link behaviour: what happens to one datagram on its way, and a link's transmit queue. Pure; no I/O, no Trio."""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    import random

__all__ = ["Fate", "LinkPolicy", "LinkQueue", "fragments", "plan_fate"]


def _probability(
    instance: object, attribute: attrs.Attribute[float], value: float
) -> None:
    if not (isinstance(value, (int, float)) and 0 <= value <= 1):
        msg = f"{attribute.name} must be a probability in [0, 1], not {value!r}"
        raise ValueError(msg)


def _seconds(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        msg = f"{attribute.name} must be a number of seconds >= 0, not {value!r}"
        raise ValueError(msg)


def _optional_seconds(
    instance: object, attribute: attrs.Attribute[float | None], value: float | None
) -> None:
    if value is not None:
        _seconds(instance, attribute, value)  # type: ignore[arg-type]


def _optional_rate(
    instance: object, attribute: attrs.Attribute[float | None], value: float | None
) -> None:
    if value is not None and not (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    ):
        msg = f"{attribute.name} must be a number > 0 or None, not {value!r}"
        raise ValueError(msg)


def _tail_shape(
    instance: object, attribute: attrs.Attribute[float | None], value: float | None
) -> None:
    if value is not None and not (
        isinstance(value, (int, float)) and math.isfinite(value) and value > 1
    ):
        msg = (
            "tail_shape must be a Pareto shape > 1 (its mean is then finite),"
            f" or None for an exponential tail, not {value!r}"
        )
        raise ValueError(msg)


def _optional_count(
    instance: object, attribute: attrs.Attribute[Any], value: int | None
) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or value < 0
    ):
        msg = f"{attribute.name} must be an int >= 0 or None, not {value!r}"
        raise ValueError(msg)


def _optional_mtu(
    instance: object, attribute: attrs.Attribute[int | None], value: int | None
) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or value < 68
    ):
        msg = f"mtu must be an int >= 68 (the IPv4 minimum) or None, not {value!r}"
        raise ValueError(msg)


@attrs.frozen(kw_only=True)
class LinkPolicy:
    """How a link treats datagrams. All randomness comes from the network's seed.

    Args:
        latency: one-way delay in seconds.
        jitter: extra delay drawn uniformly from ``[0, jitter]`` per datagram.
        loss: probability that a datagram is dropped.
        duplicate: probability that a datagram is delivered twice.
        reorder: probability that a datagram is held back by ``reorder_delay``
            so that later ones overtake it.
        reorder_delay: the hold-back; default ``latency + jitter + 1 ms``.
        mtu: largest IP packet (payload plus 28 bytes of IPv4 or 48 of IPv6
            headers). Larger datagrams cross in fragments, as Linux sends
            them, each lost on its own at rate ``loss``: lose one, lose the
            datagram. (A socket with ``IP_PMTUDISC_DO`` gets EMSGSIZE
            instead; ``IP_MTU`` reads it.) None: no limit, no fragments.
        tail: the mean of a long tail of extra delay, in seconds, drawn per
            datagram on top of ``latency`` and ``jitter``: exponential, or
            Pareto with ``tail_shape``. 0: no tail.
        tail_shape: None for an exponential tail; a number above 1 for a
            Pareto (Lomax) tail of that shape and mean ``tail``, whose rare
            delays are far longer (below 2, its variance is infinite: the
            congested-path delays that time out a retransmitting client).
        bandwidth: bytes per second each direction of the link carries
            (``125_000`` is 1 Mbit/s), counting the IP and UDP headers; a
            datagram waits for the ones ahead of it to be sent. None: no
            limit.
        queue: with ``bandwidth``, how many datagrams may wait behind the
            one being sent (Linux's ``txqueuelen`` is 1000); more are tail
            dropped (reason ``queue``). None: no limit.

    Example:
        >>> LinkPolicy(latency=0.05, loss=0.1).evolve(loss=0.0)  # doctest: +NORMALIZE_WHITESPACE
        LinkPolicy(latency=0.05, jitter=0.0, loss=0.0, duplicate=0.0, reorder=0.0,
                   reorder_delay=None, mtu=None, tail=0.0, tail_shape=None,
                   bandwidth=None, queue=1000)
    """

    latency: float = attrs.field(default=0.0, validator=_seconds)
    jitter: float = attrs.field(default=0.0, validator=_seconds)
    loss: float = attrs.field(default=0.0, validator=_probability)
    duplicate: float = attrs.field(default=0.0, validator=_probability)
    reorder: float = attrs.field(default=0.0, validator=_probability)
    reorder_delay: float | None = attrs.field(default=None, validator=_optional_seconds)
    mtu: int | None = attrs.field(default=None, validator=_optional_mtu)
    tail: float = attrs.field(default=0.0, validator=_seconds)
    tail_shape: float | None = attrs.field(default=None, validator=_tail_shape)
    bandwidth: float | None = attrs.field(default=None, validator=_optional_rate)
    queue: int | None = attrs.field(default=1000, validator=_optional_count)

    def evolve(self, **changes: float | None) -> LinkPolicy:
        """A copy with some settings changed (validated like the constructor)."""
        return attrs.evolve(self, **changes)  # type: ignore[arg-type]

    @property
    def is_instant(self) -> bool:
        """Whether every datagram is delivered at once, exactly once."""
        return self == _INSTANT


_INSTANT = LinkPolicy()


@attrs.frozen
class Fate:
    """What :func:`plan_fate` decided: a drop reason, or one delay per copy.

    Example:
        >>> Fate(drop="loss").delays
        ()
    """

    drop: str | None = None
    delays: tuple[float, ...] = ()


def fragments(packet_size: int, mtu: int | None, *, ipv6: bool = False) -> int:
    """How many IP fragments a packet of ``packet_size`` bytes (headers
    included) crosses a link of ``mtu`` in: each carries a multiple of 8
    bytes of the datagram, after its own IP header (and, in IPv6, an 8-byte
    fragment header).

    Example:
        >>> fragments(1500, 1500), fragments(3028, 1500), fragments(3048, 1280, ipv6=True)
        (1, 3, 3)
    """
    if mtu is None or packet_size <= mtu:
        return 1
    header = 40 if ipv6 else 20
    per_fragment = (mtu - header - (8 if ipv6 else 0)) // 8 * 8
    return -(-(packet_size - header) // per_fragment)


def plan_fate(
    policy: LinkPolicy, packet_size: int, rng: random.Random, *, ipv6: bool = False
) -> Fate:
    """Decide a datagram's fate on a link with ``policy``.

    ``packet_size`` is the IP packet's size (headers included; ``ipv6``: an
    IPv6 one). Draws from ``rng`` only for the settings that are in use, in a
    fixed order, so the same seed and the same sends give the same fates.
    Above the link's MTU the datagram crosses in fragments, each
    lost on its own.

    Example:
        >>> import random
        >>> plan_fate(LinkPolicy(latency=0.01), 100, random.Random(0))
        Fate(drop=None, delays=(0.01,))
        >>> plan_fate(LinkPolicy(mtu=576, loss=0.3), 3000, random.Random(0)).drop
        'loss'
    """
    if policy.loss:
        for _ in range(fragments(packet_size, policy.mtu, ipv6=ipv6)):
            if rng.random() < policy.loss:
                return Fate(drop="loss")
    copies = 2 if policy.duplicate and rng.random() < policy.duplicate else 1
    delays = []
    for _ in range(copies):
        delay = policy.latency
        if policy.jitter:
            delay += rng.uniform(0, policy.jitter)
        if policy.reorder and rng.random() < policy.reorder:
            hold_back = policy.reorder_delay
            if hold_back is None:
                hold_back = policy.latency + policy.jitter + 0.001
            delay += hold_back
        if policy.tail:
            delay += _tail_delay(policy.tail, policy.tail_shape, rng)
        delays.append(delay)
    return Fate(delays=tuple(delays))


def _tail_delay(mean: float, shape: float | None, rng: random.Random) -> float:
    """An extra delay with the given mean: exponential, or Pareto (Lomax)."""
    if shape is None:
        return rng.expovariate(1 / mean)
    # Lomax(shape, scale) = scale * (Pareto(shape) - 1); mean = scale / (shape - 1).
    return mean * (shape - 1) * (rng.paretovariate(shape) - 1)


class LinkQueue:
    """One direction of a link with a bandwidth: the datagrams being sent or
    waiting, as the times their last byte leaves.

    Example:
        >>> queue = LinkQueue()
        >>> queue.admit(0.0, 1000, bandwidth=1000, limit=1)  # sent at once: 1 s
        1.0
        >>> queue.admit(0.0, 1000, bandwidth=1000, limit=1)  # waits 1 s, then 1 s
        2.0
        >>> queue.admit(0.0, 1000, bandwidth=1000, limit=1) is None  # tail drop
        True
    """

    __slots__ = ("_done",)

    def __init__(self) -> None:
        self._done: deque[float] = deque()

    def admit(
        self, now: float, size: int, *, bandwidth: float, limit: int | None
    ) -> float | None:
        """Queue a datagram of ``size`` bytes at ``now``: the seconds until its
        last byte leaves, or None if ``limit`` datagrams wait already."""
        done = self._done
        while done and done[0] <= now:
            done.popleft()
        if limit is not None and len(done) > limit:  # one is being sent
            return None
        finish = max(now, done[-1] if done else now) + size / bandwidth
        done.append(finish)
        return finish - now
