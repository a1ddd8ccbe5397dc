"""How long the rest of a program waits while a server's handler is slow and flooded.

Starts a program (in a child process) that runs two servers and a timer: a
server whose Responder spends --respond-ms of CPU on every datagram, a quick
echo server on another socket (the probe), and a task that sleeps 10 ms over
and over and notes how late each wake-up is. A load generator (another child
process, bounded in count and time) floods the slow server at --rate
datagrams a second; meanwhile this process asks the probe server --probes
times, one at a time, and at the end sends the program SIGTERM. It reports:

    timer lateness    how late the timer woke, during the flood
    probe round trip  the other socket's answer time, during the flood
    SIGTERM delay     from kill() to the program's signal receiver running

Run:  python benchmarks/fairness.py [--respond-ms 5 --rate 20000]
Traffic goes to 127.0.0.1 only; the flood is bounded in count and time.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time

import trio
from _results import add_json_option, write_json

import trioudp

TICK = 0.010


def _spin(seconds: float) -> None:
    """Spend ``seconds`` of CPU, as a handler that computes would."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def serve(respond_seconds: float, batch_time: float | None) -> None:
    def slow(datagram: trioudp.Datagram) -> bytes:
        _spin(respond_seconds)
        return datagram.data

    def quick(datagram: trioudp.Datagram) -> bytes:
        return datagram.data

    ticks: list[tuple[float, float, int]] = []
    jitter = random.Random(1)

    async def ticker() -> None:
        while True:
            deadline = trio.current_time() + TICK + jitter.uniform(0, TICK / 2)
            await trio.sleep_until(deadline)
            late = trio.current_time() - deadline
            ticks.append((time.monotonic(), late, flooded.stats.handled))

    # Older trioudp has no batch_time: pass it only when asked.
    settings = {} if batch_time is None else {"batch_time": batch_time}
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            flooded = await nursery.start(
                functools.partial(
                    trioudp.serve_udp,
                    trioudp.Responder(slow),
                    0,
                    host="127.0.0.1",
                    **settings,
                )
            )
            probed = await nursery.start(
                functools.partial(
                    trioudp.serve_udp, trioudp.Responder(quick), 0, host="127.0.0.1"
                )
            )
            nursery.start_soon(ticker)
            print(flooded.port, probed.port, flush=True)
            async for _ in signals:
                handled_at = time.monotonic()
                report = {"signal_handled_at": handled_at, "ticks": ticks}
                print(json.dumps(report), flush=True)
                nursery.cancel_scope.cancel()


def flood(port: int, rate: int, seconds: float) -> None:
    """Send ``rate`` datagrams a second to ``port`` for ``seconds`` (at most
    ``rate * seconds`` datagrams), in bursts of one millisecond's worth."""
    burst = max(1, rate // 1000)
    total = int(rate * seconds)
    sent = 0
    started = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        while sent < total and time.monotonic() - started < seconds + 1:
            for _ in range(burst):
                with contextlib.suppress(OSError):  # ENOBUFS, EAGAIN: not sent
                    sock.sendto(b"flood", ("127.0.0.1", port))
                sent += 1
            pause = started + sent / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)


def probe(port: int, count: int) -> list[float]:
    """Round trips of ``count`` probes sent one at a time (seconds; a probe
    unanswered for 5 s counts as 5 s)."""
    round_trips = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5.0)
        for i in range(count):
            payload = b"probe %d" % i
            sent_at = time.monotonic()
            sock.sendto(payload, ("127.0.0.1", port))
            try:
                while sock.recv(100) != payload:
                    pass
            except TimeoutError:
                pass
            round_trips.append(time.monotonic() - sent_at)
            time.sleep(0.02)
    return round_trips


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(
            ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1
        ),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def measure(args: argparse.Namespace, batch_time: str) -> dict[str, object]:
    """One run of the program under the flood, with ``batch_time`` (a
    number, or "default" for the library's own)."""
    serve_argv = [sys.executable, __file__, "--serve", "--respond-ms"]
    serve_argv.append(str(args.respond_ms))
    if batch_time != "default":
        serve_argv += ["--batch-time", batch_time]
    program = subprocess.Popen(serve_argv, stdout=subprocess.PIPE, text=True)
    assert program.stdout is not None
    flooded_port, probed_port = map(int, program.stdout.readline().split())
    # Longer than the probes can take (each at most about a second); the
    # load generator is stopped when they are done.
    flood_seconds = 2.0 + args.probes * 1.5
    loadgen = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--flood",
            str(flooded_port),
            "--rate",
            str(args.rate),
            "--seconds",
            str(flood_seconds),
        ]
    )
    try:
        time.sleep(0.5)  # the kernel's queue fills
        measured_from = time.monotonic()
        round_trips = probe(probed_port, args.probes)
        killed_at = time.monotonic()
        program.send_signal(signal.SIGTERM)
        report = json.loads(program.stdout.readline())
        program.wait(timeout=30)
    finally:
        loadgen.kill()
        loadgen.wait()
        if program.poll() is None:
            program.kill()
            program.wait()
    ticks = [tick for tick in report["ticks"] if measured_from <= tick[0] <= killed_at]
    lateness = [late for _, late, _ in ticks]
    (first_at, _, first_handled), (last_at, _, last_handled) = ticks[0], ticks[-1]
    return {
        "batch_time": batch_time,
        "timer_lateness": _ms(lateness),
        "timer_wakeups": len(lateness),
        "probe_round_trip": _ms(round_trips),
        "sigterm_delay_ms": round((report["signal_handled_at"] - killed_at) * 1000, 1),
        "slow_handled_per_s": round(
            (last_handled - first_handled) / max(last_at - first_at, 1e-9)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--respond-ms", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=20_000)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument(
        "--batch-times",
        default="default,inf",
        help="serve_udp batch_time of each run, comma-separated: seconds, inf"
        " (batches bounded by count alone), or default (the library's)",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch-time", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--flood", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    add_json_option(parser)
    args = parser.parse_args()
    if args.serve:
        trio.run(serve, args.respond_ms / 1000, args.batch_time)
        return
    if args.flood is not None:
        flood(args.flood, args.rate, args.seconds)
        return
    runs = [measure(args, batch_time) for batch_time in args.batch_times.split(",")]
    print(
        f"{'batch_time':>10} | timer late p50, max | probe p50, max | SIGTERM | handled/s"
    )
    for run in runs:
        late, probed = run["timer_lateness"], run["probe_round_trip"]
        print(
            f"{run['batch_time']:>10} | {late['p50_ms']:7.1f}, {late['max_ms']:7.1f} ms"  # type: ignore[index]
            f" | {probed['p50_ms']:6.1f}, {probed['max_ms']:6.1f} ms"  # type: ignore[index]
            f" | {run['sigterm_delay_ms']:6.1f} ms | {run['slow_handled_per_s']}"
        )
    settings = {
        "respond_ms": args.respond_ms,
        "rate": args.rate,
        "probes": args.probes,
        "tick_ms": [TICK * 1000, TICK * 1500],
    }
    write_json(args.json, {"settings": settings, "fairness": runs})


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
