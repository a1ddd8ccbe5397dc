"""The supervisor's end of one worker process: starting it, its pipes, the
report lines it sends, and what ``/proc`` says of its sockets.

What a report line says is acted on by the supervisor (``_supervisor``); this
module only starts the process, asks it for reports, and cuts its reports
into lines, bounded in length, since another process writes them.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._protocol import CHILD_PROGRAM, ENVIRONMENT_KEY, STARTUP_SIGNALS, WorkerSettings

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["MAX_REPORT", "Child", "socket_inodes", "spawn_child", "udp_drops"]

logger = logging.getLogger("trioudp")

#: Longest report line accepted from a worker.
MAX_REPORT = 1 << 20


@attrs.define(eq=False)
class Child:
    """A worker process and the supervisor's ends of its pipes."""

    index: int
    process: trio.Process
    control: trio.lowlevel.FdStream
    reports: trio.lowlevel.FdStream
    ready: trio.Event = attrs.Factory(trio.Event)
    reports_done: trio.Event = attrs.Factory(trio.Event)
    changed: trio.Event = attrs.Factory(trio.Event)
    port: int | None = None
    addresses: list[tuple[str, int]] = attrs.Factory(list)
    latest: dict[str, Any] = attrs.Factory(dict)
    answers: int = 0
    #: The kernel's drop count of its sockets, read just before the
    #: supervisor killed it (None if it was not killed, or unknown).
    drops_at_kill: int | None = None
    _asking: trio.Lock = attrs.Factory(trio.Lock)

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def ask(self) -> bool:
        """Ask for a report of the counters; False if the worker's control
        pipe is closed. One request at a time: the pipe takes one writer."""
        async with self._asking:
            try:
                await self.control.send_all(b"stats\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
        return True

    def kill(self) -> None:
        """SIGKILL the worker (a stopped one too), first keeping its sockets'
        kernel drop count, which dies with it."""
        if self.process.returncode is None:
            self.drops_at_kill = udp_drops(self.process.pid)
            self.process.kill()

    async def read_reports(self, take_untrusted: Callable[[bytes], None]) -> None:
        """Hand each report line to ``take_untrusted`` until the worker closes
        its end; an overlong line is logged and dropped."""
        buffer = bytearray()
        try:
            async for chunk in self.reports:
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    take_untrusted(line)
                if len(buffer) > MAX_REPORT:
                    logger.warning("worker %d sent an overlong report", self.index)
                    buffer.clear()
        finally:
            self.reports_done.set()
            self.notify()


async def spawn_child(
    index: int,
    *,
    target: str,
    count: int,
    port: int,
    args: Sequence[str],
    grace: float,
    socket_fds: Sequence[int] = (),
    secret: bytes = b"",
) -> Child:
    """Start worker ``index`` (``python -c CHILD_PROGRAM``) with its settings,
    its two pipes and ``socket_fds`` (which stay the caller's); the worker's
    ends of the pipes are closed here once it has them."""
    control_read, control_write = os.pipe()
    report_read, report_write = os.pipe()
    settings = WorkerSettings(
        target=target,
        index=index,
        count=count,
        port=port,
        args=tuple(args),
        grace=grace,
        control_fd=control_read,
        report_fd=report_write,
        path=tuple(sys.path),
        socket_fds=tuple(socket_fds),
        secret=secret.hex(),
    )
    env = dict(os.environ)
    env[ENVIRONMENT_KEY] = settings.to_environment()
    try:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", CHILD_PROGRAM],
            env=env,
            pass_fds=(control_read, report_write, *socket_fds),
            preexec_fn=_block_startup_signals,
        )
    except BaseException:
        os.close(control_write)
        os.close(report_read)
        raise
    finally:
        os.close(control_read)
        os.close(report_write)
    return Child(
        index,
        process,
        trio.lowlevel.FdStream(control_write),
        trio.lowlevel.FdStream(report_read),
    )


def _block_startup_signals() -> None:
    # Runs in the new process between fork and exec, so no signal reaches the
    # worker before it can handle it (the mask survives exec); the worker
    # unblocks them once its handlers are in place.
    signal.pthread_sigmask(signal.SIG_BLOCK, STARTUP_SIGNALS)
    # A supervisor started in the background by a shell ignores SIGINT, and
    # exec keeps "ignored": a worker that inherited it lost a SIGINT sent
    # while it started (4 of 4 background CI runs). The stop signals are the
    # worker's own, so they start at their defaults (blocked: none arrives).
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


def socket_inodes(pid: int) -> set[str]:
    """The inode numbers of process ``pid``'s sockets, from ``/proc`` (Linux).

    Raises:
        OSError: no such process, or not allowed to look.

    Example::

        print(socket_inodes(os.getpid()))
    """
    descriptors = f"/proc/{pid}/fd"
    inodes = set()
    for name in os.listdir(descriptors):
        try:
            target = os.readlink(f"{descriptors}/{name}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def udp_drops(pid: int) -> int | None:
    """The kernel's drop counters of process ``pid``'s UDP sockets, summed:
    the ``drops`` column of ``/proc/net/udp`` and ``/proc/net/udp6`` for each
    socket among its descriptors (Linux). None where unknown.

    Example::

        drops = udp_drops(os.getpid())
    """
    try:
        inodes = socket_inodes(pid)
        drops: int | None = None
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            with open(table) as lines:
                for line in lines:
                    fields = line.split()
                    if len(fields) > 12 and fields[9] in inodes:
                        drops = (drops or 0) + int(fields[-1])
    except (OSError, ValueError):
        return None
    return drops
