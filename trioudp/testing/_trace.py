"""The record of what happened on a virtual network: its trace events and counters' snapshot.

Invariants:
    * A trace entry holds only immutable atoms (see ``_Entry``).
    * Everything one ``sendto`` causes at once carries one time: the sender
      sets :attr:`Recorder.instant` for its duration, so the clock is read
      once per datagram, not once per event.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, final

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._model import Endpoint, Packet

__all__ = ["DEFAULT_TRACE_LIMIT", "NetworkStats", "Recorder", "TraceEvent"]

#: How many events :attr:`VirtualNetwork.trace` keeps by default (the latest).
DEFAULT_TRACE_LIMIT = 100_000


@attrs.frozen(kw_only=True)
class TraceEvent:
    """One thing that happened on the network, at a virtual time.

    Kinds: ``send``, ``deliver``, ``drop`` (with a ``reason``: ``loss`` (of
    the datagram or of one of its fragments), ``partition``, ``rcvbuf``,
    ``port_unreachable``, ``host_unreachable`` (an address no host has, on
    the sender's subnet), ``no_route`` (``SO_BINDTODEVICE`` sent it by an
    interface it cannot arrive by), ``filtered``, ``closed``,
    ``uninstalled``, ``no_receiver``: a multicast or broadcast copy that no
    socket of its host takes), ``duplicate``, ``hold``,
    ``release`` and ``icmp`` (an unreachable report on its way back).
    ``str(event)`` is one stable line; equal traces print equal text.

    Example:
        >>> e = TraceEvent(time=0.5, kind="send", packet=1, src=("127.0.0.1", 1),
        ...                dst=("127.0.0.1", 2), size=3)
        >>> str(e)
        '0.500000000 send      #1 127.0.0.1:1 > 127.0.0.1:2 3B'
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
        reason = f" {self.reason}" if self.reason else ""
        return (
            f"{self.time:.9f} {self.kind:<9} #{self.packet}"
            f" {_show(self.src)} > {_show(self.dst)} {self.size}B{reason}"
        )


def _show(endpoint: Endpoint) -> str:
    ip, port = endpoint
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@attrs.frozen(kw_only=True)
class NetworkStats:
    """Counters of a :class:`VirtualNetwork`.

    Example:
        >>> NetworkStats().dropped_total
        0
    """

    sent: int = 0
    delivered: int = 0
    duplicated: int = 0
    held: int = 0
    dropped: dict[str, int] = attrs.field(factory=dict)

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

    def events(self) -> list[TraceEvent]:
        """The events kept, in order, with times from the epoch."""
        epoch = self.epoch or 0.0
        return [_event(entry, epoch) for entry in self.entries]

    def text(self) -> str:
        """The events kept as text, one a line."""
        epoch = self.epoch or 0.0
        return "".join(f"{_event(entry, epoch)}\n" for entry in self.entries)
