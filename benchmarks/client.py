"""trioudp's client against a naive trio.socket loop, side by side, in one run.

The server is the C echo server (benchmarks/echo_c.c) pinned to CPU 0: it
answers several times faster than any Python client asks, so the client is
what is measured. The clients run in this process, pinned to CPU 1:

- ``trio_naive``: a connected ``trio.socket``; ``await send`` then
  ``await recv``, one request at a time.
- ``trio_naive_deadline``: the same loop with a ``trio.fail_after(1)``
  around each request (a request has a deadline too: the fair peer).
- ``request``: ``UDPClient.request`` one at a time (retransmission timer,
  reply accounting and all).
- ``request xN``: N tasks sharing one ``UDPClient``, replies matched to
  requests by a 4-byte id (``match=lambda data: data[:4]``).

Run:  python benchmarks/client.py            (about 20 seconds)
      python benchmarks/client.py --duration 5 --repeat 3

Needs a C compiler (cc). Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import operator
import os
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
from _results import add_json_option, write_json
from echo import build, free_port, pinned, wait_until_echoing

import trioudp

PAYLOAD = 64


async def naive(
    port: int, seconds: float, latencies: list[float], *, deadline: bool = False
) -> int:
    """A connected trio.socket's send then recv; with ``deadline``, inside
    a ``trio.fail_after`` as each request has (the fair peer)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.connect(("127.0.0.1", port))
        payload = bytes(PAYLOAD)
        done = 0
        end = time.perf_counter() + seconds
        while (start := time.perf_counter()) < end:
            with trio.fail_after(1) if deadline else contextlib.nullcontext():
                await sock.send(payload)
                await sock.recv(2048)
            latencies.append(time.perf_counter() - start)
            done += 1
        return done


async def requests(
    port: int, seconds: float, latencies: list[float], tasks: int
) -> int:
    done = 0
    end = time.perf_counter() + seconds

    async def ask(client: trioudp.UDPClient, task: int) -> None:
        nonlocal done
        sequence = 0
        while (start := time.perf_counter()) < end:
            payload = (task << 20 | sequence).to_bytes(4, "big").ljust(PAYLOAD, b".")
            await client.request(payload)
            latencies.append(time.perf_counter() - start)
            sequence = (sequence + 1) % (1 << 20)
            done += 1

    match = operator.itemgetter(slice(0, 4)) if tasks > 1 else None
    async with (
        trioudp.open_udp_client("127.0.0.1", port, match=match) as client,
        trio.open_nursery() as nursery,
    ):
        for task in range(tasks):
            nursery.start_soon(ask, client, task)
    return done


Client = Callable[[int, float, list[float]], Awaitable[int]]


def clients(concurrency: list[int]) -> dict[str, Client]:
    table: dict[str, Client] = {
        "trio_naive": naive,
        "trio_naive_deadline": functools.partial(naive, deadline=True),
        "request": lambda port, seconds, latencies: requests(
            port, seconds, latencies, 1
        ),
    }
    for tasks in concurrency:
        table[f"request x{tasks}"] = lambda port, seconds, latencies, tasks=tasks: (
            requests(port, seconds, latencies, tasks)
        )
    return table


def measure(client: Client, port: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    done = trio.run(client, port, seconds, latencies)
    latencies.sort()
    return {
        "rate": done / seconds,
        "p50_us": latencies[len(latencies) // 2] * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per cell")
    parser.add_argument("--repeat", type=int, default=1, help="rounds (median kept)")
    parser.add_argument(
        "--concurrency",
        default="8,64",
        help="comma-separated task counts for the shared-client cells",
    )
    parser.add_argument(
        "--build-dir", type=Path, default=Path(tempfile.gettempdir()) / "trioudp-bench"
    )
    add_json_option(parser)
    args = parser.parse_args()
    concurrency = [int(n) for n in args.concurrency.split(",") if n]

    echo_c = build(args.build_dir)["echo_c"]
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})
    port = free_port()
    server = subprocess.Popen(
        pinned(0, [str(echo_c), "--port", str(port)]), stdout=subprocess.DEVNULL
    )
    try:
        wait_until_echoing(port)
        rounds: dict[str, list[dict[str, float]]] = {}
        for _ in range(args.repeat):
            for name, client in clients(concurrency).items():
                measure(client, port, min(0.2, args.duration))  # warm-up
                rounds.setdefault(name, []).append(measure(client, port, args.duration))
    finally:
        server.terminate()
        server.wait(timeout=10)

    results = {
        name: min(cells, key=lambda cell: abs(cell["rate"] - median_rate(cells)))
        for name, cells in rounds.items()
    }
    baseline = results["trio_naive"]["rate"]
    print("| client | requests/s | x trio_naive | p50 us | p99 us |")
    print("|---|--:|--:|--:|--:|")
    for name, cell in results.items():
        print(
            f"| {name} | {cell['rate']:,.0f} | {cell['rate'] / baseline:.2f}"
            f" | {cell['p50_us']:,.0f} | {cell['p99_us']:,.0f} |"
        )
    settings = {"duration_s": args.duration, "repeat": args.repeat}
    rows = [{"client": name, **cell} for name, cell in results.items()]
    write_json(args.json, {"settings": settings, "clients": rows})


def median_rate(cells: list[dict[str, float]]) -> float:
    return statistics.median(cell["rate"] for cell in cells)


if __name__ == "__main__":
    main()
