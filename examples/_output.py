"""Standard output and error for the example servers, written so that a
reader that is slow, stopped or gone never holds up the server.

``print()`` from a handler blocks in ``write()`` once the pipe to a reader
that does not read is full (64 KiB on Linux): the whole Trio loop stops with
it, datagrams go unanswered, and SIGINT and SIGTERM are not even seen. Here a
handler only queues a line (:meth:`LineWriter.line` never blocks) and a task
of its own writes the queue to a non-blocking duplicate of the descriptor.
A line that would take the bytes waiting past ``limit`` is dropped whole
and counted (one line alone always waits, however long); the lines still
waiting when the server stops get :data:`DRAIN` seconds, then they are
dropped and counted too. Memory is thus bounded by twice the larger of
``limit`` and the longest line (the lines being written and those waiting).

Log records of level WARNING and above (trioudp's own included) go through
the standard-error writer for the same reason.

Unix only: :class:`trio.lowlevel.FdStream`. Non-blocking mode belongs to the
open file, so while the writers run nothing else may write to the standard
streams directly (a terminal shares one open file between them); the
previous mode is restored when they stop.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["LineWriter", "open_output"]

LIMIT = 1 << 20  # bytes waiting to be written, for each stream
DRAIN = 1.0  # seconds the lines waiting at the end may take to be written


class LineWriter:
    """Lines waiting for one output stream, and how many were dropped."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self.dropped = 0
        self._waiting = bytearray()
        self._writing = bytearray()
        self._more = trio.Event()
        self._written = trio.Event()
        self._scope = trio.CancelScope()
        self._closed = False

    def line(self, text: str) -> None:
        """Queue ``text`` and a newline; never blocks. Dropped (and counted)
        if it would take the bytes waiting past ``limit``, or after
        :meth:`aclose`."""
        data = text.encode("utf-8", "backslashreplace") + b"\n"
        waiting = len(self._waiting)
        if self._closed or (waiting and waiting + len(data) > self.limit):
            self.dropped += 1
            return
        self._waiting += data
        self._more.set()

    async def aclose(self) -> None:
        """Take no more lines; give those waiting :data:`DRAIN` seconds to be
        written, then drop them. Afterwards :attr:`dropped` is final."""
        self._closed = True
        self._more.set()
        with trio.move_on_after(DRAIN):
            await self._written.wait()
        self._scope.cancel()
        await self._written.wait()  # the writer's cancellation is immediate

    async def _write_to(self, stream: trio.lowlevel.FdStream) -> None:
        # os.write rather than send_all: it says how much went out, so that a
        # line cut short by aclose counts as dropped and a whole one does not.
        fd = stream.fileno()
        with self._scope:
            while self._waiting or not self._closed:
                if not self._waiting:
                    await self._more.wait()
                    self._more = trio.Event()
                    continue
                self._writing, self._waiting = self._waiting, bytearray()
                try:
                    while self._writing:
                        try:
                            del self._writing[: os.write(fd, self._writing)]
                        except BlockingIOError:
                            await stream.wait_send_all_might_not_block()
                except OSError:  # the reader closed its end, a full disk...
                    break
        # Lines not (wholly) written: dropped.
        self.dropped += self._writing.count(b"\n") + self._waiting.count(b"\n")
        self._writing.clear()
        self._waiting.clear()
        self._closed = True
        self._written.set()


class _ToWriter(logging.Handler):
    def __init__(self, writer: LineWriter) -> None:
        super().__init__(logging.WARNING)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        self._writer.line(self.format(record))


@contextlib.asynccontextmanager
async def _writing(fd: int) -> AsyncIterator[LineWriter]:
    writer = LineWriter()
    stream = trio.lowlevel.FdStream(os.dup(fd))
    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(writer._write_to, stream)
        try:
            yield writer
        finally:
            await writer.aclose()


@contextlib.asynccontextmanager
async def open_output() -> AsyncIterator[tuple[LineWriter, LineWriter]]:
    """Writers for standard output and standard error, for the block.

    At the end of the block, each gets :data:`DRAIN` seconds to write what
    is waiting (standard error first: close ``out`` yourself to report its
    final count on ``err``).

    Example::

        async with open_output() as (out, err):
            out.line("one line on stdout")
            await out.aclose()
            err.line(f"{out.dropped} lines dropped")
    """
    async with _writing(1) as out, _writing(2) as err:
        handler = _ToWriter(err)
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            yield out, err
        finally:
            root.removeHandler(handler)
