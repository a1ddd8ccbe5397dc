"""``trioudp bench``: a closed-loop request/reply load against an echo server.

It measures the round trip through :class:`UDPClient` (matched requests), so
it is a client benchmark as much as a server one; for server capacity use the
C load generator in ``benchmarks/``. It prints its progress each second (on
stderr), and Ctrl-C ends the run early with the result so far.
"""

from __future__ import annotations

import itertools
import math
import signal
from typing import TYPE_CHECKING

import attrs
import trio

from .._backoff import Backoff
from .._client_open import open_udp_client
from .._errors import RequestTimeout
from ._argtypes import DEFAULT_HOST, DEFAULT_PORT, destination_port, host, number
from ._console import say, warn
from ._output import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

__all__ = ["BenchResult", "add_bench_parser", "run_bench"]

_ID = 8  # bytes of sequence number that match replies to requests
MAX_SIZE = 65_507  # the largest UDP payload over IPv4
MAX_CONCURRENCY = 100_000
#: Seconds between two progress reports.
PROGRESS_INTERVAL = 1.0


@attrs.frozen(kw_only=True)
class BenchResult:
    """What :func:`run_bench` measured.

    Example:
        >>> BenchResult(sent=1, replies=1, lost=0, seconds=1.0, latencies=(0.001,)).rate
        1.0
    """

    sent: int
    replies: int
    lost: int
    seconds: float
    latencies: tuple[float, ...]

    @property
    def rate(self) -> float:
        """Replies per second."""
        return self.replies / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        """A latency percentile in seconds (nearest rank); nan with no replies."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
        return ordered[index]


async def run_bench(
    host: str,
    port: int,
    *,
    concurrency: int,
    size: int,
    duration: float,
    lost_after: float,
    progress: Callable[[float, int, int], object] | None = None,
    stop: trio.Event | None = None,
) -> BenchResult:
    """Keep ``concurrency`` requests of ``size`` bytes in flight for ``duration`` s.

    ``progress(seconds, replies, lost)`` is called every
    ``PROGRESS_INTERVAL`` seconds; once ``stop`` is set, the run ends at
    once (requests in flight then count neither as replies nor as lost) and
    the result so far is returned.

    Example::

        result = await run_bench("127.0.0.1", 12345, concurrency=8, size=64,
                                 duration=1.0, lost_after=0.2)
        print(result.rate)
    """
    if size < _ID:
        msg = f"size must be at least {_ID} bytes (the sequence number), not {size}"
        raise ValueError(msg)
    sequence = itertools.count()
    padding = bytes(size - _ID)
    latencies: list[float] = []
    lost = 0
    backoff = Backoff(initial=lost_after, jitter=0.0)
    async with open_udp_client(
        host, port, attempts=1, backoff=backoff, match=lambda data: data[:_ID]
    ) as client:
        start = trio.current_time()
        stop_at = start + duration

        async def keep_one_in_flight() -> None:
            nonlocal lost
            while trio.current_time() < stop_at:
                payload = next(sequence).to_bytes(_ID, "big") + padding
                sent_at = trio.current_time()
                try:
                    await client.request(payload)
                except RequestTimeout:
                    lost += 1
                else:
                    latencies.append(trio.current_time() - sent_at)

        async def report_progress() -> None:
            assert progress is not None
            while True:
                await trio.sleep(PROGRESS_INTERVAL)
                progress(trio.current_time() - start, len(latencies), lost)

        load = trio.CancelScope()

        async def end_on_stop() -> None:
            assert stop is not None
            await stop.wait()
            load.cancel()

        async with trio.open_nursery() as beside:
            if progress is not None:
                beside.start_soon(report_progress)
            if stop is not None:
                beside.start_soon(end_on_stop)
            with load:
                async with trio.open_nursery() as nursery:
                    for _ in range(concurrency):
                        nursery.start_soon(keep_one_in_flight)
            beside.cancel_scope.cancel()
        elapsed = trio.current_time() - start
        return BenchResult(
            sent=client.stats.sent,
            replies=len(latencies),
            lost=lost,
            seconds=elapsed,
            latencies=tuple(latencies),
        )


def _print_progress(seconds: float, replies: int, lost: int) -> None:
    warn(f"bench: {seconds:.0f} s, {replies:,} replies, {lost:,} lost")


async def _set_on_sigint(
    interrupted: trio.Event,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        task_status.started()
        async for _ in signals:
            interrupted.set()
            return  # a second Ctrl-C interrupts as usual


async def bench_command(args: argparse.Namespace) -> int:
    """``trioudp bench``: print the rate and latency of a request/reply load;
    on Ctrl-C, those of the run so far (exit code 130)."""
    interrupted = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(_set_on_sigint, interrupted)
        result = await run_bench(
            args.host,
            args.port,
            concurrency=args.concurrency,
            size=args.size,
            duration=args.duration,
            lost_after=args.lost_after,
            progress=_print_progress,
            stop=interrupted,
        )
        nursery.cancel_scope.cancel()
    if interrupted.is_set():
        warn(f"bench: interrupted after {result.seconds:.1f} s; the result so far:")
    say(f"requests sent   {result.sent}")
    say(f"replies         {result.replies}")
    say(f"lost            {result.lost}")
    say(f"rate            {result.rate:,.0f} replies/s")
    for label, fraction in (("p50", 0.5), ("p99", 0.99)):
        say(f"latency {label}     {result.percentile(fraction) * 1e6:,.0f} us")
    if interrupted.is_set():
        return EXIT_INTERRUPTED
    return EXIT_OK if result.replies else EXIT_FAILURE


def add_bench_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Add the ``bench`` subcommand to the CLI's subparsers."""
    bench = commands.add_parser(
        "bench",
        help="Measure request/reply rate and latency against an echo server.",
        description="Closed-loop load: keep --concurrency requests in flight against"
        " an echo server (e.g. 'trioudp echo') for --duration seconds. Prints"
        " its progress each second on stderr; Ctrl-C ends it early and prints"
        " the result so far (exit code 130).",
    )
    bench.add_argument(
        "--host",
        type=host,
        default=DEFAULT_HOST,
        metavar="ADDRESS",
        help=f"echo server address or name, without a port (default {DEFAULT_HOST})",
    )
    bench.add_argument(
        "--port",
        type=destination_port,
        default=DEFAULT_PORT,
        help=f"echo server port (default {DEFAULT_PORT})",
    )
    bench.add_argument(
        "--concurrency",
        type=number(int, minimum=1, maximum=MAX_CONCURRENCY),
        default=16,
        metavar="N",
        help=f"requests in flight, 1..{MAX_CONCURRENCY} (default 16)",
    )
    bench.add_argument(
        "--size",
        type=number(int, minimum=_ID, maximum=MAX_SIZE),
        default=64,
        metavar="BYTES",
        help=f"bytes per request, {_ID}..{MAX_SIZE} (default 64)",
    )
    bench.add_argument(
        "--duration",
        type=number(float, above=0),
        default=2.0,
        metavar="SECONDS",
        help="seconds to run (default 2)",
    )
    bench.add_argument(
        "--lost-after",
        type=number(float, above=0),
        default=0.2,
        metavar="SECONDS",
        help="seconds before a request counts as lost (default 0.2)",
    )
    bench.set_defaults(func=bench_command)
