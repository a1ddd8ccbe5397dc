"""Protection for servers: rate limits, an amplification guard, a loop guard, allow and deny lists.

Pure: no I/O, no Trio; the clock is passed in. Every table has a fixed size,
so a flood of spoofed sources cannot exhaust memory: the least recently
seen entry makes room for a new one.
"""

from __future__ import annotations

import ipaddress
import math
import socket
from collections import OrderedDict
from typing import TYPE_CHECKING, TypeVar

import attrs

from ._checks import check_bool, check_int, check_real, short_repr

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "AccessList",
    "AmplificationGuard",
    "LoopGuard",
    "RateLimit",
    "RateLimiter",
    "ReplyBudget",
    "prefix_key",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_K = TypeVar("_K")


def prefix_key(ip: str, ipv4_prefix: int, ipv6_prefix: int) -> tuple[int, int]:
    """``(family, network number)`` of ``ip`` cut to its prefix.

    IPv4-mapped IPv6 addresses count as IPv4.

    Example:
        >>> prefix_key("192.0.2.77", 24, 56) == prefix_key("192.0.2.1", 24, 56)
        True
        >>> prefix_key("2001:db8::1", 24, 56) == prefix_key("2001:db8:0:ff::9", 24, 56)
        True
    """
    if ":" not in ip:
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big") >> (
            32 - ipv4_prefix
        )
    packed = socket.inet_pton(socket.AF_INET6, ip.split("%", 1)[0])
    if packed[:12] == b"\0" * 10 + b"\xff\xff":
        return 4, int.from_bytes(packed[12:], "big") >> (32 - ipv4_prefix)
    return 6, int.from_bytes(packed, "big") >> (128 - ipv6_prefix)


def _networks(name: str, values: Iterable[str | Network]) -> tuple[Network, ...]:
    """The networks a field holds (a lone network or string is refused: it
    would be taken apart address by address, or letter by letter)."""
    lone = (str, bytes, ipaddress.IPv4Network, ipaddress.IPv6Network)
    if isinstance(values, lone) or not hasattr(values, "__iter__"):
        msg = (
            f"{name} must be a list of networks such as ['192.0.2.0/24'],"
            f" not {type(values).__name__} {short_repr(values)}"
        )
        raise TypeError(msg)
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


def _exempt(values: Iterable[str | Network]) -> tuple[Network, ...]:
    return _networks("exempt", values)


def _allow(values: Iterable[str | Network]) -> tuple[Network, ...]:
    return _networks("allow", values)


def _deny(values: Iterable[str | Network]) -> tuple[Network, ...]:
    return _networks("deny", values)


def _in_networks(ip: str, networks: tuple[Network, ...]) -> bool:
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def _take_token(
    buckets: OrderedDict[_K, tuple[float, float]],
    key: _K,
    now: float,
    *,
    burst: float,
    rate: float,
    table_size: int,
) -> bool:
    """Take a token from ``key``'s bucket (full when new) in a table of at
    most ``table_size`` buckets, the least recently used making room;
    False if none is left."""
    entry = buckets.get(key)
    if entry is None:
        tokens = float(burst)
        if len(buckets) >= table_size:
            buckets.popitem(last=False)
    else:
        tokens, last = entry
        tokens = min(burst, tokens + (now - last) * rate)
        buckets.move_to_end(key)
    allowed = tokens >= 1
    buckets[key] = (tokens - 1 if allowed else tokens, now)
    return allowed


def _remember(table: OrderedDict[_K, None], key: _K, table_size: int) -> None:
    """Put ``key`` in a table of at most ``table_size``, the least recently
    seen making room."""
    if key in table:
        table.move_to_end(key)
        return
    if len(table) >= table_size:
        table.popitem(last=False)
    table[key] = None


