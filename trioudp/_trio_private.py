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
    * ``wrap_new_task`` replaces a task's coroutine only between its spawn
      and its first scheduling (Trio calls the ``task_spawned`` instrument
      hook there), never once Trio may have read ``Task.coro`` to step it.
"""

from __future__ import annotations

import inspect
import random
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator, MutableSequence

    #: What wraps a task's coroutine: it takes the coroutine, returns another.
    Wrapper = Callable[[Coroutine[Any, Any, Any]], Coroutine[Any, Any, Any]]

__all__ = [
    "PRIVATE_NAMES",
    "BatchShuffler",
    "cancel_requested_probe",
    "deterministic_scheduling",
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
    "trio.lowlevel.Task._next_send_fn (None until after task_spawned)",
}
