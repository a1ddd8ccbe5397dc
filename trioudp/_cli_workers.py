"""``trioudp serve|echo --workers N``: the command line over :func:`run_workers`.

The supervisor prints the banner once every worker serves, prints the summed
counters on SIGUSR1 and on exit, and says which signal stopped it. Each
worker runs the same command line (``--workers`` aside) through
:func:`cli_worker`, binding the shared port with ``SO_REUSEPORT``.
"""

from __future__ import annotations

import functools
import logging
import sys
from typing import TYPE_CHECKING

import trio

from ._errors import TrioUDPError
from ._workers import run_workers
from ._workers._policy import default_workers

if TYPE_CHECKING:
    import argparse
    import signal

    from ._server import ServerStats
    from ._workers import Worker

__all__ = ["cli_worker", "stats_line", "supervise"]

#: What each worker process runs.
WORKER_TARGET = "trioudp._cli_workers:cli_worker"


def stats_line(total: ServerStats, workers: int) -> str:
    """One line of the workers' summed counters.

    Example:
        >>> from trioudp import ServerStats
        >>> stats_line(ServerStats(received=3, handled=3, replied=3), 2)
        'totals of 2 workers: received 3, handled 3, replied 3, dropped 0, handler errors 0'
    """
    return (
        f"totals of {workers} workers: received {total.received},"
        f" handled {total.handled}, replied {total.replied},"
        f" dropped {total.dropped}, handler errors {total.handler_errors}"
    )


async def supervise(args: argparse.Namespace, banner: str, grace: float) -> int:
    """Run ``args.workers`` workers of the command in ``args``; returns the exit code."""

    count = args.workers or default_workers()
    stopped_by: list[int] = []

    def on_signal(signum: signal.Signals) -> None:
        stopped_by.append(signum)
        print(f"Received {signum.name}, shutting down...", file=sys.stderr, flush=True)

    def on_stats(total: ServerStats) -> None:
        print(stats_line(total, count), file=sys.stderr, flush=True)

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
            )
        )
        from ._cli import served_addresses

        hosts = ["0.0.0.0", "::"] if args.host is None else [args.host]
        address = served_addresses((host, pool.port) for host in hosts)
        print(
            banner.format(address=address, host=args.host, port=pool.port), flush=True
        )
        pids = " ".join(map(str, pool.pids))
        share = "workers share" if pool.workers != 1 else "worker shares"
        print(
            f"{pool.workers} {share} the port (pids {pids});"
            " SIGUSR1 prints their counters",
            flush=True,
        )
    on_stats(await pool.stats())
    # As one process: 128 + the signal after a graceful stop, else 0.
    return 128 + stopped_by[0] if stopped_by else 0


async def cli_worker(worker: Worker) -> int:
    """One worker: the same command line, serving ``worker.port`` with
    ``SO_REUSEPORT``; returns the command's exit code."""
    from ._cli import EXIT_FAILURE, build_parser

    args = build_parser().parse_args(worker.args)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format=f"%(levelname)s %(name)s (worker {worker.index}): %(message)s",
    )
    args.workers = 1
    args.port = worker.port
    args.worker = worker
    try:
        code: int = await args.func(args)
    except (TrioUDPError, OSError) as exc:
        print(f"trioudp {args.command}: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_FAILURE
    return code
