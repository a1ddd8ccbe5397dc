"""The eager engine: runs a server's handler on each datagram in the receiving task until it suspends, bounded and accounted.

A handler that never suspends (an echo, a lookup, a reply sent without
waiting) then costs a function call instead of a Trio task and a trip
through the scheduler. One that does suspend keeps running in the *same*
task, which simply awaits the rest of it (:func:`finish`): nothing moves
between tasks, so cancel scopes, ``current_task()`` and Trio's bookkeeping
stay consistent. :class:`Handlers` holds the handler, the bounded queue of
datagrams waiting for a free handler slot, and the counters of how each
handler call ended.

Invariants (``tests/test_faults.py`` breaks the first on a real link whose
send buffer fills):

* Between a handler's first suspension (``coro.send(None)`` returning the
  trap it yielded) and handing that trap to Trio (``await rest``), the
  receiving task awaits nothing. The trap may be a registration with Trio's
  I/O manager (``wait_writable`` in a reply that met a full send buffer) made
  on behalf of the *receiving task*; any await in between would suspend that
  task a second time, and Trio would then wake it for the wrong wait
  (``TrioInternalError``) or refuse the second wait (``BusyResourceError``).
  So a batch's held replies are sent without waiting there
  (``Outbox.end_batch_nowait``), and those the kernel does not take yet go to
  a task of their own (``Outbox.send_leftover``); see ``_fastpath`` and
  ``_intake``, which hold to it.
* ``in_flight`` counts handler calls begun and not yet ended. It rises in
  one place, :meth:`Handlers.start` (and its inline copy in
  ``_fastpath.take_ready``), and falls exactly once per call, in one of
  three: the handler returned before suspending (``start``'s
  ``StopIteration`` branch, and its inline copy), it raised before
  suspending (:meth:`Handlers.raised`), or the rest of it ended, however
  (:meth:`Handlers.accounted`'s ``finally``). A Responder's call is never
  in flight: it cannot suspend.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import inspect
import logging
import sys
import types
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import trio

from ._checks import short_repr

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from collections.abc import Generator

    from ._datagram import Datagram

__all__ = [
    "Handler",
    "Handlers",
    "Overflow",
    "Suspended",
    "check_handler",
    "finish",
    "start",
]

logger = logging.getLogger("trioudp")

#: Exception types whose failures :meth:`Handlers.failed` counts apart; the
#: rest share one count (the table stays bounded, whatever the handler raises).
_LOGGED_KINDS = 64

_Coroutine = types.CoroutineType

#: What a handler is: an async function of one Datagram. Its result is ignored.
Handler = Callable[["Datagram"], Awaitable[object]]

#: An awaitable's iterator (``awaitable.__await__()``) that has suspended
#: once, with the value it yielded to the event loop (a Trio trap) that still
#: has to be passed on.
Suspended: TypeAlias = "tuple[Generator[Any, Any, Any], object]"


# ---- stepping a coroutine by hand ------------------------------------------


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


# ---- which handlers a server takes -----------------------------------------


def check_handler(handler: object) -> None:
    """Refuse, at start, a handler whose calls cannot be awaited.

    The one place that decides which handlers a server takes. Accepted:
    ``async def`` functions and methods, and callables that show they return
    awaitables: a ``functools.partial`` or ``functools.wraps`` wrapper of an
    async function, an object whose ``__call__`` is ``async def``, a class
    whose instances are awaitable, a function marked with
    ``inspect.markcoroutinefunction`` (Python 3.12+). Refused: plain
    functions, methods, builtins, classes and objects with a plain
    ``__call__``, which would fail on every datagram. Callables that cannot
    be inspected (written in C) are taken on trust.

    Raises:
        TypeError: ``handler`` is not callable, or plainly not async.
    """
    if not callable(handler):
        msg = f"handler must be an async function of one Datagram, not {short_repr(handler)}"
        raise TypeError(msg)
    target: object = handler
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.iscoroutinefunction(target):
        return
    with contextlib.suppress(ValueError):  # a cycle of __wrapped__
        target = inspect.unwrap(target)  # type: ignore[arg-type]
    if inspect.iscoroutinefunction(target):
        return
    if isinstance(target, type):
        plain = not hasattr(target, "__await__")
    elif (
        inspect.isfunction(target)
        or inspect.ismethod(target)
        or inspect.isbuiltin(target)
    ):
        plain = True
    else:
        call = inspect.getattr_static(type(target), "__call__", None)
        if inspect.iscoroutinefunction(call):
            return
        plain = inspect.isfunction(call)
    if plain:
        msg = (
            f"handler must be an async function of one Datagram (async def"
            f" handler(datagram): ...), not the plain callable {short_repr(handler)}:"
            " the server awaits its result for every datagram. Pass a plain"
            " function that returns the reply as trioudp.Responder(function);"
            " wrap one that returns an awaitable in an async def."
        )
        raise TypeError(msg)


class Overflow(enum.Enum):
    """Which datagram to drop when the server's queue is full.

    Example:
        >>> Overflow("drop_oldest") is Overflow.DROP_OLDEST
        True
    """

    #: Drop the datagram that just arrived (keeps the oldest work).
    DROP_NEWEST = "drop_newest"
    #: Drop the datagram that waited longest (keeps the freshest work).
    DROP_OLDEST = "drop_oldest"


class Handlers:
    """A server's handler, the datagrams waiting for it, and how its calls ended.

    ``max_in_flight`` handler calls run at once; up to ``queue_size`` more
    datagrams wait in :attr:`queue`; beyond that :meth:`enqueue` drops per
    ``overflow``. See the module docstring for where ``in_flight`` rises and
    falls.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        max_in_flight: int,
        queue_size: int,
        overflow: Overflow,
        handler_timeout: float | None,
    ) -> None:
        self.handler = handler
        self.max_in_flight = max_in_flight
        self._capacity = max_in_flight + queue_size
        self._overflow = overflow
        self.timeout = handler_timeout
        self.queue: deque[Datagram] = deque()
        self.in_flight = 0
        self.handled = 0
        self.handler_errors = 0
        self.handler_timeouts = 0
        self.dropped_queue_full = 0
        self.dropped_shutdown = 0
        # Failures so far by exception type (None: the types past the
        # first _LOGGED_KINDS), for damping their log lines.
        self._failures: dict[type[BaseException] | None, int] = {}

    def enqueue(self, datagram: Datagram) -> None:
        """Queue a datagram for a free handler slot, or drop one (counted)."""
        queue = self.queue
        if len(queue) + self.in_flight >= self._capacity:
            self.dropped_queue_full += 1
            if self._overflow is Overflow.DROP_NEWEST or not queue:
                return
            queue.popleft()
        queue.append(datagram)

    def drop_queued(self) -> None:
        """Abandon the queued datagrams (the server stopped), counted."""
        self.dropped_shutdown += len(self.queue)
        self.queue.clear()

    def start(self, datagram: Datagram) -> Awaitable[None] | None:
        """Run the handler eagerly until it finishes (None) or suspends (then
        the awaitable rest of it, accounting included)."""
        self.in_flight += 1
        if self.timeout is not None:
            timed = start(self.accounted(datagram, lambda: self.handler(datagram)))
            return None if timed is None else finish(timed)
        try:
            awaitable = self.handler(datagram)
            # A coroutine steps directly; other awaitables through their iterator.
            coro = awaitable if type(awaitable) is _Coroutine else awaitable.__await__()
            yielded = coro.send(None)
        except StopIteration:
            self.in_flight -= 1
            self.handled += 1
            return None
        except BaseException as exc:
            self.raised(datagram, exc)
            return None
        return self.rest_of(datagram, coro, yielded)

    def raised(self, datagram: Datagram, exc: BaseException) -> None:
        """Account for a handler that raised before suspending; re-raise what
        is not an Exception (see :meth:`count_base_exception`)."""
        self.in_flight -= 1
        if isinstance(exc, Exception):
            self.failed(datagram)
            return
        self.count_base_exception(datagram, exc)
        raise exc

    def count_base_exception(self, datagram: Datagram, exc: BaseException) -> None:
        """Count a handler's exception that is not an Exception before it
        propagates as Trio would propagate it: Cancelled (alone or in a
        group) is the server's shutdown at work; anything else
        (KeyboardInterrupt, SystemExit, a group holding other exceptions) is
        a handler error, logged, that stops the server."""
        if isinstance(exc, trio.Cancelled) or (
            isinstance(exc, BaseExceptionGroup) and exc.split(trio.Cancelled)[1] is None
        ):
            self.dropped_shutdown += 1
            return
        self.handler_errors += 1
        logger.error(
            "UDP handler %r raised %s on a datagram from %r; it stops the server",
            getattr(self.handler, "__qualname__", self.handler),
            type(exc).__name__,
            datagram.peer,
            exc_info=exc,
        )

    def rest_of(
        self, datagram: Datagram, coro: object, yielded: object
    ) -> Awaitable[None]:
        """The rest of a handler that suspended, accounting included."""
        rest: Suspended = (coro, yielded)  # type: ignore[assignment]
        return self.accounted(datagram, lambda: finish(rest))

    def failed(self, datagram: Datagram) -> None:
        """Count the handler's Exception being handled; the server goes on.

        Logged damped, per exception type: the first with its traceback,
        then one line (no traceback) each time that type's count reaches a
        power of two. A handler that fails on every datagram of a flood so
        writes a few dozen lines, not one traceback per datagram (which
        cost 134 us and 473 bytes each).
        """
        self.handler_errors += 1
        exc = sys.exc_info()[1]
        assert exc is not None  # called while handling the handler's error
        failures = self._failures
        kind: type[BaseException] | None = type(exc)
        if kind not in failures and len(failures) >= _LOGGED_KINDS:
            kind = None
        count = failures[kind] = failures.get(kind, 0) + 1
        name = getattr(self.handler, "__qualname__", self.handler)
        if count == 1:
            logger.error(
                "UDP handler %r failed on a datagram from %r; the server goes on"
                " (more %s errors are logged at 2, 4, 8, ... of them)",
                name,
                datagram.peer,
                type(exc).__name__,
                exc_info=exc,
            )
        elif not count & (count - 1):
            logger.error(
                "UDP handler %r failed %d times with %s; the latest, on a"
                " datagram from %r: %s; the server goes on",
                name,
                count,
                "other exceptions" if kind is None else type(exc).__name__,
                datagram.peer,
                short_repr(exc),
            )

    async def accounted(
        self, datagram: Datagram, handling: Callable[[], Awaitable[object]]
    ) -> None:
        """Await ``handling()`` (the handler, or the rest of one that
        suspended) under ``handler_timeout``, and count how it ended."""
        try:
            if self.timeout is None:
                await handling()
            else:
                with trio.move_on_after(self.timeout) as scope:
                    await handling()
                if scope.cancelled_caught:
                    self.handler_timeouts += 1
                    return
        except Exception:
            self.failed(datagram)
        except BaseException as exc:
            self.count_base_exception(datagram, exc)
            raise
        else:
            self.handled += 1
        finally:
            self.in_flight -= 1
