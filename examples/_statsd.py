"""StatsD metrics (counters, gauges, timers, sets) aggregated between flushes.

Pure: no I/O and no Trio. A datagram holds one metric per line,
``name:value|type[|@rate][|#tags]``; :meth:`Aggregator.add_untrusted` counts
the lines it cannot use instead of raising. Memory is bounded: at most
``max_metrics`` names and ``max_set_members`` members per set are kept
between flushes (more is counted as ``dropped``).
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Aggregator", "MalformedMetric", "parse_untrusted", "percentile"]

_NAME = re.compile(r"[^\s:|@#\ufffd]{1,200}")  # \ufffd: bytes that were not UTF-8
_KINDS = {"c", "g", "ms", "h", "s"}


class MalformedMetric(ValueError):
    """A line that is not ``name:value|type[|@rate][|#tags]``."""


def parse_untrusted(line: str) -> tuple[str, str, str, float]:
    """``(name, value, type, sample rate)`` of one metric line; raises only
    :class:`MalformedMetric`. The value stays text: its meaning depends on
    the type (a set member, or a gauge's ``+``/``-`` delta).

    Example:
        >>> parse_untrusted("hits:1|c|@0.5")
        ('hits', '1', 'c', 0.5)
    """
    name, colon, rest = line.partition(":")
    fields = rest.split("|")
    if not colon or not _NAME.fullmatch(name) or len(fields) < 2 or not fields[0]:
        msg = f"not name:value|type: {line[:80]!r}"
        raise MalformedMetric(msg)
    value, kind, *options = fields
    if kind not in _KINDS:
        msg = f"unknown metric type {kind[:10]!r}"
        raise MalformedMetric(msg)
    rate = 1.0
    for option in options:
        if option.startswith("@"):
            rate = _number(option[1:])
            if not 0 < rate <= 1:
                msg = f"sample rate must be in (0, 1], not {option[:20]!r}"
                raise MalformedMetric(msg)
        elif not option.startswith("#"):  # DogStatsD tags: accepted, ignored
            msg = f"unknown field {option[:20]!r}"
            raise MalformedMetric(msg)
    if kind != "s":
        _number(value)
    return name, value, kind, rate


def _number(text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or "_" in text:
        msg = f"not a finite number: {text[:20]!r}"
        raise MalformedMetric(msg)
    return number


def percentile(ordered: list[float], percent: float) -> float:
    """The nearest-rank percentile of sorted, non-empty ``ordered``.

    Example:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([1.0, 2.0, 3.0, 4.0], 99)
        (2.0, 4.0)
    """
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]


def _plain(number: float) -> float | int:
    """Whole numbers as ints, so that JSON shows ``8`` rather than ``8.0``."""
    return int(number) if number.is_integer() else number


class Aggregator:
    """Metrics received since the last :meth:`flush`.

    Example:
        >>> aggregator = Aggregator()
        >>> aggregator.add_untrusted(b"hits:1|c|@0.5\\nload:3|g\\nbogus")
        1
        >>> aggregator.flush()["counters"]
        {'hits': 2}
    """

    def __init__(
        self, max_metrics: int = 10_000, max_set_members: int = 10_000
    ) -> None:
        self.max_metrics = max_metrics
        self.max_set_members = max_set_members
        self.counters: dict[str, float] = {}
        self.gauges: dict[str, float] = {}  # kept across flushes, as StatsD does
        self.timers: dict[str, list[float]] = {}
        self.sets: dict[str, set[str]] = {}
        self.malformed = 0
        self.dropped = 0

    def _room_for(self, table: Mapping[str, object], name: str) -> bool:
        if name in table or len(table) < self.max_metrics:
            return True
        self.dropped += 1
        return False

    def add_untrusted(self, data: bytes) -> int:
        """Add every metric line of a datagram; returns how many were malformed."""
        malformed = 0
        for line in data.decode("utf-8", "replace").splitlines():
            if not line.strip():
                continue
            try:
                self._add(*parse_untrusted(line.strip()))
            except MalformedMetric:
                malformed += 1
        self.malformed += malformed
        return malformed

    def _add(self, name: str, value: str, kind: str, rate: float) -> None:
        if kind == "c":
            if self._room_for(self.counters, name):
                self.counters[name] = self.counters.get(name, 0.0) + float(value) / rate
        elif kind == "g":
            if self._room_for(self.gauges, name):
                base = self.gauges.get(name, 0.0) if value[0] in "+-" else 0.0
                self.gauges[name] = base + float(value)
        elif kind in ("ms", "h"):
            if self._room_for(self.timers, name):
                self.timers.setdefault(name, []).append(float(value))
        elif self._room_for(self.sets, name):
            members = self.sets.setdefault(name, set())
            if value in members or len(members) < self.max_set_members:
                members.add(value)
            else:
                self.dropped += 1

    def flush(self) -> dict[str, object]:
        """The aggregates so far, as a JSON-ready dict; starts a new interval
        (gauges keep their values)."""
        timers = {}
        for name, values in self.timers.items():
            values.sort()
            timers[name] = {
                "count": len(values),
                "min": _plain(values[0]),
                "max": _plain(values[-1]),
                "mean": _plain(sum(values) / len(values)),
                **{f"p{p}": _plain(percentile(values, p)) for p in (50, 90, 99)},
            }
        report: dict[str, object] = {
            "counters": {name: _plain(v) for name, v in self.counters.items()},
            "gauges": {name: _plain(v) for name, v in self.gauges.items()},
            "timers": timers,
            "sets": {name: len(members) for name, members in self.sets.items()},
            "malformed": self.malformed,
            "dropped": self.dropped,
        }
        self.counters, self.timers, self.sets = {}, {}, {}
        self.malformed = self.dropped = 0
        return report
