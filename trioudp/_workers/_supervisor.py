"""The supervisor of several processes serving one port: :class:`WorkerPool`
and :func:`run_workers` (``_worker`` is a worker's side).

Each worker is its own Python process with its own ``trio.run``; they bind
the same port with ``SO_REUSEPORT`` and the kernel spreads datagrams over them
by a hash of the source address and port. The supervisor is a Trio program:
it starts the workers (worker 0 first, the rest once it serves: on the port
it bound when any free port was asked for), forwards SIGINT/SIGTERM, checks
that each worker still answers (killing one that does not: a stopped or
blocked worker keeps receiving its share of the datagrams), restarts a worker
that dies after a back-off, gives up on a crash loop, and sums the workers'
counters.

Invariants:
    - No worker outlives the supervisor's :func:`run_workers` call: every
      process is reaped in a shielded ``finally`` (graceful signal, then
      SIGKILL after ``grace`` plus a margin); a supervisor that is itself
      killed closes the workers' control pipes, which stops them, and the
      kernel continues stopped ones (``_worker``) so that they see it.
    - A worker's counters are counted once: those of a live worker come from
      its latest report; when it ends, that report moves to the retired total
      in the same synchronous step that forgets the process.
    - Liveness is counted in the supervisor's own checks, not in elapsed
      time: a supervisor that was itself stopped (Ctrl-Z stops the whole
      process group) finds its workers late on its first check after
      ``SIGCONT``, and must not kill them for that.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import signal
from typing import TYPE_CHECKING, Any, final

import trio

from .._address import check_port
from .._errors import WorkerCrashLoop, WorkerStartFailed, describe_exit
from ._child import spawn_child
from ._policy import (
    DEFAULT_RESTART_BACKOFF,
    CrashBudget,
    check_settings,
    default_workers,
    is_count,
    parse_addresses,
    retired_report,
    sum_stats,
)
from ._protocol import STOP_MARGIN, target_spec
from ._sockets import descriptors, held_sockets

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from .._backoff import Backoff
    from .._server import ServerStats
    from .._socket import UDPSocket
    from ._child import Child
    from ._sockets import WorkerSockets
    from ._worker import Worker

__all__ = ["WorkerPool", "run_workers"]

logger = logging.getLogger("trioudp")

#: Seconds :meth:`WorkerPool.stats` waits for each worker's answer.
STATS_WAIT = 1.0
#: Seconds the supervisor waits for a worker's last reports after it exits.
REPORT_DRAIN = 1.0
#: Liveness checks per ``liveness_timeout``: a worker is killed once this
#: many checks in a row found it had not answered the one before.
LIVENESS_CHECKS = 8


@final
class WorkerPool:
    """Worker processes serving one port, as :func:`run_workers` reports them.

    Example::

        async with trio.open_nursery() as nursery:
            pool = await nursery.start(trioudp.run_workers, "app:main", 4)
            print(pool.port, pool.pids)
            print((await pool.stats()).received)
            pool.shutdown()
    """

    def __init__(
        self,
        spec: str,
        count: int,
        *,
        port: int,
        args: Sequence[str],
        grace: float,
        budget: CrashBudget,
        liveness_timeout: float | None = None,
        sockets: WorkerSockets | None = None,
    ) -> None:
        self._spec = spec
        self._socket_plan = sockets
        # The sockets the supervisor bound and holds, by worker (_sockets).
        self._held: list[list[UDPSocket]] = []
        self._secret = os.urandom(32)
        self._liveness_timeout = liveness_timeout
        self._count = count
        self._port = port
        self._args = tuple(args)
        self._grace = grace
        self._budget = budget
        self._children: dict[int, Child] = {}
        self._retired: list[dict[str, Any]] = []
        self._restarts = 0
        self._stopping = False
        self._stop_requested = trio.Event()
        self._stop_signal = signal.SIGTERM
        self._scope = trio.CancelScope()
        self._changed = trio.Event()
        self._stats_lock = trio.Lock()
        self._failure: WorkerStartFailed | WorkerCrashLoop | None = None
        self._addresses: list[tuple[str, int]] = []

    @property
    def workers(self) -> int:
        """How many workers the pool runs."""
        return self._count

    @property
    def port(self) -> int:
        """The port the workers share (known once worker 0 serves)."""
        return self._port

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The addresses the first worker to serve reported serving (the
        others bind the same), such as ``[("127.0.0.1", 40000)]``."""
        return list(self._addresses)

    @property
    def pids(self) -> list[int]:
        """The process ids of the workers alive now, in worker order."""
        return [child.process.pid for _, child in sorted(self._children.items())]

    @property
    def restarts(self) -> int:
        """Workers restarted after a crash that serve again."""
        return self._restarts

    @property
    def stopping(self) -> bool:
        """Whether the pool is stopping."""
        return self._stopping

    async def stats(self) -> ServerStats:
        """The workers' counters summed: every live worker is asked for its
        own (each may take up to ``STATS_WAIT`` seconds to answer, else its
        previous report counts), plus the last reports of ended workers.

        A worker that crashed counts as of its last report (each call of this
        method and each clean stop make one). Levels (``in_flight``,
        ``queued``, ``tasks``) count live workers only.
        """
        async with self._stats_lock:
            asked = []
            for child in list(self._children.values()):
                if child.ready.is_set():
                    answers = child.answers
                    if await child.ask():
                        asked.append((child, answers))
            with trio.move_on_after(STATS_WAIT):
                for child, answers in asked:
                    while child.answers == answers and not child.reports_done.is_set():
                        await child.changed.wait()
            return self.stats_nowait()

    def stats_nowait(self) -> ServerStats:
        """The workers' counters summed as they last reported them, without
        asking: each liveness check refreshes a worker's report, so they are
        at most ``liveness_timeout / 8`` seconds old (a worker that has
        ended counts as of its last report).

        Example::

            print(pool.stats_nowait().received)
        """
        return sum_stats(
            [child.latest for child in self._children.values()] + self._retired
        )

    def shutdown(self, signum: int = signal.SIGTERM) -> None:
        """Begin a graceful stop: send ``signum`` to every worker; those still
        running ``grace`` (plus a margin) seconds later are killed. Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        self._stop_signal = signal.Signals(signum)
        self._stop_requested.set()
        self._scope.deadline = trio.current_time() + self._grace + STOP_MARGIN
        for child in self._children.values():
            if child.process.returncode is None:
                child.process.send_signal(signum)
                # A stopped worker runs again to stop (else it would wait
                # out the grace period and be killed).
                child.process.send_signal(signal.SIGCONT)

    def _kill_now(self) -> None:
        self.shutdown()
        self._scope.deadline = -math.inf

    def _fail(self, error: WorkerStartFailed | WorkerCrashLoop) -> None:
        """Stop every worker gracefully; :func:`run_workers` then raises ``error``."""
        if self._failure is None:
            self._failure = error
            # Raised by run_workers once all have stopped; logged now, since
            # stopping takes up to the grace period.
            logger.info("%s; stopping the workers", error)
        self.shutdown()

    async def wait_restarts(self, count: int) -> None:
        """Wait until ``count`` restarts have happened since the pool started
        and the restarted workers serve again (for monitoring and tests)."""
        while self._restarts < count:
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # ---- running ---------------------------------------------------------

    async def _run(
        self,
        on_signal: Callable[[signal.Signals], object] | None,
        on_stats: Callable[[ServerStats], object],
        task_status: trio.TaskStatus[WorkerPool],
    ) -> ServerStats:
        async with (
            held_sockets(self._socket_plan, self._count, self._port) as held,
            trio.open_nursery() as outer,
        ):
            self._held = held
            self._port = held[0][0].local_address[1] if held else self._port
            if on_signal is not None:
                await outer.start(self._watch_signals, on_signal, on_stats)
            with self._scope:
                async with trio.open_nursery() as slots:
                    await slots.start(self._keep_running, 0)
                    async with trio.open_nursery() as starting:
                        for index in range(1, self._count):
                            starting.start_soon(slots.start, self._keep_running, index)
                    if self._failure is None:
                        task_status.started(self)
            outer.cancel_scope.cancel()
        if self._failure is not None:
            raise self._failure
        return sum_stats(self._retired)

    async def _watch_signals(
        self,
        on_signal: Callable[[signal.Signals], object],
        on_stats: Callable[[ServerStats], object],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        watched = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
        with trio.open_signal_receiver(*watched) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGUSR1:
                    on_stats(await self.stats())
                    continue
                on_signal(signal.Signals(signum))
                if self._stopping:
                    self._kill_now()  # asked twice: no more grace
                else:
                    self.shutdown(signum)

    async def _keep_running(
        self, index: int, *, task_status: trio.TaskStatus[None]
    ) -> None:
        first = True
        while not self._stopping:
            child = await self._spawn(index)

            def on_ready(child: Child = child) -> None:
                nonlocal first
                if first:
                    first = False
                    task_status.started()
                else:
                    self._restarts += 1
                    logger.warning(
                        "worker %d serves again (pid %d)", index, child.process.pid
                    )
                    self._notify()

            try:
                returncode = await self._run_child(child, on_ready)
            finally:
                await self._reap(child)
            if self._stopping:
                break
            if first:
                self._fail(WorkerStartFailed(index, returncode))
                break
            if returncode == 0:
                logger.info(
                    "worker %d (pid %d) ended on its own: stopping the others",
                    index,
                    child.process.pid,
                )
                self.shutdown()
                break
            delay = self._budget.crashed(trio.current_time())
            if delay is None:
                self._fail(
                    WorkerCrashLoop(
                        index, returncode, self._budget.recent, self._budget.window
                    )
                )
                break
            logger.warning(
                "worker %d (pid %d) %s; restarting it in %.2g s",
                index,
                child.process.pid,
                describe_exit(returncode),
                delay,
            )
            with trio.move_on_after(delay):
                await self._stop_requested.wait()
        if first:
            task_status.started()

    async def _spawn(self, index: int) -> Child:
        child = await spawn_child(
            index,
            target=self._spec,
            count=self._count,
            port=self._port,
            args=self._args,
            grace=self._grace,
            socket_fds=descriptors(self._held, index),
            secret=self._secret,
        )
        process = child.process
        self._children[index] = child
        if self._stopping:  # a stop began while it was starting
            process.send_signal(self._stop_signal)
        logger.info("worker %d started (pid %d)", index, process.pid)
        return child

    async def _run_child(self, child: Child, on_ready: Callable[[], None]) -> int:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                child.read_reports,
                functools.partial(
                    self._take_report_untrusted, child, on_ready=on_ready
                ),
            )
            if self._liveness_timeout is not None:
                nursery.start_soon(self._check_liveness, child)
            returncode = await child.process.wait()
            with trio.move_on_after(REPORT_DRAIN):
                await child.reports_done.wait()
            nursery.cancel_scope.cancel()
        return returncode

    async def _check_liveness(self, child: Child) -> None:
        """Ask ``child`` for its counters every ``liveness_timeout /
        LIVENESS_CHECKS`` seconds once it serves; kill it once
        ``LIVENESS_CHECKS`` checks in a row found the last request unanswered
        (see the module's invariants)."""
        timeout = self._liveness_timeout
        assert timeout is not None
        interval = timeout / LIVENESS_CHECKS
        await child.ready.wait()
        unanswered = 0
        answers = -1
        while not self._stopping:
            if child.answers != answers:
                unanswered = 0
                answers = child.answers
                if not await child.ask():
                    return  # its pipe is closed: it is ending
            else:
                unanswered += 1
                if unanswered >= LIVENESS_CHECKS:
                    logger.warning(
                        "worker %d (pid %d) has not answered for %.3g s"
                        " (stopped, or its event loop blocked): killing it",
                        child.index,
                        child.process.pid,
                        timeout,
                    )
                    child.kill()
                    return
            await trio.sleep(interval)

    def _take_report_untrusted(
        self, child: Child, line: bytes, *, on_ready: Callable[[], None]
    ) -> None:
        """Act on one report line; a malformed one is logged and ignored."""
        try:
            report = json.loads(line)
            event = report["event"]
            if event == "ready":
                port = report["port"]
                if not is_count(port):
                    raise TypeError(port)
                child.port = port
                child.addresses = parse_addresses(report.get("addresses", []))
                if not self._addresses:
                    self._addresses = child.addresses
                if self._port == 0:
                    self._port = port
                elif port != self._port:
                    logger.warning(
                        "worker %d serves port %d, not the pool's %d",
                        child.index,
                        port,
                        self._port,
                    )
                child.ready.set()
                on_ready()
            elif event in ("stats", "final"):
                stats = report["stats"]
                if not isinstance(stats, dict):
                    raise TypeError(stats)
                child.latest = stats
                child.answers += 1
                child.notify()
                self._notify()
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("worker %d sent a bad report %r: %r", child.index, line, exc)

    async def _reap(self, child: Child) -> None:
        """Wait for ``child`` to end (signalling it, then killing it, if need
        be) and move its counters to the retired total."""
        with trio.CancelScope(shield=True):
            process = child.process
            if process.returncode is None:
                if self._stopping:  # shutdown() has signalled it
                    deadline = self._scope.deadline
                else:  # an error or a cancellation elsewhere
                    process.send_signal(signal.SIGTERM)
                    deadline = trio.current_time() + self._grace + STOP_MARGIN
                with trio.move_on_at(deadline):
                    await process.wait()
                if process.returncode is None:
                    logger.warning(
                        "worker %d (pid %d) did not stop: killing it",
                        child.index,
                        process.pid,
                    )
                    child.kill()
                    await process.wait()
            if self._children.get(child.index) is child:
                del self._children[child.index]
            self._retired.append(
                retired_report(child.latest, kernel_drops=child.drops_at_kill)
            )
            await child.control.aclose()
            await child.reports.aclose()
            self._notify()


def _log_stats(total: ServerStats) -> None:
    logger.info("workers' counters: %r", total)


def _log_signal(signum: signal.Signals) -> None:
    logger.info("received %s: stopping the workers", signum.name)


async def run_workers(
    target: str | Callable[[Worker], Awaitable[int | None]],
    workers: int = 1,
    *,
    port: int = 0,
    args: Sequence[str] = (),
    grace: float = 5.0,
    restart_backoff: Backoff = DEFAULT_RESTART_BACKOFF,
    max_crashes: int = 5,
    crash_window: float = 60.0,
    liveness_timeout: float | None = 1.0,
    sockets: WorkerSockets | None = None,
    handle_signals: bool = True,
    on_signal: Callable[[signal.Signals], object] | None = None,
    on_stats: Callable[[ServerStats], object] | None = None,
    task_status: trio.TaskStatus[WorkerPool] = trio.TASK_STATUS_IGNORED,
) -> ServerStats:
    """Run ``workers`` processes that each run ``target`` and share ``port``.

    Each worker is a fresh Python process with its own ``trio.run``; it calls
    ``await target(worker)`` with a :class:`Worker`, which binds its server
    with ``reuse_port=True`` on ``worker.port`` and calls
    ``worker.serving(server)``. The kernel (``SO_REUSEPORT``) spreads
    datagrams over the workers by a hash of their source address and port, so
    one client's datagrams reach one worker while the set of workers stays
    the same. Linux; the workers must run as the same user.

    Args:
        target: a module-level async function, or its name as
            ``"module:function"`` or ``"/path/file.py:function"``. Workers
            import it afresh (a script's ``if __name__ == "__main__":`` block
            does not run in them).
        workers: how many processes; 0 means one per CPU.
        port: the port to share; 0 lets worker 0 pick a free one, and the
            others then join it.
        args: strings handed to each worker as ``worker.args``.
        grace: seconds a stopping worker may take before it is killed.
        restart_backoff: the wait before restarting a worker that died: its
            ``base(n)`` after the ``n``-th crash in the window (0.1 s,
            doubling, at most 5 s).
        max_crashes: more crashes than this within ``crash_window`` seconds,
            over all workers, is a crash loop: the pool stops and raises.
        crash_window: see ``max_crashes``.
        liveness_timeout: a worker that answers none of the supervisor's
            checks for this many seconds (stopped with SIGSTOP, or its event
            loop blocked) is killed with SIGKILL, which takes its socket out
            of the port's group at once, and restarted like a crashed one
            (it counts towards ``max_crashes``). The supervisor checks every
            ``liveness_timeout / 8`` seconds, so a worker that stops
            answering is killed between ``liveness_timeout`` and
            ``1.125 * liveness_timeout`` seconds later; each check also
            refreshes its counters. ``None`` turns the checks off.
        sockets: a :class:`WorkerSockets`: the supervisor binds each
            worker's sockets itself, in worker order, before any worker
            starts, and holds them until the pool has stopped; a worker
            serves ``worker.sockets``, and one restarted gets the same ones
            (so a steering program's socket indices stay right, and what
            reaches a dead worker's socket waits for its successor). None:
            each worker binds ``worker.port`` itself.
        handle_signals: stop gracefully on SIGINT/SIGTERM (forwarding the
            signal to every worker; a second one kills them at once) and
            report the summed counters on SIGUSR1.
        on_signal: called with the signal on SIGINT/SIGTERM (default: log it).
        on_stats: called with the summed counters on SIGUSR1 (default: log
            them at INFO on the ``trioudp`` logger).
        task_status: reports the :class:`WorkerPool` once every worker serves.

    Returns:
        The workers' counters summed, once all have stopped (after a signal,
        :meth:`WorkerPool.shutdown`, or a worker that returned on its own
        with exit status 0, which stops the others).

    Raises:
        WorkerStartFailed: a worker ended before it served (its own error,
            a :class:`BindError` say, is on its stderr).
        WorkerCrashLoop: workers crashed more than ``max_crashes`` times in
            ``crash_window`` seconds.
        ValueError: ``target`` is not a module-level function or a
            ``"module:function"`` name, or ``workers`` is negative.

    Resource handling:
        No worker outlives this call. Cancelling it, or an error, sends each
        worker SIGTERM (and SIGCONT, for a stopped one) and kills any still
        running ``grace`` seconds later; if the supervisor itself is killed,
        the workers see their control pipe close and stop (on Linux the
        kernel first continues a stopped one). A worker whose event loop is
        blocked then stops once it runs again.

    Counting:
        The summed counters include what an ended worker counted up to its
        last report: all of it after a graceful stop, or when its main
        function returned or raised (its final report); after SIGKILL or a
        crash that ends the process at once (``os._exit``, a signal), what
        it counted since its last liveness check (at most
        ``liveness_timeout / 8`` seconds) is lost. Datagrams waiting in a
        killed worker's receive buffer are lost uncounted; the kernel drops
        of its sockets are read just before the supervisor kills it.

    Example::

        # app.py
        async def handler(datagram: trioudp.Datagram) -> None:
            await datagram.reply(datagram.data)

        async def main(worker: trioudp.Worker) -> None:
            async with trio.open_nursery() as nursery:
                server = await nursery.start(
                    functools.partial(
                        trioudp.serve_udp, handler, worker.port, reuse_port=True
                    )
                )
                worker.serving(server)

        if __name__ == "__main__":
            trio.run(functools.partial(trioudp.run_workers, main, 4, port=9999))
    """
    spec = target_spec(target)
    check_port(port)
    check_settings(workers, grace, liveness_timeout, sockets)
    pool = WorkerPool(
        spec,
        workers or default_workers(),
        port=port,
        args=args,
        grace=grace,
        budget=CrashBudget(restart_backoff, max_crashes, crash_window),
        liveness_timeout=liveness_timeout,
        sockets=sockets,
    )
    return await pool._run(
        (on_signal or _log_signal) if handle_signals else None,
        on_stats or _log_stats,
        task_status,
    )
