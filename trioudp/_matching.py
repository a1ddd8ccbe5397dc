"""Request/reply matching for UDPClient: the waiting requests, and which of them a reply answers.

No I/O. ``match`` functions run on bytes the peer chose only in
:func:`waiter_for_untrusted`, which raises nothing but :class:`BadReply`;
``UDPClient._route`` catches and counts it.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import TYPE_CHECKING, Protocol

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import Hashable

    from ._datagram import Datagram

__all__ = [
    "BadReply",
    "Deadlines",
    "Match",
    "Waiter",
    "request_key",
    "waiter_for_untrusted",
]


class Match(Protocol):
    """Extracts the id that pairs a request with its reply, from either's bytes.

    Any callable that takes a datagram's bytes and returns a hashable id is a
    ``Match``: the client calls it on each request it sends and on each reply
    it receives, and hands a reply to the request with the same id. It must
    return a hashable id for every request. A reply for which it raises,
    returns an unhashable value, or returns an id no request waits for is
    discarded and counted (``stats.discarded``), never propagated.

    Example:
        A DNS-like protocol whose first four bytes are the id:

        >>> match: Match = lambda data: data[:4]
        >>> match(b"id-7 query") == match(b"id-7 answer")
        True
    """

    def __call__(self, data: bytes, /) -> Hashable:
        """Return the id in ``data``, or None if it carries none."""


@attrs.define(eq=False)
class Waiter:
    """A request waiting for its reply (or an ICMP error about it)."""

    key: tuple[Match, Hashable] | None
    #: Whether a datagram of this request has left: only then can an ICMP
    #: error be about it.
    sent: bool = False
    reply: Datagram | None = None
    error: OSError | None = None
    #: Whether the request has its reply or its error (set by :meth:`finish`).
    done: bool = False
    #: When the current attempt's wait ends; None while the request is not
    #: waiting (before it waits, or once its attempt is over).
    deadline: float | None = None
    #: The task, while it is parked (until something wakes it).
    task: trio.lowlevel.Task | None = None

    def finish(
        self, reply: Datagram | None = None, error: OSError | None = None
    ) -> None:
        """End the wait with ``reply`` or ``error``; wake the request if parked."""
        self.reply, self.error, self.done = reply, error, True
        self.wake()

    def wake(self) -> None:
        """Wake the request if it is parked (to look at its state again)."""
        task = self.task
        if task is not None:
            self.task = None
            trio.lowlevel.reschedule(task)

    def abort(self, _: object) -> trio.lowlevel.Abort:
        """The parked request was cancelled: it is no longer parked."""
        self.task = None
        return trio.lowlevel.Abort.SUCCEEDED


class Deadlines:
    """The waiting requests' deadlines, earliest first: one timer for them all.

    An entry whose request stopped waiting (its ``deadline`` is no longer
    the entry's) is skipped when it comes up, and the heap is rebuilt once
    such entries outnumber the waiting requests, so it stays O(waiting).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Waiter]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, waiter: Waiter, deadline: float, waiting: int) -> None:
        """Watch ``waiter``'s ``deadline``; ``waiting``: how many wait now."""
        heap = self._heap
        if len(heap) > 2 * waiting + 64:
            heap[:] = [entry for entry in heap if entry[2].deadline == entry[0]]
            heapq.heapify(heap)
        heapq.heappush(heap, (deadline, next(self._order), waiter))

    def expire(self, now: float) -> float:
        """End the attempts whose deadline is ``now`` or earlier (their
        ``deadline`` becomes None; a parked request is woken to retransmit
        or time out); return the earliest deadline still ahead (infinity
        if none)."""
        heap = self._heap
        while heap:
            deadline, _, waiter = heap[0]
            if waiter.deadline == deadline and deadline > now:
                return deadline
            heapq.heappop(heap)
            if waiter.deadline == deadline:
                waiter.deadline = None
                waiter.wake()
        return math.inf


class BadReply(Exception):
    """``match`` raised on a reply, or returned an unhashable id."""


def waiter_for_untrusted(
    matches: dict[Match, int],
    by_key: dict[tuple[Match, Hashable], Waiter],
    data: bytes,
) -> Waiter | None:
    """The waiting request that a reply answers, or None.

    ``match`` runs on bytes the peer chose, so it may raise anything, or
    return an id that cannot be hashed or compared: any of that raises
    :class:`BadReply` (if no other match function claimed the reply), and
    nothing else escapes.
    """
    bad: Exception | None = None
    for match in matches:
        try:
            waiter = by_key.get((match, match(data)))
        except Exception as exc:
            bad = exc
            continue
        if waiter is not None and not waiter.done:
            return waiter
    if bad is not None:
        raise BadReply from bad
    return None


def request_key(
    match: Match, data: bytes | bytearray | memoryview
) -> tuple[Match, Hashable]:
    """The routing key of a request (its own bytes: errors are the caller's)."""
    payload = bytes(data)
    try:
        request_id = match(payload)
    except Exception as exc:
        msg = f"match {match!r} found no id in the request {payload[:32]!r}: {exc!r}"
        raise ValueError(msg) from exc
    if request_id is None:
        msg = f"match {match!r} found no id in the request {payload[:32]!r}"
        raise ValueError(msg)
    key = (match, request_id)
    try:
        hash(key)
    except TypeError as exc:
        msg = f"match {match!r} returned {request_id!r} for the request, which is not hashable"
        raise TypeError(msg) from exc
    return key
