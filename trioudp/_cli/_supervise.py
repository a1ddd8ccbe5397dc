"""``trioudp serve|echo|quic-echo --workers N``: the supervisor's side, over
:func:`run_workers`.

The supervisor prints the banner (with the addresses the workers bound) once
every worker serves, prints the summed counters on SIGUSR1 and on exit, and
says which signal stopped it. Each worker runs the same command line
(``--workers`` aside) through ``_main.cli_worker``, binding the shared port
with ``SO_REUSEPORT``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import trio

from .._workers import run_workers
from .._workers._policy import default_workers
from ._console import close_stdout, dropped_note, say, warn
from ._output import served_addresses, stats_line

if TYPE_CHECKING:
    import argparse
    import signal
    from collections.abc import Callable

    from .._server import ServerStats
    from .._workers import WorkerSockets

__all__ = ["WORKER_TARGET", "supervise"]


#: What each worker process runs.
WORKER_TARGET = "trioudp._cli._main:cli_worker"


async def supervise(
    args: argparse.Namespace,
    banner: str,
    grace: float,
    *,
    sockets: WorkerSockets | None = None,
    after_banner: Callable[[int], object] | None = None,
) -> int:
    """Run ``args.workers`` workers of the command in ``args``; returns the
    exit code. ``sockets``: the supervisor binds the workers' sockets
    (``quic-echo``); ``after_banner(port)`` runs once the banner is out."""

    count = args.workers or default_workers()
    stopped_by: list[int] = []

    def on_signal(signum: signal.Signals) -> None:
        stopped_by.append(signum)
        warn(f"Received {signum.name}, shutting down...")

    def on_stats(total: ServerStats) -> None:
        warn(stats_line(total, count) + dropped_note())

    async with trio.open_nursery() as nursery:
        pool = await nursery.start(
            functools.partial(
                run_workers,
                WORKER_TARGET,
                count,
                port=args.port,
                args=args.argv,
                grace=grace,
                on_signal=on_signal,
                on_stats=on_stats,
                sockets=sockets,
            )
        )
        address = served_addresses(pool.addresses)
        say(banner.format(address=address, host=args.host, port=pool.port))
        pids = " ".join(map(str, pool.pids))
        share = "workers share" if pool.workers != 1 else "worker shares"
        say(
            f"{pool.workers} {share} the port (pids {pids});"
            " SIGUSR1 prints their counters"
        )
        if after_banner is not None:
            after_banner(pool.port)
    total = await pool.stats()
    await close_stdout()
    on_stats(total)
    # As one process: 128 + the signal after a graceful stop, else 0.
    return 128 + stopped_by[0] if stopped_by else 0
