"""``trioudp bench``: a closed-loop request/reply load against an echo server.

It measures the round trip through :class:`UDPClient` (matched requests), so
it is a client benchmark as much as a server one; for server capacity use the
C load generator in ``benchmarks/``.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import attrs
import trio

from .._backoff import Backoff
from .._client import open_udp_client
from .._errors import RequestTimeout
from ._argtypes import destination_port, number

if TYPE_CHECKING:
    import argparse

__all__ = ["BenchResult", "add_bench_parser", "run_bench"]

_ID = 8  # bytes of sequence number that match replies to requests
MAX_SIZE = 65_507  # the largest UDP payload over IPv4
MAX_CONCURRENCY = 100_000


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
) -> BenchResult:
    """Keep ``concurrency`` requests of ``size`` bytes in flight for ``duration`` s.

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

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(keep_one_in_flight)
        elapsed = trio.current_time() - start
        return BenchResult(
            sent=client.stats.sent,
            replies=len(latencies),
            lost=lost,
            seconds=elapsed,
            latencies=tuple(latencies),
        )


async def bench_command(args: argparse.Namespace) -> int:
    """``trioudp bench``: print the rate and latency of a request/reply load."""
    result = await run_bench(
        args.host,
        args.port,
        concurrency=args.concurrency,
        size=args.size,
        duration=args.duration,
        lost_after=args.lost_after,
    )
    print(f"requests sent   {result.sent}")
    print(f"replies         {result.replies}")
    print(f"lost            {result.lost}")
    print(f"rate            {result.rate:,.0f} replies/s")
    for label, fraction in (("p50", 0.5), ("p99", 0.99)):
        print(f"latency {label}     {result.percentile(fraction) * 1e6:,.0f} us")
    return 0 if result.replies else 1


def add_bench_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Add the ``bench`` subcommand to the CLI's subparsers."""
    bench = commands.add_parser(
        "bench",
        help="Measure request/reply rate and latency against an echo server.",
        description="Closed-loop load: keep --concurrency requests in flight against"
        " an echo server (e.g. 'trioudp echo') for --duration seconds.",
    )
    bench.add_argument(
        "--host", default="127.0.0.1", help="echo server address (default 127.0.0.1)"
    )
    bench.add_argument(
        "--port",
        type=destination_port,
        default=12345,
        help="echo server port (default 12345)",
    )
    bench.add_argument(
        "--concurrency",
        type=number(int, minimum=1, maximum=MAX_CONCURRENCY),
        default=16,
        help=f"requests in flight, 1..{MAX_CONCURRENCY} (default 16)",
    )
    bench.add_argument(
        "--size",
        type=number(int, minimum=_ID, maximum=MAX_SIZE),
        default=64,
        help=f"bytes per request, {_ID}..{MAX_SIZE} (default 64)",
    )
    bench.add_argument(
        "--duration",
        type=number(float, above=0),
        default=2.0,
        help="seconds to run (default 2)",
    )
    bench.add_argument(
        "--lost-after",
        type=number(float, above=0),
        default=0.2,
        help="seconds before a request counts as lost (default 0.2)",
    )
    bench.set_defaults(func=bench_command)
