"""What the workers' supervisor decides, with no I/O: restart delays and
crash loops, and the sum of the workers' counters.
"""

from __future__ import annotations

import math
import os
from collections import deque
from typing import TYPE_CHECKING, Any

import attrs

from .._backoff import Backoff
from .._server import ServerStats
from ._sockets import WorkerSockets

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "DEFAULT_RESTART_BACKOFF",
    "CrashBudget",
    "check_settings",
    "default_workers",
    "is_count",
    "parse_addresses",
    "retired_report",
    "sum_stats",
]

#: Restart delays: 0.1 s after the first crash, doubling to at most 5 s.
DEFAULT_RESTART_BACKOFF = Backoff(initial=0.1, multiplier=2.0, maximum=5.0, jitter=0.0)
#: Fields of :class:`ServerStats` that are levels, not counts: a worker that
#: has ended holds nothing in flight.
_LEVELS = ("in_flight", "queued", "tasks")


@attrs.define
class CrashBudget:
    """How many crashes are tolerated, and how long to wait before a restart.

    Example:
        >>> budget = CrashBudget(DEFAULT_RESTART_BACKOFF, max_crashes=2, window=60.0)
        >>> budget.crashed(0.0), budget.crashed(1.0), budget.crashed(2.0)
        (0.1, 0.2, None)
        >>> budget.crashed(100.0)  # the old crashes have left the window
        0.1
    """

    backoff: Backoff
    max_crashes: int
    window: float
    _times: deque[float] = attrs.field(factory=deque, init=False)

    @property
    def recent(self) -> int:
        """Crashes in the window, as of the last :meth:`crashed`."""
        return len(self._times)

    def crashed(self, now: float) -> float | None:
        """Count a crash at ``now``: the seconds to wait before restarting,
        or None if there were more than ``max_crashes`` in ``window``."""
        self._times.append(now)
        while self._times[0] <= now - self.window:
            self._times.popleft()
        if len(self._times) > self.max_crashes:
            return None
        return self.backoff.base(len(self._times) - 1)


def check_settings(
    workers: object, grace: float, liveness_timeout: float | None, sockets: object
) -> None:
    """Refuse :func:`run_workers` settings out of range (ValueError, TypeError).

    Example:
        >>> check_settings(-1, 5.0, None, None)
        Traceback (most recent call last):
        ValueError: workers must be an int >= 0 (0 = one per CPU), not -1
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        msg = f"workers must be an int >= 0 (0 = one per CPU), not {workers!r}"
        raise ValueError(msg)
    if not (math.isfinite(grace) and grace >= 0):
        msg = f"grace must be a number of seconds >= 0, not {grace!r}"
        raise ValueError(msg)
    if liveness_timeout is not None and (
        isinstance(liveness_timeout, bool)
        or not (math.isfinite(liveness_timeout) and liveness_timeout > 0)
    ):
        msg = f"liveness_timeout must be a number of seconds > 0 or None, not {liveness_timeout!r}"
        raise ValueError(msg)
    if sockets is not None and not isinstance(sockets, WorkerSockets):
        msg = f"sockets must be a WorkerSockets or None, not {sockets!r}"
        raise TypeError(msg)


def sum_stats(reports: Iterable[Mapping[str, Any]]) -> ServerStats:
    """Add up workers' counters (the fields of :class:`ServerStats`).

    Values of the wrong type are skipped: reports come from another process.

    Example:
        >>> sum_stats([{"received": 2, "send_errors": {"EAGAIN": 1}},
        ...            {"received": 3, "send_errors": {"EAGAIN": 2}}]).received
        5
    """
    total: dict[str, Any] = {}
    for name, field in attrs.fields_dict(ServerStats).items():
        values = [report.get(name) for report in reports]
        if field.type in ("int", int):
            total[name] = sum(v for v in values if is_count(v))
        elif name == "kernel_drops":
            known = [v for v in values if is_count(v)]
            total[name] = sum(known) if known else None
        else:
            merged: dict[str, int] = {}
            for table in values:
                if isinstance(table, dict):
                    for key, count in table.items():
                        if isinstance(key, str) and is_count(count):
                            merged[key] = merged.get(key, 0) + count
            total[name] = merged
    return ServerStats(**total)


def is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def default_workers() -> int:
    """One worker per CPU this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover


def retired_report(
    report: Mapping[str, Any], *, kernel_drops: int | None = None
) -> dict[str, Any]:
    """A worker's last report, as it counts once the worker has ended:
    its levels (in flight, queued, tasks) are gone with it, and
    ``kernel_drops``, read after its last report (just before it was
    killed), replaces a smaller reported count.

    Example:
        >>> retired_report({"received": 3, "in_flight": 1})
        {'received': 3}
        >>> retired_report({"kernel_drops": 2}, kernel_drops=7)
        {'kernel_drops': 7}
    """
    retired = {name: value for name, value in report.items() if name not in _LEVELS}
    if kernel_drops is not None:
        reported: Any = retired.get("kernel_drops")
        if not is_count(reported) or reported < kernel_drops:
            retired["kernel_drops"] = kernel_drops
    return retired


def parse_addresses(value: object) -> list[tuple[str, int]]:
    """The ``addresses`` of a worker's ready report, checked: a list of
    ``[host, port]`` (TypeError otherwise: reports come from another process).

    Example:
        >>> parse_addresses([["::", 4000], ["0.0.0.0", 4000]])
        [('::', 4000), ('0.0.0.0', 4000)]
    """
    if not isinstance(value, list):
        raise TypeError(value)
    addresses = []
    for item in value:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and is_count(item[1])
        ):
            raise TypeError(item)
        addresses.append((item[0], item[1]))
    return addresses