@attrs.frozen(kw_only=True)
class RateLimit:
    """Settings of a per-source token-bucket rate limit.

    Sources are grouped by address prefix (``/24`` for IPv4 and ``/56`` for
    IPv6 by default, as DNS Response Rate Limiting does), so that one host
    cannot dodge the limit by rotating through its neighbours' addresses.

    Args:
        rate: datagrams per second each prefix may send, on average.
        burst: how many it may send at once (the bucket's size).
        ipv4_prefix, ipv6_prefix: the prefix lengths that group sources.
        table_size: most prefixes tracked at once (memory is bounded by it).
        log_only: count and log what would be dropped, but drop nothing.
        exempt: networks never limited (e.g. ``["127.0.0.0/8", "::1/128"]``).

    Example:
        >>> RateLimit(rate=100, burst=200).ipv4_prefix
        24
    """

    rate: float = attrs.field()
    burst: float = attrs.field()
    ipv4_prefix: int = 24
    ipv6_prefix: int = 56
    table_size: int = 65_536
    log_only: bool = False
    exempt: tuple[Network, ...] = attrs.field(default=(), converter=_exempt)

    @rate.validator
    def _check_rate(self, attribute: attrs.Attribute[float], value: float) -> None:
        if not (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value > 0
        ):
            msg = (
                f"rate must be a positive number of datagrams per second, not {value!r}"
            )
            raise ValueError(msg)

    @burst.validator
    def _check_burst(self, attribute: attrs.Attribute[float], value: float) -> None:
        if not (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value >= 1
        ):
            msg = f"burst must be a number >= 1, not {value!r}"
            raise ValueError(msg)

    def __attrs_post_init__(self) -> None:
        check_int("ipv4_prefix", self.ipv4_prefix, low=1, high=32)
        check_int("ipv6_prefix", self.ipv6_prefix, low=1, high=128)
        check_int("table_size", self.table_size, low=1)
        check_bool("log_only", self.log_only)


#: Most sources a :class:`RateLimiter` keeps the bucket key of.
_KEYS_KEPT = 4096
_UNKNOWN: tuple[int, int] = (-1, -1)


class RateLimiter:
    """Token buckets per source prefix, in a table of fixed size.

    Example:
        >>> limiter = RateLimiter(RateLimit(rate=1, burst=2))
        >>> [limiter.allow("192.0.2.1", now=0.0) for _ in range(3)]
        [True, True, False]
        >>> limiter.allow("192.0.2.200", now=1.0)  # same /24, one token refilled
        True
    """

    def __init__(self, policy: RateLimit) -> None:
        self.policy = policy
        # key -> (tokens, time of last update)
        self._buckets: OrderedDict[tuple[int, int], tuple[float, float]] = OrderedDict()
        # Source -> its bucket's key, None if exempt: parsing the address
        # for each datagram cost 3.6 us against 0.1 us for an exempt
        # source (0.65 against 1.3 for a limited one). Emptied when full, so
        # a flood of new sources costs about what it did without it.
        self._keys: dict[str, tuple[int, int] | None] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def _key(self, ip: str) -> tuple[int, int] | None:
        """``ip``'s bucket key, None if it is exempt; kept in ``_keys``."""
        policy = self.policy
        key = (
            None
            if policy.exempt and _in_networks(ip, policy.exempt)
            else prefix_key(ip, policy.ipv4_prefix, policy.ipv6_prefix)
        )
        keys = self._keys
        if len(keys) >= _KEYS_KEPT:
            keys.clear()
        keys[ip] = key
        return key

    def allow(self, ip: str, now: float) -> bool:
        """Take a token for a datagram from ``ip`` at time ``now``; False if none is left."""
        key = self._keys.get(ip, _UNKNOWN)
        if key is _UNKNOWN:
            key = self._key(ip)
        if key is None:
            return True
        policy = self.policy
        return _take_token(
            self._buckets,
            key,
            now,
            burst=policy.burst,
            rate=policy.rate,
            table_size=policy.table_size,
        )


