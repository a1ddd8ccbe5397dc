"""Every line the command line prints goes through here, so that a reader
that is slow, stopped or gone never holds up the Trio loop.

A blocking ``print()`` stops the whole loop once the pipe to a reader that
does not read is full (64 KiB on Linux; a terminal stopped with Ctrl-S, a
pager left open): datagrams go unanswered, and SIGINT and SIGTERM are not
even seen. Here :func:`say` and :func:`warn` only queue a line (never
blocking), and a task of each :class:`LineWriter` writes the queue. A line
that would take the bytes waiting past :data:`LIMIT` is dropped whole and
counted; a server's counters line names the counts (:func:`dropped_note`),
and a line on stderr at exit says what was dropped and not yet reported.
The lines still waiting when the command ends get :data:`DRAIN` seconds,
then they are dropped and counted too: the exit never waits longer than
that on a reader that does not read. Memory is bounded by :data:`LIMIT`
for each stream (the lines being written and those waiting, or one line
longer than that alone).

Each stream is written through a descriptor of its own: a terminal or a
pipe is opened anew (``/proc/self/fd/N``) in non-blocking mode, which
leaves the file the process was given as it was (a terminal's file is
shared with the shell and with stdin, a pipe's with the ``--workers``
processes); a regular file never blocks on a reader and is written through
a copy of its descriptor. Elsewhere (a socket) the shared file is made
non-blocking for the block and restored after. A closed stream discards
its lines. A reader that closed its end (``EPIPE``, ``| head``) wants no
more: its lines are discarded and not counted, and :func:`wait_stdout_gone`
returns, so that a server stops quietly as it would have died of SIGPIPE.

The console open is the task's own (a context variable, inherited by the
tasks it starts): the entry points open one for the whole command. Without
one (a command's function called in process, in tests), lines are printed
as they come.

Invariants: while a console is open, nothing in the process writes to
file descriptors 1 and 2 other than its writers (a shared file made
non-blocking would make another writer's ``write()`` fail with ``EAGAIN``),
which is why log records go through the stderr writer too.
"""

from __future__ import annotations

import bisect
import contextlib
import contextvars
import errno
import itertools
import logging
import os
import stat
import sys
from typing import TYPE_CHECKING, TextIO

import trio

from ._output import plural

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

__all__ = [
    "DRAIN",
    "LIMIT",
    "Console",
    "LineWriter",
    "close_stdout",
    "dropped_note",
    "open_console",
    "say",
    "wait_stdout_gone",
    "warn",
]

#: Bytes waiting to be written, for each stream, past which lines are dropped.
LIMIT = 1 << 20
#: Seconds the lines still waiting at the end may take to be written.
DRAIN = 1.0
#: For :meth:`LineWriter.write_to`: the stream was closed when the process
#: started (its lines are discarded quietly, as ``print()`` does), or its
#: reader is gone already (discarded, and :attr:`LineWriter.gone` is set).
CLOSED = None
GONE = -1


class LineWriter:
    """Lines waiting for one output stream, the task that writes them, and
    how many were dropped.

    Example::

        async with trio.open_nursery() as nursery:
            writer = LineWriter()
            nursery.start_soon(writer.write_to, fd)
            writer.line("never blocks")
            await writer.aclose()
    """

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        #: Lines dropped: over the limit, cut short at the end, or after an
        #: error other than the reader going away.
        self.dropped = 0
        #: Set when the reader closed its end (or there never was one).
        self.gone = trio.Event()
        self._lines: list[bytes] = []
        self._batch: list[bytes] = []  # being written; _written bytes of it are
        self._written = 0
        self._size = 0
        self._discarding = False
        self._more = trio.Event()
        self._done = trio.Event()
        self._scope = trio.CancelScope()
        self._closed = False

    def line(self, text: str) -> None:
        """Queue ``text`` and a newline; never blocks. Dropped (and counted)
        if it would take the bytes waiting past ``limit`` (a line alone
        always waits) or after :meth:`aclose`; discarded once the reader is
        gone."""
        if self._discarding:
            return
        data = text.encode("utf-8", "backslashreplace") + b"\n"
        if self._closed or (self._size and self._size + len(data) > self.limit):
            self.dropped += 1
            return
        self._lines.append(data)
        self._size += len(data)
        self._more.set()

    async def aclose(self) -> None:
        """Take no more lines; give those waiting :data:`DRAIN` seconds to be
        written, then drop them. Afterwards :attr:`dropped` is final."""
        self._closed = True
        self._more.set()
        with trio.move_on_after(DRAIN):
            await self._done.wait()
        self._scope.cancel()
        await self._done.wait()  # the writer's cancellation is immediate

    async def write_to(self, fd: int | None) -> None:
        """Write the lines to ``fd`` (non-blocking, or a regular file) until
        :meth:`aclose`. :data:`CLOSED` (None): there is nowhere to write, the
        lines are discarded; :data:`GONE`: the reader is gone already."""
        try:
            with self._scope:
                if fd is None or fd == GONE:
                    self._discard(gone=fd == GONE)
                else:
                    await self._write_lines(fd)
        finally:
            # Lines not (wholly) written, unless nobody reads: dropped.
            if not self._discarding:
                ends = list(itertools.accumulate(map(len, self._batch)))
                self.dropped += len(self._batch) - bisect.bisect_right(
                    ends, self._written
                )
                self.dropped += len(self._lines)
            self._closed = True
            self._lines.clear()
            self._batch.clear()
            self._size = 0
            self._done.set()

    async def _write_lines(self, fd: int) -> None:
        while not self._discarding:
            if not self._lines:
                if self._closed:
                    return
                await self._more.wait()
                self._more = trio.Event()
                continue
            self._batch, self._lines = self._lines, []
            data = memoryview(b"".join(self._batch))
            try:
                while self._written < len(data):
                    try:
                        self._written += os.write(fd, data[self._written :])
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(fd)
            except BrokenPipeError:
                self._discard(gone=True)
                return
            except OSError:  # a full disk...: this batch and the rest dropped
                self._closed = True
                return
            self._size -= len(data)
            self._batch, self._written = [], 0

    def _discard(self, *, gone: bool) -> None:
        self._discarding = True
        self._closed = True
        self._lines.clear()
        self._batch.clear()
        self._size = 0
        if gone:
            self.gone.set()


