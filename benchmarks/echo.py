"""trioudp's echo server against other stacks, side by side, in one run.

Each cell starts a fresh server pinned to CPU 0, drives it from a closed-loop
C load generator (benchmarks/loadgen.c, sendmmsg/recvmmsg) pinned to CPU 1,
and reads the reply rate and latency. Ratios are to trio_naive in the same
round; each cell is the median-rate one of --repeat rounds. The C echo
server is the ceiling: the generator drives it several times faster than
any Python server, so it is not what limits them.

Run:  python benchmarks/echo.py            (about 2 minutes)
      python benchmarks/echo.py --repeat 3 --json echo.json
      python benchmarks/figures.py --record echo=echo.json   (tables, chart)

Needs a C compiler (cc); uvloop comes with ``pip install '.[bench]'``.
Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _proc import cpu_seconds
from _results import add_json_option, write_json

HERE = Path(__file__).resolve().parent

SCENARIOS = {  # name: (window, size)
    "throughput": (64, 64),
    "latency": (1, 64),
    "large": (16, 8000),
}


def build(build_dir: Path) -> dict[str, Path]:
    """Compile the C programs (when missing or stale); returns their paths."""
    build_dir.mkdir(parents=True, exist_ok=True)
    binaries = {}
    for name in ("loadgen", "echo_c"):
        source, binary = HERE / f"{name}.c", build_dir / name
        if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
            subprocess.run(["cc", "-O2", "-o", str(binary), str(source)], check=True)
        binaries[name] = binary
    return binaries


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pinned(cpu: int, command: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(cpu), *command]
    return command


def wait_until_echoing(port: int, seconds: float = 10.0) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.1)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            probe.sendto(b"ready?", ("127.0.0.1", port))
            try:
                if probe.recv(100) == b"ready?":
                    return
            except OSError:
                continue
    msg = f"the server on port {port} never echoed"
    raise RuntimeError(msg)


def servers(python: str, echo_c: Path) -> dict[str, list[str]]:
    reference = [python, str(HERE / "servers.py")]
    return {
        "c": [str(echo_c)],
        "stdlib": [*reference, "stdlib"],
        "uvloop": [*reference, "uvloop"],
        "asyncio": [*reference, "asyncio"],
        "trio_naive": [*reference, "trio_naive"],
        "trio_task": [*reference, "trio_task"],
        "anyio": [*reference, "anyio"],
        # Without protection, as every other server here (the command turns
        # the rate limit and the amplification guard on by default).
        "trioudp": [
            *(python, "-m", "trioudp", "echo", "--host", "127.0.0.1"),
            *("--rate-limit", "0", "--amplification-factor", "0"),
        ],
        "trioudp_async": [*reference, "trioudp_async"],
        # As users run it: the rate limit, amplification and loop guards on.
        "trioudp_protected": [
            *(python, "-m", "trioudp", "echo", "--host", "127.0.0.1"),
        ],
    }


def loadgen_command(
    loadgen: Path, port: int, window: int, size: int, duration: float
) -> list[str]:
    """The command line of one closed-loop load generator run."""
    return [
        str(loadgen),
        *("--port", str(port), "--window", str(window)),
        *("--size", str(size), "--duration", str(duration)),
    ]


def run_cell(
    command: list[str], loadgen: Path, scenario: str, duration: float
) -> dict[str, Any]:
    port = free_port()
    server = subprocess.Popen(
        pinned(0, [*command, "--port", str(port)]), stdout=subprocess.DEVNULL
    )
    try:
        wait_until_echoing(port)
        window, size = SCENARIOS[scenario]
        cpu = cpu_seconds(server.pid)
        output = subprocess.run(
            pinned(1, loadgen_command(loadgen, port, window, size, duration)),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        cpu = cpu_seconds(server.pid) - cpu
        result: dict[str, Any] = json.loads(output)
        if result["rate_pps"]:
            # As the shared harness reports it: the server's CPU over the
            # run, at the measured rate.
            replies = result["rate_pps"] * duration
            result["server_cpu_us_per_reply"] = round(cpu / replies * 1e6, 2)
        return result
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter for the Python servers"
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per cell")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds; each cell reports its median"
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--only", default="", help="comma-separated server names")
    parser.add_argument(
        "--build-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "trioudp-benchmarks",
    )
    add_json_option(parser)
    args = parser.parse_args()
    binaries = build(args.build_dir)
    commands = servers(args.python, binaries["echo_c"])
    if args.only:
        commands = {name: commands[name] for name in args.only.split(",")}
    scenarios = args.scenarios.split(",")
    rounds: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for round_number in range(args.repeat):
        for scenario in scenarios:
            for name, command in commands.items():
                print(
                    f"round {round_number + 1}/{args.repeat} {scenario:>10} {name} ...",
                    file=sys.stderr,
                )
                result = run_cell(command, binaries["loadgen"], scenario, args.duration)
                rounds.setdefault((scenario, name), []).append(result)
    cells = [
        {
            "server": name,
            "scenario": scenario,
            "command": " ".join(commands[name]),
            "result": median_round(results),
            "all_rates_pps": [r["rate_pps"] for r in results],
        }
        for (scenario, name), results in rounds.items()
    ]
    print("| scenario | server | replies/s | x trio_naive | p50 us | CPU us/reply |")
    print("|---|---|--:|--:|--:|--:|")
    for scenario in scenarios:
        row = {c["server"]: c["result"] for c in cells if c["scenario"] == scenario}
        baseline = row["trio_naive"]["rate_pps"] if "trio_naive" in row else 1.0
        for name, result in row.items():
            rate = result["rate_pps"]
            print(
                f"| {scenario} | {name} | {rate:,.0f} | {rate / baseline:.2f}"
                f" | {result['p50_us']:,.0f}"
                f" | {result.get('server_cpu_us_per_reply', '-')} |"
            )
    settings = {"duration_s": args.duration, "repeat": args.repeat}
    write_json(args.json, {"settings": settings, "cells": cells})


def median_round(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The round whose rate is the median of all rounds' (the lower middle
    one of an even number), as the shared harness reports a cell.

    Example:
        >>> median_round([{"rate_pps": 3}, {"rate_pps": 1}, {"rate_pps": 2}])
        {'rate_pps': 2}
    """
    ordered = sorted(results, key=lambda result: result["rate_pps"])
    return ordered[(len(ordered) - 1) // 2]


if __name__ == "__main__":
    main()