class AmplificationGuard:
    """Limits the bytes sent to a peer not yet validated to ``factor`` times
    the bytes received from it (QUIC's rule, RFC 9000 section 8, k = 3).

    A spoofed source cannot then turn the server into a reflector that
    multiplies its traffic. Validating a peer (the handler knows it answered a
    challenge, or holds a token) lifts the limit for it.

    Memory is bounded: at most ``table_size`` peers not yet validated (the
    least recently seen makes room for a new one) and, apart from them, at
    most ``table_size`` validated peers. A flood of spoofed sources therefore
    churns only the first table: it never evicts a validated peer.

    Example:
        >>> guard = AmplificationGuard(factor=3)
        >>> guard.on_receive(("192.0.2.1", 5000), 10)
        >>> guard.may_send(("192.0.2.1", 5000), 30), guard.may_send(("192.0.2.1", 5000), 1)
        (True, False)
        >>> guard.validate(("192.0.2.1", 5000))
        >>> guard.may_send(("192.0.2.1", 5000), 10_000)
        True
    """

    def __init__(self, factor: float = 3.0, table_size: int = 65_536) -> None:
        check_real("factor", factor, low=1)
        check_int("table_size", table_size, low=1)
        self.factor = factor
        self.table_size = table_size
        # peer not yet validated -> [bytes received, bytes sent]
        self._peers: OrderedDict[tuple[str, int], list[int]] = OrderedDict()
        # validated peers, least recently seen first
        self._validated: OrderedDict[tuple[str, int], None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._peers) + len(self._validated)

    def _entry(self, peer: tuple[str, int]) -> list[int]:
        peers = self._peers
        entry = peers.get(peer)
        if entry is None:
            if len(peers) >= self.table_size:
                peers.popitem(last=False)
            entry = peers[peer] = [0, 0]
        else:
            peers.move_to_end(peer)
        return entry

    def on_receive(self, peer: tuple[str, int], size: int) -> None:
        """Count ``size`` bytes received from ``peer`` (a UDP header's worth
        at least, so that empty datagrams earn a little credit too)."""
        # Once per datagram a server admits: _entry's common case inline.
        entry = self._peers.get(peer)
        if entry is None:
            if peer in self._validated:
                self._validated.move_to_end(peer)
                return
            entry = self._entry(peer)
        else:
            self._peers.move_to_end(peer)
        entry[0] += size if size > 8 else 8

    def may_send(self, peer: tuple[str, int], size: int) -> bool:
        """Whether ``size`` more bytes may go to ``peer``; if so, count them."""
        # Once per reply: _entry's common case inline.
        entry = self._peers.get(peer)
        if entry is None:
            if peer in self._validated:
                return True
            entry = self._entry(peer)
        else:
            self._peers.move_to_end(peer)
        if entry[1] + size > self.factor * entry[0]:
            return False
        entry[1] += size
        return True

    def validate(self, peer: tuple[str, int]) -> None:
        """Lift the limit for ``peer``."""
        self._peers.pop(peer, None)
        _remember(self._validated, peer, self.table_size)


def _positive(
    instance: object, attribute: attrs.Attribute[float], value: float
) -> None:
    check_real(attribute.name, value, low=0)
    if not value > 0:
        msg = f"{attribute.name} must be a number > 0, not {value!r}"
        raise ValueError(msg)


