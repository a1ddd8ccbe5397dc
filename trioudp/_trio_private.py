"""Every use of Trio's private internals, in one place, each with a public fallback.

Invariants:
    * Nothing outside this module touches a name starting with ``_`` on a Trio
      object or module. Each accessor here has a fallback that uses only
      Trio's public API (slower, or less exact) and is taken automatically when
      the private name is missing.
    * ``tests/test_trio_private.py`` asserts that each private name still
      exists on the installed Trio, so an upgrade that moves one fails the
      test suite loudly instead of silently taking the slow path.
    * ``deterministic_scheduling`` leaves Trio's scheduler exactly as it found
      it (the flag and the very ``random.Random`` object) when its block exits,
      however it exits, and blocks nest: the innermost one's generator is in
      force. Between entry and exit every batch of runnable tasks is ordered
      only by task creation order and draws from the given generator, so the
      same program and seed run the same schedule in any process.
    * An :class:`Alarm` calls its ``fire`` at most once per :meth:`Alarm.set`,
      never before the Trio clock reaches the time set, always from inside
      the run loop between two task steps (never in a task), and never after
      :meth:`Alarm.close`. Its Trio-private form keeps Trio's deadline heap
      consistent: an entry is added exactly when its time becomes the
      registered one and removed (``Deadlines.remove``) exactly when it stops
      being so, as a cancel scope does, so Trio's count of active deadlines
      and its pruning stay right. It jumps a ``MockClock`` only where Trio's
      own autojump would jump to the same time in the same pass.
    * ``wrap_new_task`` replaces a task's coroutine only between its spawn
      and its first scheduling (Trio calls the ``task_spawned`` instrument
      hook there), never once Trio may have read ``Task.coro`` to step it.
"""

from __future__ import annotations

import inspect
import random
from contextlib import contextmanager, suppress
from math import inf
from typing import TYPE_CHECKING, Any, Protocol, final

import trio

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator, MutableSequence

    #: What wraps a task's coroutine: it takes the coroutine, returns another.
    Wrapper = Callable[[Coroutine[Any, Any, Any]], Coroutine[Any, Any, Any]]

__all__ = [
    "PRIVATE_NAMES",
    "Alarm",
    "BatchShuffler",
    "cancel_requested_probe",
    "deterministic_scheduling",
    "new_alarm",
    "wrap_new_task",
]


def _probe_cancel_status() -> bool | None:
    # Trio has no public "is this task's cancel scope cancelled?" query. Reading
    # the task's cancel status costs a third of awaiting
    # checkpoint_if_cancelled(), which matters once per reply on the hot path.
    # A pending KeyboardInterrupt is not visible here: it waits for the next
    # full checkpoint.
    return trio.lowlevel.current_task()._cancel_status.effectively_cancelled


def _unknown() -> bool | None:
    return None


def _cancel_status_available() -> bool:
    fields = getattr(trio.lowlevel.Task, "__attrs_attrs__", None)
    if fields is None:
        return False
    return any(field.name == "_cancel_status" for field in fields)


#: ``cancel_requested_probe()`` returns True if the current task's innermost
#: cancel scope is cancelled, False if not, and None where that cannot be told
#: cheaply (the caller must then take a full ``checkpoint_if_cancelled()``).
cancel_requested_probe: Callable[[], bool | None] = (
    _probe_cancel_status if _cancel_status_available() else _unknown
)


def _scheduler_module() -> object | None:
    # Trio shuffles each batch of runnable tasks with the module-level
    # ``_r`` (unseeded). Its Hypothesis hook, ``_ALLOW_DETERMINISTIC_SCHEDULING``,
    # sorts the batch by task creation order first and then shuffles it with
    # ``_r``: seeding ``_r`` then makes the schedule a function of the seed.
    try:
        from trio._core import _run
    except ImportError:  # pragma: no cover - Trio moved its run loop
        return None
    if isinstance(
        getattr(_run, "_ALLOW_DETERMINISTIC_SCHEDULING", None), bool
    ) and hasattr(getattr(_run, "_r", None), "shuffle"):
        return _run
    return None  # pragma: no cover - Trio renamed the hook


class BatchShuffler(random.Random):
    """A seeded generator for :func:`deterministic_scheduling` whose shuffle
    is cheap for the one- and two-task batches that dominate a busy run.

    Still uniform: two tasks are swapped with probability one half.

    Example:
        >>> batch = [1, 2]
        >>> BatchShuffler(1).shuffle(batch)
        >>> sorted(batch)
        [1, 2]
    """

    def shuffle(self, x: MutableSequence[object]) -> None:
        size = len(x)
        if size == 2:
            if self.getrandbits(1):
                x[0], x[1] = x[1], x[0]
        elif size > 2:
            super().shuffle(x)


