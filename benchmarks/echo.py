"""trioudp's echo server against other stacks, side by side, in one run.

Each cell starts a fresh server pinned to CPU 0, drives it from a closed-loop
C load generator (benchmarks/loadgen.c, sendmmsg/recvmmsg) pinned to CPU 1,
and reads the reply rate and latency. Ratios are to trio_naive in the same
round; each cell is the median of --repeat rounds. The C echo server is the
ceiling: the generator drives it several times faster than any Python
server, so it is not what limits them.

Run:  python benchmarks/echo.py            (about 2 minutes)
      python benchmarks/echo.py --chart benchmarks/echo.png --repeat 3

Needs a C compiler (cc); uvloop and matplotlib come with ``pip install '.[bench]'``.
Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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
        "trioudp": [python, "-m", "trioudp", "echo"],  # a Responder
        "trioudp_async": [*reference, "trioudp_async"],
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
) -> dict[str, float]:
    port = free_port()
    server = subprocess.Popen(
        pinned(0, [*command, "--port", str(port)]), stdout=subprocess.DEVNULL
    )
    try:
        wait_until_echoing(port)
        window, size = SCENARIOS[scenario]
        output = subprocess.run(
            pinned(1, loadgen_command(loadgen, port, window, size, duration)),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        result: dict[str, float] = json.loads(output)
        return result
    finally:
        server.terminate()
        server.wait(timeout=10)


def chart(table: dict[str, dict[str, float]], names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(table)
    figure, axes = plt.subplots(1, len(scenarios), figsize=(4 * len(scenarios), 3.6))
    for axis, scenario in zip(axes, scenarios, strict=True):
        ratios = [table[scenario][name] for name in names]
        colors = [
            "#d62728" if name.startswith("trioudp") else "#7f7f7f" for name in names
        ]
        axis.barh(names, ratios, color=colors)
        axis.set_title(f"{scenario}: replies/s vs trio_naive")
        axis.axvline(1.0, color="black", linewidth=0.8)
        axis.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def harness_ratios(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Replies/s over trio_naive's, per scenario and server, from the JSON
    that ``shared/bench/run.py --json`` writes (each cell already the median
    of its rounds).

    Example:
        >>> cell = lambda server, pps: {"server": server, "scenario": "latency",
        ...                             "result": {"rate_pps": pps}}
        >>> harness_ratios({"cells": [cell("trio_naive", 10.0), cell("c", 15.0)]})
        {'latency': {'trio_naive': 1.0, 'c': 1.5}}
    """
    rates: dict[str, dict[str, float]] = {}
    for cell in report["cells"]:
        rates.setdefault(cell["scenario"], {})[cell["server"]] = cell["result"][
            "rate_pps"
        ]
    return {
        scenario: {name: rate / row["trio_naive"] for name, rate in row.items()}
        for scenario, row in rates.items()
    }


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
        "--chart", type=Path, help="write a PNG chart of the ratios here"
    )
    parser.add_argument(
        "--from-harness",
        type=Path,
        metavar="JSON",
        help="draw --chart from the shared harness's --json output instead of running",
    )
    parser.add_argument(
        "--build-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "trioudp-benchmarks",
    )
    args = parser.parse_args()
    if args.from_harness:
        table = harness_ratios(json.loads(args.from_harness.read_text()))
        names = sorted(
            {name for row in table.values() for name in row},
            key=lambda name: -table["throughput"].get(name, 0.0),
        )
        chart(table, names, args.chart or Path("echo.png"))
        return
    binaries = build(args.build_dir)
    commands = servers(args.python, binaries["echo_c"])
    if args.only:
        commands = {name: commands[name] for name in args.only.split(",")}
    scenarios = args.scenarios.split(",")
    rates: dict[str, dict[str, list[float]]] = {
        s: {n: [] for n in commands} for s in scenarios
    }
    p50: dict[str, dict[str, list[float]]] = {
        s: {n: [] for n in commands} for s in scenarios
    }
    for round_number in range(args.repeat):
        for scenario in scenarios:
            for name, command in commands.items():
                print(
                    f"round {round_number + 1}/{args.repeat} {scenario:>10} {name} ...",
                    file=sys.stderr,
                )
                result = run_cell(command, binaries["loadgen"], scenario, args.duration)
                rates[scenario][name].append(result["rate_pps"])
                p50[scenario][name].append(result["p50_us"])
    ratios: dict[str, dict[str, float]] = {}
    print("| scenario | server | replies/s | x trio_naive | p50 us |")
    print("|---|---|--:|--:|--:|")
    for scenario in scenarios:
        baseline = statistics.median(rates[scenario].get("trio_naive") or [1.0])
        ratios[scenario] = {}
        for name in commands:
            rate = statistics.median(rates[scenario][name])
            ratios[scenario][name] = rate / baseline
            print(
                f"| {scenario} | {name} | {rate:,.0f} | {rate / baseline:.2f} | {statistics.median(p50[scenario][name]):,.0f} |"
            )
    if args.chart:
        chart(ratios, list(commands), args.chart)
        print(f"chart written to {args.chart}", file=sys.stderr)


if __name__ == "__main__":
    main()
