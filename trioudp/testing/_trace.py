"""The record of what happened on a virtual network: its trace events and counters' snapshot.

Invariants:
    * A trace entry holds only immutable atoms (see ``_Entry``).
    * Everything one ``sendto`` causes at once carries one time: the sender
      sets :attr:`Recorder.instant` for its duration, so the clock is read
      once per datagram, not once per event.
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import TYPE_CHECKING, final

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ._model import Endpoint, Packet

__all__ = [
    "DEFAULT_TRACE_LIMIT",
    "DROP_REASONS",
    "Drops",
    "NetworkStats",
    "Recorder",
    "TraceEvent",
]

#: How many events :attr:`VirtualNetwork.trace` keeps by default (the latest).
DEFAULT_TRACE_LIMIT = 100_000

#: Every reason the network drops a datagram for (see :class:`TraceEvent`).
DROP_REASONS = frozenset(
    {
        "loss",
        "partition",
        "rcvbuf",
        "port_unreachable",
        "host_unreachable",
        "no_route",
        "filtered",
        "closed",
        "uninstalled",
        "no_receiver",
        "host_down",
        "link_down",
        "queue",
        "rule",
    }
)
#: Where a network event (not a datagram's) keeps its addresses: none.
_NOWHERE = ("", 0)


@attrs.frozen(kw_only=True)
class TraceEvent:
    """One thing that happened on the network, at a virtual time.

    What happened to a datagram, numbered ``packet``: ``send``, ``deliver``,
    ``drop`` (with a ``reason``: ``loss`` (of the datagram or of
    one of its fragments), ``partition``, ``rcvbuf``, ``port_unreachable``,
    ``host_unreachable`` (an address no host has),
    ``no_route`` (``SO_BINDTODEVICE`` sent it by an interface it cannot
    arrive by), ``filtered``, ``closed``, ``uninstalled``, ``no_receiver``: a multicast or broadcast
    copy that no socket of its host takes, ``host_down``: from or to a
    crashed host, ``link_down``: a flapping link was down, ``queue``: tail
    dropped by a full bandwidth queue, ``rule``: a rule's verdict),
    ``duplicate``, ``hold``, ``release``, ``icmp`` (an unreachable report on
    its way back), ``corrupt`` (a rule changed its bytes: ``payload`` is
    what arrives) and ``delay`` (a rule held it back).

    What happened to the network (``packet`` 0, no addresses, ``reason``
    says which hosts): ``crash``, ``restart``, ``partition`` and ``heal``
    (``a > b`` one way, ``a <> b`` both), ``link_down`` and ``link_up``
    (a flapping link).

    ``str(event)`` is one stable line; equal traces print equal text.

    Example:
        >>> e = TraceEvent(time=0.5, kind="send", packet=1, src=("127.0.0.1", 1),
        ...                dst=("127.0.0.1", 2), size=3)
        >>> str(e)
        '0.500000000 send      #1 127.0.0.1:1 > 127.0.0.1:2 3B'
        >>> str(TraceEvent(time=2.0, kind="crash", packet=0, src=("", 0),
        ...                dst=("", 0), size=0, reason="db"))
        '2.000000000 crash     db'
    """

    time: float
    kind: str
    packet: int
    src: Endpoint
    dst: Endpoint
    size: int
    reason: str | None = None
    payload: bytes = attrs.field(default=b"", repr=False, eq=False)

    def __str__(self) -> str:
        if not self.packet:
            return f"{self.time:.9f} {self.kind:<9} {self.reason}"
        reason = f" {self.reason}" if self.reason else ""
        return (
            f"{self.time:.9f} {self.kind:<9} #{self.packet}"
            f" {_show(self.src)} > {_show(self.dst)} {self.size}B{reason}"
        )


def _show(endpoint: Endpoint) -> str:
    ip, port = endpoint
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class Drops(dict[str, int]):
    """Datagrams dropped, by reason: a dict in which a reason that no drop
    had yet counts 0, and a name that is no reason raises KeyError (a typo
    never reads as "none dropped").

    Example:
        >>> drops = Drops(loss=2)
        >>> drops["loss"], drops["partition"], drops
        (2, 0, {'loss': 2})
    """

    __slots__ = ()

    def __missing__(self, reason: str) -> int:
        if reason in DROP_REASONS:
            return 0
        known = ", ".join(sorted(DROP_REASONS))
        msg = f"{reason!r} is not a reason the network drops for; it drops for: {known}"
        raise KeyError(msg)


@attrs.frozen(kw_only=True)
class NetworkStats:
    """Counters of a :class:`VirtualNetwork`.

    ``dropped`` counts by reason (those of :class:`TraceEvent`); a reason
    with no drop yet reads 0.

    Example:
        >>> NetworkStats().dropped_total
        0
        >>> NetworkStats().dropped["partition"]
        0
    """

    sent: int = 0
    delivered: int = 0
    duplicated: int = 0
    held: int = 0
    dropped: dict[str, int] = attrs.field(factory=Drops, converter=Drops)

    @property
    def dropped_total(self) -> int:
        """Datagrams dropped, whatever the reason."""
        return sum(self.dropped.values())


#: A trace entry as stored: (clock time, kind, packet id, src, dst, payload,
#: reason). TraceEvents are built on read, with times from the epoch. Only
#: immutable atoms inside, so the garbage collector untracks entries after one
#: pass instead of rescanning a long trace on every collection; the events of
#: one datagram share its addresses and payload.
_Entry = tuple[float, str, int, "Endpoint", "Endpoint", bytes, "str | None"]


def _event(entry: _Entry, epoch: float) -> TraceEvent:
    time, kind, packet, src, dst, payload, reason = entry
    return TraceEvent(
        time=time - epoch,
        kind=kind,
        packet=packet,
        src=src,
        dst=dst,
        size=len(payload),
        reason=reason,
        payload=payload,
    )


@final
class Recorder:
    """The trace of one network: the latest ``limit`` events (all if None),
    or none when ``record`` is false, and the epoch its times count from."""

    __slots__ = ("clock_time", "entries", "epoch", "instant", "record")

    def __init__(self, *, record: bool, limit: int | None) -> None:
        self.record = record
        self.entries: deque[_Entry] = deque(maxlen=limit)
        #: The Trio clock time the network was first installed at.
        self.epoch: float | None = None
        # The clock's own current_time, bound at install: trio.current_time()
        # costs two more calls per trace event.
        self.clock_time: Callable[[], float] = trio.current_time
        # Set while one send runs: the time of everything it causes at once.
        self.instant: float | None = None

    def start(self) -> None:
        """Called at each install: fix the epoch (once) and bind the clock."""
        if self.epoch is None:
            self.epoch = trio.current_time()
        self.clock_time = trio.lowlevel.current_clock().current_time

    def now(self) -> float:
        """Seconds on the Trio clock since the epoch."""
        return trio.current_time() - (self.epoch or 0.0)

    def event(self, kind: str, packet: Packet, reason: str | None = None) -> None:
        """Record that ``kind`` happened to ``packet`` (if recording)."""
        if self.record:
            instant = self.instant
            self.entries.append(
                (
                    self.clock_time() if instant is None else instant,
                    kind,
                    packet.id,
                    packet.src,
                    packet.dst,
                    packet.payload,
                    reason,
                )
            )

    def snapshot(self) -> tuple[list[_Entry], float]:
        """The entries kept, in order, and the clock time they count from
        (for writing a capture without building events)."""
        return list(self.entries), self.epoch or 0.0

    def note(self, kind: str, what: str, time: float | None = None) -> None:
        """Record that ``kind`` happened to the network (``what``: which
        hosts), now or at the clock ``time`` it happened."""
        if self.record:
            if time is None:
                time = self.clock_time() if self.instant is None else self.instant
            self.entries.append((time, kind, 0, _NOWHERE, _NOWHERE, b"", what))

    def events(self) -> list[TraceEvent]:
        """The events kept, in order, with times from the epoch."""
        epoch = self.epoch or 0.0
        return [_event(entry, epoch) for entry in self.entries]

    def text(self, last: int | None = None) -> str:
        """The events kept as text, one a line; the ``last`` ones only if given."""
        epoch = self.epoch or 0.0
        entries: Iterable[_Entry] = self.entries
        if last is not None:
            entries = islice(self.entries, max(0, len(self.entries) - last), None)
        return "".join(f"{_event(entry, epoch)}\n" for entry in entries)