@attrs.frozen(kw_only=True)
class LoopGuard:
    """Settings of the guard against reply loops with other services, on by
    default in :func:`serve_udp`.

    Two services that each answer whatever reaches them (two echo servers; an
    echo and a DNS or NTP server, CVE-2024-2169) answer each other forever
    once a neighbour forges one datagram from one to the other. A service
    sends from the port it serves, and a client from a port the kernel picks
    (Linux 32768-60999, other systems 49152-65535); so a server holds each
    peer whose source port is below ``ports_below``, or is the server's own
    port (two services on one port of that range), to a budget of replies:
    ``burst`` at once, refilled at ``rate`` a second. A loop answers at the
    speed of the round trip and spends the budget at once: the first reply
    withheld ends it. Replies withheld are counted (``dropped_loop``).

    Not held to it: peers on loopback (nothing from outside the host reaches
    a server as loopback: see ``dropped_forged``), and peers a handler
    validated (:meth:`Datagram.validate_peer`).

    Args:
        burst: replies a peer may get at once.
        rate: replies a second it may get after that, on average.
        ports_below: peers whose source port is below this are held to the
            budget (1: only those on the server's own port).
        table_size: most peers tracked at once (memory is bounded by it).

    Example:
        >>> LoopGuard().burst, LoopGuard().ports_below
        (16, 32768)
    """

    burst: int = attrs.field(default=16)
    rate: float = attrs.field(default=2.0, validator=_positive)
    ports_below: int = 32768
    table_size: int = 4096

    def __attrs_post_init__(self) -> None:
        check_int("burst", self.burst, low=1)
        check_int("ports_below", self.ports_below, low=1, high=65536)
        check_int("table_size", self.table_size, low=1)


_LOOPBACK_PREFIXES = ("127.", "::ffff:127.")


class ReplyBudget:
    """The state of a :class:`LoopGuard`: a token bucket of replies per
    peer, in tables of fixed size (the least recently seen peer makes
    room), and the peers validated.

    Example:
        >>> budget = ReplyBudget(LoopGuard(burst=2, rate=1))
        >>> [budget.allow(("192.0.2.1", 53), now=0.0) for _ in range(3)]
        [True, True, False]
        >>> budget.allow(("192.0.2.1", 53), now=1.0)  # one refilled
        True
        >>> budget.allow(("127.0.0.1", 53), now=1.0), budget.allow(("192.0.2.2", 40000), now=1.0)
        (True, True)
        >>> [budget.allow(("192.0.2.3", 40000), 1.0, own_port=40000) for _ in range(3)]
        [True, True, False]
    """

    def __init__(self, policy: LoopGuard) -> None:
        self.policy = policy
        self._buckets: OrderedDict[tuple[str, int], tuple[float, float]] = OrderedDict()
        self._validated: OrderedDict[tuple[str, int], None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets) + len(self._validated)

    def allow(self, peer: tuple[str, int], now: float, own_port: int = -1) -> bool:
        """Take a reply to ``peer`` at time ``now`` from its budget; False
        if none is left (peers not held to a budget always get True). A
        peer on ``own_port`` (the replying socket's) is held whatever the
        port: a loop between two services on one port of the client range."""
        policy = self.policy
        host = peer[0]
        if (
            (peer[1] >= policy.ports_below and peer[1] != own_port)
            or host.startswith(_LOOPBACK_PREFIXES)
            or host == "::1"
            or peer in self._validated
        ):
            return True
        return _take_token(
            self._buckets,
            peer,
            now,
            burst=policy.burst,
            rate=policy.rate,
            table_size=policy.table_size,
        )

    def validate(self, peer: tuple[str, int]) -> None:
        """Exempt ``peer`` (:meth:`Datagram.validate_peer`)."""
        self._buckets.pop(peer, None)
        _remember(self._validated, peer, self.policy.table_size)


@attrs.frozen
class AccessList:
    """Networks allowed and denied, checked before any handler runs.

    A source is admitted if it is in ``allow`` (or ``allow`` is empty) and
    not in ``deny``.

    Example:
        >>> acl = AccessList(allow=["10.0.0.0/8"], deny=["10.6.6.0/24"])
        >>> acl.admits("10.1.2.3"), acl.admits("10.6.6.6"), acl.admits("192.0.2.1")
        (True, False, False)
    """

    allow: tuple[Network, ...] = attrs.field(default=(), converter=_allow)
    deny: tuple[Network, ...] = attrs.field(default=(), converter=_deny)

    def admits(self, ip: str) -> bool:
        """Whether datagrams from ``ip`` may reach the handler."""
        if self.allow and not _in_networks(ip, self.allow):
            return False
        return not (self.deny and _in_networks(ip, self.deny))
