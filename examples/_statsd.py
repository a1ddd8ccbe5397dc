"""StatsD metrics (counters, gauges, timers, sets) aggregated between flushes.

Pure: no I/O and no Trio. A datagram holds one metric per line,
``name:value|type[|@rate][|#tags]``; :meth:`Aggregator.add_untrusted` counts
the lines it cannot use instead of raising.

Memory is bounded: between flushes at most ``max_metrics`` names of each
type, ``max_timer_values`` timer values and ``max_set_members`` set members
in all, names and members of at most 200 characters. With the defaults that
is under 60 MiB however hostile the input; more is counted as ``dropped``.

Every flushed number is finite (JSON has no Infinity or NaN): a counter
whose value divided by its sample rate is out of the float range is
malformed, and a line that would take a counter's sum or a gauge out of
range is dropped, the aggregate kept as it was.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Aggregator", "MalformedMetric", "parse_untrusted", "percentile"]

_LONGEST = 200  # characters in a name or a set member
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
    if kind == "s":
        if len(value) > _LONGEST:
            msg = f"set member longer than {_LONGEST} characters"
            raise MalformedMetric(msg)
    elif not math.isfinite(_number(value) / rate):
        msg = f"{value[:20]!r} at sample rate {rate!r} is out of range"
        raise MalformedMetric(msg)
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


def _mean(ordered: list[float]) -> float:
    try:
        mean = math.fsum(ordered) / len(ordered)
    except OverflowError:  # the sum is out of range, the mean is not
        mean = 2 * math.fsum(value / 2 / len(ordered) for value in ordered)
    return min(max(mean, ordered[0]), ordered[-1])  # rounding stays inside


def _plain(number: float) -> float | int:
    """Whole numbers as ints, so that JSON shows ``8`` rather than ``8.0``
    (up to 2**53: beyond, floats are not exact integers)."""
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


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
        self,
        max_metrics: int = 10_000,
        max_set_members: int = 100_000,
        max_timer_values: int = 100_000,
    ) -> None:
        self.max_metrics = max_metrics
        self.max_set_members = max_set_members
        self.max_timer_values = max_timer_values
        self.counters: dict[str, float] = {}
        self.gauges: dict[str, float] = {}  # kept across flushes, as StatsD does
        self.timers: dict[str, list[float]] = {}
        self.sets: dict[str, set[str]] = {}
        self.malformed = 0
        self.dropped = 0
        self._timer_values = 0
        self._set_members = 0

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
                total = self.counters.get(name, 0.0) + float(value) / rate
                self._keep_finite(self.counters, name, total)
        elif kind == "g":
            if self._room_for(self.gauges, name):
                base = self.gauges.get(name, 0.0) if value[0] in "+-" else 0.0
                self._keep_finite(self.gauges, name, base + float(value))
        elif kind in ("ms", "h"):
            if self._timer_values >= self.max_timer_values:
                self.dropped += 1
            elif self._room_for(self.timers, name):
                self.timers.setdefault(name, []).append(float(value))
                self._timer_values += 1
        elif value not in self.sets.get(name, ()):
            if self._set_members >= self.max_set_members:
                self.dropped += 1
            elif self._room_for(self.sets, name):
                self.sets.setdefault(name, set()).add(value)
                self._set_members += 1

    def _keep_finite(self, table: dict[str, float], name: str, value: float) -> None:
        if math.isfinite(value):
            table[name] = value
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
                "mean": _plain(_mean(values)),
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
        self.malformed = self.dropped = self._timer_values = self._set_members = 0
        return report
