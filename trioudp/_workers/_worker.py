"""A worker process's side of :func:`trioudp.run_workers`: the :class:`Worker`
its main function receives, and the process's entry point.

The process runs ``main`` (``_protocol.CHILD_PROGRAM``), loads the target it
was given, and calls it with a :class:`Worker` under its own ``trio.run``;
the worker answers ``stats`` requests on its control pipe and writes its
reports (see ``_protocol``).

SIGINT and SIGTERM start a graceful stop (repeats are ignored: a Ctrl-C in a
terminal reaches the worker and the supervisor, which forwards it); SIGUSR1
is ignored, so a signal meant for the supervisor's whole process group does
not kill workers. All three are blocked from the process's first instruction
(``_protocol.STARTUP_SIGNALS``) until the worker's handlers are in place, so
one that comes while it starts takes effect then.

When the supervisor dies, the kernel sends the worker SIGCONT (Linux's
parent-death signal): a worker that was stopped (SIGSTOP) runs again, reads
end of file on its control pipe, and stops like the others.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, Protocol, final

import attrs
import trio

from .._server import ServerStats
from .._socket import UDPSocket
from ._protocol import (
    ENVIRONMENT_KEY,
    STARTUP_SIGNALS,
    STOP_MARGIN,
    WorkerSettings,
    load_target,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .._address import SocketAddress

__all__ = ["Served", "Worker", "main"]

#: prctl(2)'s option that sets the signal the kernel sends when the parent dies.
_PR_SET_PDEATHSIG = 1


class Served(Protocol):
    """What :meth:`Worker.serving` needs of a server: a :class:`UDPServer`,
    or a server built on one, such as ``trioudp.quic.QUICServer``, whose
    ``stats`` carry the UDP intake's :class:`ServerStats` as ``udp``."""

    @property
    def port(self) -> int: ...

    @property
    def addresses(self) -> list[SocketAddress]: ...

    @property
    def stats(self) -> object: ...

    def begin_shutdown(self, grace: float = ...) -> None: ...


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
        self._sockets: list[UDPSocket] | None = None
        self._server: Served | None = None
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
    def sockets(self) -> list[UDPSocket]:
        """The sockets the supervisor bound for this worker, one per address,
        when the pool runs with ``sockets=WorkerSockets(...)``; serve them
        (the server closes this process's copies; the supervisor keeps its
        own, so they keep their place in the port's group). Empty otherwise:
        then bind :attr:`port` with ``reuse_port=True``.

        Example::

            server = await nursery.start(
                functools.partial(trioudp.serve_udp_sockets, handler, worker.sockets)
            )
        """
        if self._sockets is None:
            self._sockets = [
                UDPSocket(trio.socket.socket(fileno=fd))
                for fd in self._settings.socket_fds
            ]
        return list(self._sockets)

    @property
    def secret(self) -> bytes:
        """32 random bytes that every worker of this pool shares (and a
        restarted worker gets again): for keys the workers must agree on,
        such as a QUIC server's stateless reset key."""
        return bytes.fromhex(self._settings.secret)

    @property
    def stopping(self) -> bool:
        """Whether a stop (a signal, or the supervisor gone) has begun."""
        return self._stopping

    def serving(
        self, server: Served, *, stop: Callable[[], object] | None = None
    ) -> None:
        """Tell the supervisor this worker serves, and report ``server``'s counters.

        Args:
            server: the server this worker runs; the supervisor reads its
                :attr:`UDPServer.stats` (a QUIC server's ``stats.udp``).
            stop: called once on SIGINT/SIGTERM; by default
                ``server.begin_shutdown(grace)``. The main function should
                return within ``grace`` seconds afterwards, or it is cancelled.
        """
        self._server = server
        self._on_stop = stop
        addresses = [list(address[:2]) for address in server.addresses]
        self._report("ready", port=server.port, addresses=addresses)

    def _report(self, event: str, **fields: object) -> None:
        if self._reports is not None:
            line = json.dumps({"event": event, **fields}) + "\n"
            self._reports.send_nowait(line.encode())

    def _stats(self) -> dict[str, Any]:
        stats = None if self._server is None else self._server.stats
        udp = stats if isinstance(stats, ServerStats) else getattr(stats, "udp", None)
        return attrs.asdict(udp) if isinstance(udp, ServerStats) else {}

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
        written = trio.Event()
        async with control, report, trio.open_nursery() as outer:
            outer.start_soon(self._write_reports, receive, report, written)
            try:
                async with trio.open_nursery() as inner:
                    self._scope = inner.cancel_scope
                    await inner.start(self._watch_signals)
                    inner.start_soon(self._answer_requests, control)
                    status = await main(self)
                    inner.cancel_scope.cancel()
            finally:
                # Also when main raised: what it counted reaches the
                # supervisor before this process ends.
                self._report("final", stats=self._stats())
                send.close()
                with trio.CancelScope(shield=True), trio.move_on_after(STOP_MARGIN):
                    await written.wait()
        return status or 0

    async def _write_reports(
        self,
        receive: trio.MemoryReceiveChannel[bytes],
        report: trio.lowlevel.FdStream,
        written: trio.Event,
    ) -> None:
        try:
            async with receive:
                async for line in receive:
                    try:
                        await report.send_all(line)
                    except trio.BrokenResourceError:
                        return  # the supervisor is gone; nobody to tell
        finally:
            written.set()

    async def _answer_requests(self, control: trio.lowlevel.FdStream) -> None:
        async for chunk in control:
            for _ in range(chunk.count(b"\n")):
                self._report("stats", stats=self._stats())
        self._stop()  # end of file: the supervisor is gone

    async def _watch_signals(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            # Handlers in place: a signal that came while starting (blocked
            # since exec) is delivered now, and stops the worker.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STARTUP_SIGNALS)
            task_status.started()
            async for _ in signals:
                self._stop()


def _continue_when_orphaned() -> None:
    """Ask Linux to send SIGCONT to this process when the supervisor dies.

    A stopped worker then runs again, reads end of file on its control pipe
    and stops. Not SIGKILL: the kernel sends the signal when the supervisor's
    *thread* that started the worker ends, and Trio starts processes from
    threads that it ends when idle; SIGCONT is harmless to a running process.
    """
    if not sys.platform.startswith("linux"):
        return  # pragma: no cover
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGCONT), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def main() -> None:
    """A worker process's entry point (see the module docstring)."""
    # SIGUSR1 is blocked since exec (STARTUP_SIGNALS); ignored from here.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    _continue_when_orphaned()
    settings = WorkerSettings.from_environment()
    del os.environ[ENVIRONMENT_KEY]
    sys.path[:0] = [entry for entry in settings.path if entry not in sys.path]
    target = load_target(settings.target)
    sys.exit(trio.run(Worker(settings)._run, target))
