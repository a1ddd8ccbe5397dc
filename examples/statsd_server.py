"""A StatsD server: counters (with sample rates), gauges (absolute and +/-
deltas), timers and sets over UDP; every --flush-interval seconds one JSON
object on stdout with keys counters, gauges, timers (count, min, max, mean,
p50, p90, p99), sets (distinct members), malformed and dropped.

Ctrl-C (SIGINT) or SIGTERM stops it gracefully, after a last flush.
Run:  python examples/statsd_server.py [--host 127.0.0.1] [--port 8125] [--flush-interval 10]
Try:  echo "hits:1|c" | nc -u -w1 127.0.0.1 8125
"""

import argparse
import functools
import json
import signal

import trio
from _output import LineWriter, open_output
from _statsd import Aggregator

import trioudp

# Metrics come in floods from busy applications; a StatsD server never
# replies (factor 1: it could not reflect anything).
PROTECTION = {
    "rate_limit": trioudp.RateLimit(
        rate=10_000, burst=20_000, exempt=["127.0.0.0/8", "::1/128"]
    ),
    "amplification_factor": 1,
}


def flush(metrics: Aggregator, out: LineWriter) -> None:
    # Only queued: while stdout is not read, flushes are dropped (counted)
    # and the server goes on counting.
    out.line(json.dumps(metrics.flush()))


async def flush_every(interval: float, metrics: Aggregator, out: LineWriter) -> None:
    while True:
        await trio.sleep(interval)
        flush(metrics, out)


async def main(host: str, port: int, interval: float) -> None:
    metrics = Aggregator()

    def receive(datagram: trioudp.Datagram) -> None:
        metrics.add_untrusted(datagram.data)  # counted, never answered

    async with open_output() as (out, err):
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                server = await nursery.start(
                    functools.partial(
                        trioudp.serve_udp,
                        trioudp.Responder(receive),
                        port,
                        host=host,
                        **PROTECTION,
                    )
                )
                nursery.start_soon(flush_every, interval, metrics, out)
                err.line(f"statsd server on {host}:{server.port}")
                async for _ in signals:
                    await server.shutdown(grace=1.0)
                    flush(metrics, out)
                    await out.aclose()
                    if out.dropped:
                        err.line(f"{out.dropped} flushes dropped: stdout not read")
                    err.line(f"stopped: {server.stats.handled} datagrams")
                    nursery.cancel_scope.cancel()
                    break


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    parser.add_argument("--port", type=int, default=8125, help="default 8125")
    parser.add_argument(
        "--flush-interval", type=float, default=10.0, help="seconds (default 10)"
    )
    args = parser.parse_args()
    trio.run(main, args.host, args.port, args.flush_interval)
