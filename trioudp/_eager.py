"""Run a coroutine eagerly: step it synchronously until it first suspends.

A server handler that never suspends (an echo, a lookup, a reply sent without
waiting) then costs a function call instead of a Trio task and a trip
through the scheduler. One that does suspend keeps running in the *same* task,
which simply awaits the rest of it: nothing moves between tasks, so cancel
scopes, ``current_task()`` and Trio's bookkeeping stay consistent.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Awaitable, Generator

__all__ = ["Suspended", "finish", "start"]

#: An awaitable's iterator (``awaitable.__await__()``) that has suspended
#: once, with the value it yielded to the event loop (a Trio trap) that still
#: has to be passed on.
Suspended: TypeAlias = "tuple[Generator[Any, Any, Any], object]"


def start(awaitable: Awaitable[object]) -> Suspended | None:
    """Step ``awaitable`` until it finishes (return None) or first suspends.

    Exceptions it raises before suspending propagate.

    Example:
        >>> async def quick() -> None:
        ...     pass
        >>> start(quick()) is None
        True
    """
    coro = awaitable.__await__()
    try:
        yielded = coro.send(None)
    except StopIteration:
        return None
    return coro, yielded


@types.coroutine
def finish(suspended: Suspended) -> Generator[object, object, None]:
    """Await the rest of a coroutine that :func:`start` left suspended.

    The pending yielded value goes up to the event loop; what the loop sends
    or throws back is passed down, exactly as ``await`` would.
    """
    coro, yielded = suspended
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                yielded = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration:
                return