class Console:
    """The command's two writers, ``out`` (stdout) and ``err`` (stderr);
    ``name`` starts the line that reports dropped lines at the end."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.out = LineWriter()
        self.err = LineWriter()
        self._reported = 0  # stdout lines dropped that a line has named

    def dropped_note(self) -> str:
        """``, stdout lines dropped 3``: each stream's count that is not 0."""
        self._reported = self.out.dropped
        return "".join(
            f", {stream} lines dropped {writer.dropped}"
            for stream, writer in (("stdout", self.out), ("stderr", self.err))
            if writer.dropped
        )

    async def aclose(self) -> None:
        """Close stdout, say on stderr what it dropped that no line named,
        then close stderr."""
        await self.out.aclose()
        if self.out.dropped > self._reported:
            self.err.line(
                f"{self.name}: {plural(self.out.dropped, 'line')} of output dropped:"
                f" stdout was not read (lines waiting at the end get {DRAIN:g} s)"
            )
        await self.err.aclose()


_current: contextvars.ContextVar[Console] = contextvars.ContextVar("trioudp_console")


def say(text: str) -> None:
    """Print ``text`` as a line on stdout, without blocking."""
    console = _current.get(None)
    if console is None:
        print(text, flush=True)
    else:
        console.out.line(text)


def warn(text: str) -> None:
    """Print ``text`` as a line on stderr, without blocking."""
    console = _current.get(None)
    if console is None:
        print(text, file=sys.stderr, flush=True)
    else:
        console.err.line(text)


def dropped_note() -> str:
    """What the console dropped, for the end of a counters line (see
    :meth:`Console.dropped_note`); empty when nothing was."""
    console = _current.get(None)
    return "" if console is None else console.dropped_note()


async def close_stdout() -> None:
    """Write what stdout has waiting (:data:`DRAIN` seconds at most) and
    take no more lines: its dropped count is then final."""
    console = _current.get(None)
    if console is not None:
        await console.out.aclose()
    await trio.lowlevel.checkpoint()


async def wait_stdout_gone() -> None:
    """Return once stdout's reader closed its end (never without a console)."""
    console = _current.get(None)
    if console is None:
        await trio.sleep_forever()
    else:
        await console.out.gone.wait()


class _ToWriter(logging.Handler):
    def __init__(self, writer: LineWriter, log_format: str) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(log_format))
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        self._writer.line(self.format(record))


@contextlib.contextmanager
def _descriptor(stream: TextIO | None) -> Iterator[int | None]:
    """A descriptor that writes where ``stream`` does and never blocks on a
    reader, for the block; else :data:`CLOSED` or :data:`GONE`."""
    try:
        fd = -1 if stream is None else stream.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError):
        yield CLOSED  # closed when the process started
        return
    restore = False
    if stat.S_ISREG(mode):
        own = os.dup(fd)
    else:
        try:
            own = os.open(
                f"/proc/self/fd/{fd}",
                os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC,
            )
        except OSError as exc:
            if exc.errno == errno.ENXIO and stat.S_ISFIFO(mode):
                yield GONE  # a pipe nobody reads any more
                return
            own = os.dup(fd)  # a socket, or no /proc: the file is shared
            restore = os.get_blocking(own)
            os.set_blocking(own, False)
    try:
        yield own
    finally:
        if restore:
            os.set_blocking(own, True)
        os.close(own)


@contextlib.asynccontextmanager
async def open_console(
    name: str, *, verbose: bool, log_format: str
) -> AsyncIterator[Console]:
    """A console for the command, the current one for the block; log
    records (DEBUG and above with ``verbose``, else WARNING and above) go to
    its stderr in ``log_format``. At the end, stdout is closed first (see
    :meth:`Console.aclose`).

    Example::

        async with open_console("trioudp serve", verbose=False, log_format="%(message)s"):
            say("Server is listening on 127.0.0.1:12345")
    """
    console = Console(name)
    root = logging.getLogger()
    handler = _ToWriter(console.err, log_format)
    level = root.level
    with _descriptor(sys.__stdout__) as out_fd, _descriptor(sys.__stderr__) as err_fd:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(console.out.write_to, out_fd)
            nursery.start_soon(console.err.write_to, err_fd)
            root.addHandler(handler)
            root.setLevel(logging.DEBUG if verbose else logging.WARNING)
            token = _current.set(console)
            try:
                yield console
            finally:
                _current.reset(token)
                root.removeHandler(handler)
                root.setLevel(level)
                # Bounded (DRAIN for each stream): the final lines (a
                # server's counters) are written even if the block was
                # cancelled.
                with trio.CancelScope(shield=True):
                    await console.aclose()