@contextmanager
def deterministic_scheduling(rng: random.Random) -> Iterator[bool]:
    """Within the block, Trio orders runnable tasks by creation and ``rng``.

    Yields True if the schedule is now deterministic, False where this Trio
    has no such hook (the public fallback: the schedule stays Trio's own,
    randomised one, so only single-task programs replay exactly).

    Example:
        >>> import random
        >>> with deterministic_scheduling(random.Random(1)) as exact:
        ...     exact
        True
    """
    run = _scheduler_module()
    if run is None:  # pragma: no cover - exercised only on a Trio without the hook
        yield False
        return
    saved = (run._ALLOW_DETERMINISTIC_SCHEDULING, run._r)  # type: ignore[attr-defined]
    run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[attr-defined]
    run._r = rng  # type: ignore[attr-defined]
    try:
        yield True
    finally:
        run._ALLOW_DETERMINISTIC_SCHEDULING, run._r = saved  # type: ignore[attr-defined]


# ---- alarms: a call at a time on the Trio clock ------------------------------


class Alarm(Protocol):
    """Calls a function once Trio's clock reaches a time (see :func:`new_alarm`)."""

    @property
    def when(self) -> float:
        """The time it is set for; ``inf`` when it is not set."""
        ...

    def set(self, when: float) -> None:
        """Fire at ``when`` (``inf``: never), replacing the time set before."""
        ...

    def close(self) -> None:
        """Never fire again; release what it holds in the run."""
        ...


def _runner() -> object | None:
    # The run's Runner, whose deadline heap, run queue and idle waiters the
    # deadline alarm reads; None where Trio moved them.
    try:
        from trio._core._run import GLOBAL_RUN_CONTEXT
    except ImportError:  # pragma: no cover - Trio moved its run loop
        return None
    runner = getattr(GLOBAL_RUN_CONTEXT, "runner", None)
    deadlines = getattr(runner, "deadlines", None)
    if (
        callable(getattr(deadlines, "add", None))
        and callable(getattr(deadlines, "remove", None))
        and callable(getattr(deadlines, "next_deadline", None))
        and hasattr(runner, "runq")
        and hasattr(runner, "waiting_for_idle")
        and hasattr(runner, "clock_autojump_threshold")
        and hasattr(runner, "clock")
        and getattr(runner, "is_guest", None) is False
    ):
        return runner
    return None  # pragma: no cover - Trio renamed one, or guest mode


@final
class _DeadlineAlarm(trio.abc.Instrument):
    """The Trio-private alarm: an entry in Trio's own deadline heap.

    Trio's ``Deadlines`` holds cancel scopes; it reads only a scope's
    ``_registered_deadline`` and, when that time comes, calls its ``_cancel``
    (``cancel`` before Trio 0.30). This object offers the same, so a due
    alarm costs one call inside Trio's deadline processing: no task, no
    cancel scope, no Cancelled. As an instrument, it also does what Trio's
    autojump would: under ``MockClock(autojump_threshold=0)``, when no task
    can run and it is the next deadline, it jumps the clock to its time and
    fires before Trio polls for I/O, rather than one pass later.
    """

    __slots__ = ("_deadlines", "_fire", "_registered_deadline", "_runner")

    def __init__(self, fire: Callable[[], None], runner: object) -> None:
        self._fire = fire
        self._runner = runner
        self._deadlines = runner.deadlines  # type: ignore[attr-defined]
        #: What Trio's deadline heap compares an entry's time with.
        self._registered_deadline = inf
        trio.lowlevel.add_instrument(self)

    @property
    def when(self) -> float:
        return self._registered_deadline

    def set(self, when: float) -> None:
        old = self._registered_deadline
        if when != old:
            if old != inf:
                self._deadlines.remove(old, self)
            self._registered_deadline = when
            if when != inf:
                self._deadlines.add(when, self)

    def close(self) -> None:
        self.set(inf)
        self._fire = _nothing
        with suppress(KeyError):  # Trio drops an instrument that raised
            trio.lowlevel.remove_instrument(self)

    def _due(self) -> None:
        self._deadlines.remove(self._registered_deadline, self)
        self._registered_deadline = inf
        self._fire()

    # What Trio's Deadlines.expire calls when the registered time has come.
    def _cancel(self, reason: object = None) -> None:
        self._due()

    def cancel(self) -> None:
        self._due()

    def before_io_wait(self, timeout: float) -> None:
        when = self._registered_deadline
        if timeout or when == inf:
            return
        runner = self._runner
        if (
            runner.runq  # type: ignore[attr-defined]
            or runner.waiting_for_idle  # type: ignore[attr-defined]
            or runner.clock_autojump_threshold  # type: ignore[attr-defined]
            or when > self._deadlines.next_deadline()
        ):
            return
        # Every task waits and this is the next deadline: Trio would poll,
        # autojump to it, poll again and expire it. Do that now.
        clock = runner.clock  # type: ignore[attr-defined]
        jump = when - clock.current_time()
        if jump > 0:
            clock.jump(jump)
        self._due()


def _nothing() -> None:
    pass


