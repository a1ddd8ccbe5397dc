"""One worker process of :func:`trioudp.run_workers`: the child's side.

The supervisor starts ``python -c "import trioudp._worker as w; w.main()"``
with its settings in the ``TRIOUDP_WORKER`` environment variable and two
pipes: *control* (supervisor to worker) and *reports* (worker to
supervisor). Both carry lines of text:

- control: ``stats`` asks for a report of the counters. End of file means
  the supervisor is gone: the worker stops as on SIGTERM, so a supervisor
  killed with SIGKILL leaves no worker behind.
- reports: JSON objects, one a line: ``{"event": "ready", "port": N}`` once
  the worker serves, ``{"event": "stats", "stats": {...}}`` for each
  request, and ``{"event": "final", "stats": {...}}`` after a clean stop.
  ``stats`` holds the fields of :class:`ServerStats`.

SIGINT and SIGTERM start a graceful stop (repeats are ignored: a Ctrl-C in a
terminal reaches the worker and the supervisor, which forwards it); SIGUSR1
is ignored, so a signal meant for the supervisor's whole process group does
not kill workers.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, final

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._server import UDPServer

__all__ = ["Worker", "load_target", "main"]

#: The environment variable that carries a worker's settings.
ENVIRONMENT_KEY = "TRIOUDP_WORKER"
#: The program a worker runs (``python -c``): this module's :func:`main`.
CHILD_PROGRAM = "import trioudp._worker as w; w.main()"
#: Seconds a worker's main may run past ``grace`` after a stop before it is
#: cancelled.
STOP_MARGIN = 1.0


@attrs.frozen(kw_only=True)
class WorkerSettings:
    """What the supervisor tells a worker (JSON in ``TRIOUDP_WORKER``)."""

    target: str
    index: int
    count: int
    port: int
    args: tuple[str, ...]
    grace: float
    control_fd: int
    report_fd: int
    path: tuple[str, ...] = ()

    def to_environment(self) -> str:
        return json.dumps(attrs.asdict(self))

    @classmethod
    def from_environment(cls) -> WorkerSettings:
        fields = json.loads(os.environ[ENVIRONMENT_KEY])
        fields["args"] = tuple(fields["args"])
        fields["path"] = tuple(fields["path"])
        return cls(**fields)


def load_target(spec: str) -> Callable[[Worker], Awaitable[int | None]]:
    """The function a ``"module:function"`` or ``"/path/file.py:function"``
    spec names.

    A file is loaded as a module named ``__trioudp_worker__``, so its
    ``if __name__ == "__main__":`` block does not run in the worker.

    Raises:
        ValueError: ``spec`` has no ``:`` between a module and a name.
        ImportError, AttributeError: the module or the name does not exist.

    Example:
        >>> load_target("trioudp._cli_workers:cli_worker").__name__
        'cli_worker'
    """
    module_name, _, name = spec.rpartition(":")
    if not module_name or not name:
        msg = (
            f"a worker target is 'module:function' or 'file.py:function', not {spec!r}"
        )
        raise ValueError(msg)
    if module_name.endswith(".py"):
        location = importlib.util.spec_from_file_location(
            "__trioudp_worker__", module_name
        )
        if location is None or location.loader is None:
            msg = f"cannot load {module_name!r}"
            raise ImportError(msg)
        module = importlib.util.module_from_spec(location)
        sys.modules[location.name] = module
        location.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    found: Any = module
    for part in name.split("."):
        found = getattr(found, part)
    target: Callable[[Worker], Awaitable[int | None]] = found
    return target


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
