"""Flapping links: a link between two hosts that fails and repairs at given rates, on a schedule drawn from the seed.

A flapping link is up when :meth:`Flapping.start` is called; its up times
are exponential with mean ``1 / fail_rate`` seconds and its down times
exponential with mean ``1 / repair_rate``, drawn from a generator of its own
(seeded from the network's seed, the two hosts' addresses and how many times
that link was made to flap), so its schedule does not depend on the traffic
or on other links. Each change is a trace event (``link_down``,
``link_up``) at the time it happens.

Time. Whether a link is down at a moment is computed from its schedule when
asked (:meth:`Flapping.is_down`), so a datagram sent at the very instant of a
change always sees it; a Trio system task, started on first need, records
changes that no datagram asked about when they happen, so the trace stays in
time order. Under ``MockClock(autojump_threshold=0)`` it wakes at each change,
so a test that flaps a link runs until it heals it or ends.

Invariants:
    * The system task never raises: it only advances schedules and records
      trace events; uninstall (:meth:`Flapping.uninstall`) cancels it.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, final

import trio

if TYPE_CHECKING:
    from ._model import Host
    from ._trace import Recorder

    #: Two hosts, either way round (``_faults.Pair``).
    Pair = frozenset[Host]

__all__ = ["Flapping"]


@final
class _Flap:
    """One flapping link's schedule."""

    __slots__ = ("down", "fail_rate", "next_change", "repair_rate", "rng", "what")

    def __init__(
        self,
        rng: random.Random,
        fail_rate: float,
        repair_rate: float,
        what: str,
        now: float,
    ) -> None:
        self.rng = rng
        self.fail_rate = fail_rate
        self.repair_rate = repair_rate
        self.what = what
        self.down = False
        self.next_change = now + self.draw()

    def draw(self) -> float:
        """How long the link stays as it is now."""
        rate = self.repair_rate if self.down else self.fail_rate
        return self.rng.expovariate(rate) if rate > 0 else math.inf


@final
class Flapping:
    """The flapping links of one network; false when there are none."""

    def __init__(self, trace: Recorder, seed: int) -> None:
        self._trace = trace
        self._seed = seed
        self._links: dict[Pair, _Flap] = {}
        self._generation: dict[str, int] = {}
        self._wake_scope: trio.CancelScope | None = None
        self._task_scope: trio.CancelScope | None = None

    def __bool__(self) -> bool:
        return bool(self._links)

    def start(
        self, pair: Pair, key: str, what: str, fail_rate: float, repair_rate: float
    ) -> None:
        """Make the link ``pair`` flap from now, up first (a link flapping
        already starts over). ``key`` names it stably (its hosts'
        addresses); ``what`` names it in the trace."""
        for name, rate in (("fail_rate", fail_rate), ("repair_rate", repair_rate)):
            if not (
                isinstance(rate, (int, float))
                and not isinstance(rate, bool)
                and math.isfinite(rate)
                and rate >= 0
            ):
                msg = f"{name} must be a number of events per second >= 0, not {rate!r}"
                raise ValueError(msg)
        self.stop(pair)
        generation = self._generation[key] = self._generation.get(key, 0) + 1
        rng = random.Random(f"trioudp-flap/{self._seed}/{key}/{generation}")
        flap = _Flap(rng, fail_rate, repair_rate, what, trio.current_time())
        self._links[pair] = flap
        if self._wake_scope is not None:
            self._wake_scope.deadline = min(self._wake_scope.deadline, flap.next_change)
        self.resume()

    def stop(self, pair: Pair | None) -> None:
        """Stop ``pair`` (None: every link) flapping, leaving it up."""
        pairs = list(self._links) if pair is None else [pair]
        for stopped in pairs:
            flap = self._links.pop(stopped, None)
            if flap is not None:
                self._advance(flap, trio.current_time())
                if flap.down:
                    self._trace.note("link_up", flap.what)

    def is_down(self, pair: Pair) -> bool:
        """Whether the link ``pair`` is down now."""
        flap = self._links.get(pair)
        if flap is None:
            return False
        self._advance(flap, trio.current_time())
        return flap.down

    def _advance(self, flap: _Flap, now: float) -> None:
        while flap.next_change <= now:
            flap.down = not flap.down
            kind = "link_down" if flap.down else "link_up"
            self._trace.note(kind, flap.what, time=flap.next_change)
            flap.next_change += flap.draw()

    async def _run(self, task_scope: trio.CancelScope) -> None:
        with task_scope:
            while True:
                links = self._links
                deadline = min(
                    (flap.next_change for flap in links.values()), default=math.inf
                )
                with trio.CancelScope(deadline=deadline) as self._wake_scope:
                    await trio.sleep_forever()
                self._wake_scope = None
                now = trio.current_time()
                # The changes that are due, in the order they happen.
                while links:
                    flap = min(links.values(), key=lambda flap: flap.next_change)
                    if flap.next_change > now:
                        break
                    self._advance(flap, flap.next_change)
        if self._task_scope is task_scope:
            self._task_scope = None
            self._wake_scope = None

    def uninstall(self) -> None:
        """End the system task (:meth:`resume` starts another)."""
        task_scope, self._task_scope = self._task_scope, None
        self._wake_scope = None
        if task_scope is not None:
            task_scope.cancel()

    def resume(self) -> None:
        """Start the system task if links flap and it is not running (at a
        new install, and when a link starts flapping)."""
        if self._links and self._task_scope is None:
            self._task_scope = trio.CancelScope()
            trio.lowlevel.spawn_system_task(
                self._run, self._task_scope, name="trioudp VirtualNetwork flapping"
            )
