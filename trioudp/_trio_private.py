"""Every use of Trio's private internals, in one place, each with a public fallback.

Invariants:
    * Nothing outside this module touches a name starting with ``_`` on a Trio
      object or module. Each accessor here has a fallback that uses only
      Trio's public API (slower, or less exact) and is taken automatically when
      the private name is missing.
    * ``tests/test_trio_private.py`` asserts that each private name still
      exists on the installed Trio, so an upgrade that moves one fails the
      test suite loudly instead of silently taking the slow path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["PRIVATE_NAMES", "cancel_requested_probe"]


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

#: The private names used above, for the test that guards them.
PRIVATE_NAMES = {"trio.lowlevel.Task._cancel_status.effectively_cancelled"}
