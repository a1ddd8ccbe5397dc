"""The supervisor's end of one worker process: starting it, its pipes, and the
report lines it sends.

What a report line says is acted on by the supervisor (``_supervisor``); this
module only starts the process and cuts its reports into lines, bounded in
length, since another process writes them.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._protocol import CHILD_PROGRAM, ENVIRONMENT_KEY, WorkerSettings

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["MAX_REPORT", "Child", "spawn_child"]

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
    latest: dict[str, Any] = attrs.Factory(dict)
    answers: int = 0

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

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
) -> Child:
    """Start worker ``index`` (``python -c CHILD_PROGRAM``) with its settings
    and its two pipes; the worker's ends are closed here once it has them."""
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
    )
    env = dict(os.environ)
    env[ENVIRONMENT_KEY] = settings.to_environment()
    try:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", CHILD_PROGRAM],
            env=env,
            pass_fds=(control_read, report_write),
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
