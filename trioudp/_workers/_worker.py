"""A worker process's side of :func:`trioudp.run_workers`: the :class:`Worker`
its main function receives, and the process's entry point.

The process runs ``main`` (``_protocol.CHILD_PROGRAM``), loads the target it
was given, and calls it with a :class:`Worker` under its own ``trio.run``;
the worker answers ``stats`` requests on its control pipe and writes its
reports (see ``_protocol``).

SIGINT and SIGTERM start a graceful stop (repeats are ignored: a Ctrl-C in a
terminal reaches the worker and the supervisor, which forwards it); SIGUSR1
is ignored, so a signal meant for the supervisor's whole process group does
not kill workers.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, final

import attrs
import trio

from ._protocol import ENVIRONMENT_KEY, STOP_MARGIN, WorkerSettings, load_target

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .._server import UDPServer

__all__ = ["Worker", "main"]


@final
class Worker:
    """What a worker's main function receives from :func:`run_workers`.

    The main function binds its server with ``reuse_port=True`` on
    :attr:`port`, calls :meth:`serving`, and returns when the server stops
    (an ``int`` it returns is the process's exit status).

    Example (the whole program is in :func:`run_workers`'s docstring)::

        server = await nursery.start(
            functools.partial(trioudp.serve_udp, handler, worker.port, reuse_port=True)
        )
        worker.serving(server)
    """

    def __init__(self, settings: WorkerSettings) -> None:
        self._settings = settings
        self._server: UDPServer | None = None
        self._on_stop: Callable[[], object] | None = None
        self._stopping = False
        self._scope: trio.CancelScope | None = None
        self._reports: trio.MemorySendChannel[bytes] | None = None

    @property
    def index(self) -> int:
        """This worker's number, from 0 to ``count - 1`` (a restarted worker keeps it)."""
        return self._settings.index

    @property
    def count(self) -> int:
        """How many workers the pool runs."""
        return self._settings.count

    @property
    def port(self) -> int:
        """The port to bind. 0 only for worker 0 when any free port was asked
        for; the others then get the port worker 0 bound."""
        return self._settings.port

    @property
    def args(self) -> tuple[str, ...]:
        """The ``args`` given to :func:`run_workers`."""
        return self._settings.args

    @property
    def stopping(self) -> bool:
        """Whether a stop (a signal, or the supervisor gone) has begun."""
        return self._stopping

    def serving(
        self, server: UDPServer, *, stop: Callable[[], object] | None = None
    ) -> None:
        """Tell the supervisor this worker serves, and report ``server``'s counters.

        Args:
            server: the server this worker runs; the supervisor reads its
                :attr:`UDPServer.stats`.
            stop: called once on SIGINT/SIGTERM; by default
                ``server.begin_shutdown(grace)``. The main function should
                return within ``grace`` seconds afterwards, or it is cancelled.
        """
        self._server = server
        self._on_stop = stop
        self._report("ready", port=server.port)

    def _report(self, event: str, **fields: object) -> None:
        if self._reports is not None:
            line = json.dumps({"event": event, **fields}) + "\n"
            self._reports.send_nowait(line.encode())

    def _stats(self) -> dict[str, Any]:
        return {} if self._server is None else attrs.asdict(self._server.stats)

    def _stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        grace = self._settings.grace
        if self._on_stop is not None:
            self._on_stop()
        elif self._server is not None:
            self._server.begin_shutdown(grace)
        elif self._scope is not None:
            self._scope.cancel()
        if self._scope is not None:
            self._scope.deadline = min(
                self._scope.deadline, trio.current_time() + grace + STOP_MARGIN
            )

    async def _run(self, main: Callable[[Worker], Awaitable[int | None]]) -> int:
        control = trio.lowlevel.FdStream(self._settings.control_fd)
        report = trio.lowlevel.FdStream(self._settings.report_fd)
        send, receive = trio.open_memory_channel[bytes](math.inf)
        self._reports = send
        status: int | None = None
        async with control, report, trio.open_nursery() as outer:
            outer.start_soon(self._write_reports, receive, report)
            async with trio.open_nursery() as inner:
                self._scope = inner.cancel_scope
                inner.start_soon(self._answer_requests, control)
                inner.start_soon(self._watch_signals)
                status = await main(self)
                inner.cancel_scope.cancel()
            self._report("final", stats=self._stats())
            send.close()
        return status or 0

    async def _write_reports(
        self, receive: trio.MemoryReceiveChannel[bytes], report: trio.lowlevel.FdStream
    ) -> None:
        async with receive:
            async for line in receive:
                try:
                    await report.send_all(line)
                except trio.BrokenResourceError:
                    return  # the supervisor is gone; nobody to tell

    async def _answer_requests(self, control: trio.lowlevel.FdStream) -> None:
        async for chunk in control:
            for _ in range(chunk.count(b"\n")):
                self._report("stats", stats=self._stats())
        self._stop()  # end of file: the supervisor is gone

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                self._stop()


def main() -> None:
    """A worker process's entry point (see the module docstring)."""
    settings = WorkerSettings.from_environment()
    del os.environ[ENVIRONMENT_KEY]
    sys.path[:0] = [entry for entry in settings.path if entry not in sys.path]
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    target = load_target(settings.target)
    sys.exit(trio.run(Worker(settings)._run, target))