@final
class _TaskAlarm:
    """The public fallback: a system task asleep in a cancel scope whose
    deadline is the alarm's time. Its wake-up callback fires the alarm
    inside Trio's deadline processing and resumes the task normally, so no
    Cancelled is raised on each wake."""

    def __init__(self, fire: Callable[[], None], name: str) -> None:
        self._fire = fire
        self._name = name
        self.when = inf
        self._scope: trio.CancelScope | None = None
        self._task_scope: trio.CancelScope | None = None

    def set(self, when: float) -> None:
        self.when = when
        if self._task_scope is None:
            if when != inf:
                self._task_scope = trio.CancelScope()
                trio.lowlevel.spawn_system_task(
                    self._run, self._task_scope, name=self._name
                )
        elif self._scope is not None:
            self._scope.deadline = when

    def close(self) -> None:
        self.when = inf
        self._fire = _nothing
        if self._task_scope is not None:
            self._task_scope.cancel()

    async def _run(self, task_scope: trio.CancelScope) -> None:
        task = trio.lowlevel.current_task()

        def wake(_: object) -> trio.lowlevel.Abort:
            # A deadline that has come is the alarm; any other cancellation
            # (close, the end of the run) ends the task as usual.
            scope = self._scope
            if scope is None or trio.current_time() < scope.deadline:
                return trio.lowlevel.Abort.SUCCEEDED
            self._scope = None
            self.when = inf
            self._fire()
            trio.lowlevel.reschedule(task)
            return trio.lowlevel.Abort.FAILED

        with task_scope:
            while True:
                with trio.CancelScope(deadline=self.when) as scope:
                    self._scope = scope
                    await trio.lowlevel.wait_task_rescheduled(wake)
                self._scope = None


def new_alarm(fire: Callable[[], None], name: str) -> Alarm:
    """An unset :class:`Alarm` for the current run that calls ``fire()``.

    ``fire`` runs inside Trio's run loop, never in a task: it must not raise
    and must not block; it may reschedule tasks and set the alarm again. On
    a Trio whose deadline heap this module knows, the alarm is an entry in
    it; elsewhere (and in guest mode) a system task named ``name`` sleeps
    until it is due.

    Example:
        >>> async def main():
        ...     fired = []
        ...     alarm = new_alarm(lambda: fired.append(trio.current_time()), "demo")
        ...     alarm.set(trio.current_time() + 5)
        ...     await trio.sleep(10)
        ...     alarm.close()
        ...     return fired
        >>> import trio.testing
        >>> trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        [5.0]
    """
    runner = _runner()
    if runner is None:
        return _TaskAlarm(fire, name)
    return _DeadlineAlarm(fire, runner)


def _replace_coroutine(task: trio.lowlevel.Task, wrap: Wrapper) -> bool:
    # Trio steps a task from ``task.coro``, which it reads when it first
    # schedules the task: just after calling the instruments' task_spawned
    # hook. Replaced there, the coroutine runs inside the wrapper (a cancel
    # scope of the caller's), as if the task's function had been wrapped. An
    # already scheduled (or started) task is left alone.
    if task._next_send_fn is not None or (
        inspect.getcoroutinestate(task.coro) != inspect.CORO_CREATED
    ):
        return False
    task.coro = wrap(task.coro)  # type: ignore[assignment]
    return True


def _cannot_wrap(task: trio.lowlevel.Task, wrap: Wrapper) -> bool:
    return False


def _task_is_wrappable() -> bool:
    fields = getattr(trio.lowlevel.Task, "__attrs_attrs__", None)
    if fields is None:
        return False
    names = {field.name for field in fields}
    return {"coro", "_next_send_fn"} <= names


#: ``wrap_new_task(task, wrap)``, called from an instrument's
#: ``task_spawned(task)``, makes the task run ``wrap(task.coro)`` instead of
#: its coroutine and returns True; it returns False (and changes nothing)
#: where this Trio does not let it, or the task has been scheduled already.
#: Only Trio's public API is the fallback: the task runs unwrapped.
wrap_new_task: Callable[[trio.lowlevel.Task, Wrapper], bool] = (
    _replace_coroutine if _task_is_wrappable() else _cannot_wrap
)

#: The private names used above, for the test that guards them.
PRIVATE_NAMES = {
    "trio.lowlevel.Task._cancel_status.effectively_cancelled",
    "trio._core._run._ALLOW_DETERMINISTIC_SCHEDULING",
    "trio._core._run._r",
    "trio._core._run.GLOBAL_RUN_CONTEXT.runner",
    "Runner.deadlines (add, remove, next_deadline; expire calls _cancel or cancel"
    " on an entry whose _registered_deadline is its time)",
    "Runner.runq",
    "Runner.waiting_for_idle",
    "Runner.clock_autojump_threshold",
    "Runner.clock",
    "Runner.is_guest",
    "trio.lowlevel.Task._next_send_fn (None until after task_spawned)",
}
