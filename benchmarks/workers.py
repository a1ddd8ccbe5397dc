"""Scaling with ``trioudp echo --workers N``: throughput, how the kernel spread
the load, and memory per worker.

For each worker count, a fresh ``trioudp echo --workers N`` serves 127.0.0.1
while ``--flows`` closed-loop C load generators (benchmarks/loadgen.c), each
on its own socket and so its own source port, drive it at once. SO_REUSEPORT
hashes each source address and port to one worker, so a single generator
(one flow, as the shared harness's udpload) only ever reaches one worker:
give it several flows to measure scaling. Nothing is pinned: on a 2-CPU
machine the generators share the CPUs with the workers, so the second worker
mostly buys what the generators leave over.

Run:  python benchmarks/workers.py [--workers 1,2] [--flows 4] [--duration 2]
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _proc import pss_kib, rss_kib
from _results import add_json_option, write_json
from echo import build, loadgen_command

HERE = Path(__file__).resolve().parent


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime, stime in ticks


def start_pool(workers: int) -> tuple[subprocess.Popen[str], int, list[int]]:
    """``trioudp echo`` with ``workers`` processes (1: the plain single
    process, no supervisor); returns it, its port and the serving pids."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trioudp",
            "echo",
            "--port",
            "0",
            "--workers",
            str(workers),
            # Without protection, as benchmarks/echo.py measures it.
            *("--rate-limit", "0", "--amplification-factor", "0"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    port = int(server.stdout.readline().rsplit(":", 1)[1])
    if workers == 1:
        return server, port, [server.pid]
    match = re.search(r"pids ([\d ]+)\)", server.stdout.readline())
    assert match is not None
    return server, port, [int(pid) for pid in match.group(1).split()]


def run(
    workers: int, flows: int, window: int, duration: float, loadgen: Path
) -> dict[str, object]:
    server, port, pids = start_pool(workers)
    try:
        time.sleep(0.5)  # let the workers settle before reading memory
        idle = {pid: rss_kib(pid) for pid in pids}
        cpu_before = {pid: cpu_seconds(pid) for pid in pids}
        generators = [
            subprocess.Popen(
                loadgen_command(loadgen, port, window, 64, duration),
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(flows)
        ]
        results = [
            json.loads(g.communicate(timeout=duration + 30)[0]) for g in generators
        ]
        cpu = {pid: round(cpu_seconds(pid) - cpu_before[pid], 2) for pid in pids}
        loaded = {pid: rss_kib(pid) for pid in pids}
        pss = {pid: pss_kib(pid) for pid in pids}
        supervisor_rss = rss_kib(server.pid) if workers > 1 else 0
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    return {
        "workers": workers,
        "flows": flows,
        "pps": sum(r["rate_pps"] for r in results),
        "lost": sum(r["lost"] for r in results),
        "cpu_s_per_worker": list(cpu.values()),
        "rss_kib_idle": list(idle.values()),
        "rss_kib_loaded": list(loaded.values()),
        "pss_kib_loaded": list(pss.values()),
        "rss_kib_supervisor": supervisor_rss,
        "totals": (err.strip().splitlines() or [""])[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2", help="comma list of worker counts")
    parser.add_argument("--flows", type=int, default=4, help="load generators at once")
    parser.add_argument(
        "--window", type=int, default=64, help="datagrams in flight, all flows together"
    )
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument(
        "--build-dir", default=str(Path(tempfile.gettempdir()) / "trioudp-bench")
    )
    add_json_option(parser)
    args = parser.parse_args()
    loadgen = build(Path(args.build_dir))["loadgen"]
    rows = [
        run(
            int(n),
            args.flows,
            max(1, args.window // args.flows),
            args.duration,
            loadgen,
        )
        for n in args.workers.split(",")
    ]
    base = rows[0]["pps"]
    print(
        "| workers | flows | pps | x first | lost | CPU s per worker | RSS MiB per worker (idle / loaded) | PSS MiB per worker | supervisor RSS MiB |"
    )
    print("|--:|--:|--:|--:|--:|---|---|---|--:|")
    for row in rows:
        rss = ", ".join(
            f"{idle / 1024:.1f} / {loaded / 1024:.1f}"
            for idle, loaded in zip(
                row["rss_kib_idle"], row["rss_kib_loaded"], strict=True
            )  # type: ignore[call-overload]
        )
        pss = ", ".join(f"{kib / 1024:.1f}" for kib in row["pss_kib_loaded"])  # type: ignore[attr-defined]
        print(
            f"| {row['workers']} | {row['flows']} | {row['pps']:,.0f} | {row['pps'] / base:.2f} |"  # type: ignore[operator]
            f" {row['lost']} | {row['cpu_s_per_worker']} | {rss} | {pss} | {row['rss_kib_supervisor'] / 1024:.1f} |"  # type: ignore[operator]
        )
    for row in rows:
        print(f"workers={row['workers']}: {row['totals']}")
    settings = {"window": args.window, "duration_s": args.duration}
    write_json(args.json, {"settings": settings, "workers": rows})


if __name__ == "__main__":
    main()
