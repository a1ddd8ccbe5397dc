"""Every performance table and chart of trioudp's documentation, from one file.

benchmarks/results/results.json holds the figures of each benchmark: what
its ``--json`` option writes, with the command, the machine and the date.
This script renders them where the documentation shows them, between
``figures:`` markers, so that no page copies a number by hand:

- docs/explanation/performance.rst: the echo summary, trioudp against
  uvloop, the client, memory, the flood, fairness under a flood, the virtual
  network, the workers, QUIC against aioquic;
- benchmarks/README.md: the full echo table and every other benchmark's;
- benchmarks/echo.svg: the echo chart (the README and the performance page
  show it).

Run:
  python benchmarks/figures.py                  render every table and chart
  python benchmarks/figures.py --check          exit 1 if one is stale
  python benchmarks/figures.py --measure client,flood
        run those benchmarks with the settings below (--measure all: every
        one; echo alone takes about 6 minutes), keep their figures, render
  python benchmarks/figures.py --record echo=FILE
        keep FILE (a script's --json output; for echo, the shared harness's
        --json output has the same form) as those figures, render

The test suite checks that the committed tables and chart are what this
script renders from the committed results.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from html import escape
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "results.json"
CHART = HERE / "echo.svg"
PERFORMANCE = ROOT / "docs" / "explanation" / "performance.rst"
BENCHMARKS = HERE / "README.md"

#: The documented settings of each benchmark (``--measure``).
MEASURE = {
    "echo": ["echo.py", "--repeat", "3", "--duration", "3"],
    "client": ["client.py", "--repeat", "3", "--duration", "3"],
    "flood": ["flood.py"],
    "fairness": ["fairness.py"],
    "memory": ["memory.py"],
    "virtual_network": ["virtual_network.py"],
    "workers": ["workers.py", "--flows", "4", "--duration", "2"],
    "quic": ["quic.py", "--repeat", "5", "--duration", "2"],
}
#: Echo servers as the tables name them, in the tables' order.
SERVERS = {
    "trioudp": "trioudp",
    "trioudp_async": "trioudp async",
    "trioudp_protected": "trioudp protected",
    "trio_naive": "trio_naive",
    "trio_task": "trio_task",
    "anyio": "anyio",
    "asyncio": "asyncio",
    "uvloop": "uvloop",
    "stdlib": "stdlib loop",
    "c": "C (mmsg)",
}
SCENARIOS = {
    "throughput": "throughput (64 in flight, 64 B)",
    "large": "large (16 in flight, 8000 B)",
    "latency": "latency (one at a time, 64 B)",
}
#: QUIC stacks as the tables name them, in the tables' order.
QUIC_STACKS = {
    "trioudp": "trioudp",
    "aioquic": "aioquic on asyncio",
    "aioquic_uvloop": "aioquic on uvloop",
}
QUIC_SCENARIOS = {
    "handshakes": "handshakes per second",
    "upload": "1 MB upload (one stream)",
    "download": "1 MB download (one stream)",
    "requests": "64 B requests per second (a stream each)",
}
#: What one operation of each QUIC scenario is (the CPU table's rows).
QUIC_OPERATIONS = {
    "handshakes": "a handshake",
    "upload": "a 1 MB upload",
    "download": "a 1 MB download",
    "requests": "a request",
}
#: trioudp's servers in the tables against uvloop: the Responder, the
#: ``async def`` form, and ``trioudp echo`` with its default protection.
_TRIOUDP_FORMS = ("trioudp", "trioudp_async", "trioudp_protected")
#: Options whose values are local paths or setup, not the measurement.
_SETUP_OPTIONS = {"--json", "--python", "--server", "--build-dir"}


# ---- tables ---------------------------------------------------------------------


def table(style: str, header: list[str], rows: list[list[str]]) -> str:
    """A table as Markdown (``"md"``) or as an reST list-table (``"rst"``);
    the first column left-aligned, the others right-aligned in Markdown.

    Example:
        >>> print(table("md", ["a", "b"], [["x", "1"]]), end="")
        | a | b |
        |---|--:|
        | x | 1 |
    """
    if style == "md":
        lines = ["| " + " | ".join(header) + " |"]
        lines.append("|---|" + "--:|" * (len(header) - 1))
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines) + "\n"
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        lines.append(f"   * - {row[0]}")
        lines += [f"     - {cell}" for cell in row[1:]]
    return "\n".join(lines) + "\n"


def code(style: str, text: str) -> str:
    """``text`` shown as it is."""
    if style == "md":
        return f"`{text}`"
    return f"``{text}``"


def provenance(style: str, section: dict[str, Any]) -> str:
    """When, where and with which command a benchmark's figures were made.

    Example:
        >>> meta = {"argv": ["client.py", "--json", "x"], "time": "2026-12-05T10:00:00",
        ...         "host": "Linux-6.1-x86_64", "cpus": 2, "python": "3.11.7"}
        >>> provenance("md", {"meta": meta})
        'Measured 2026-12-05 (`python benchmarks/client.py`; Linux-6.1-x86_64, 2 CPUs, Python 3.11.7).'
    """
    meta = section["meta"]
    argv = list(meta["argv"])
    kept = [argv[0]]
    arguments = iter(argv[1:])
    for argument in arguments:
        if argument in _SETUP_OPTIONS:
            next(arguments, None)
        else:
            kept.append(argument)
    if (HERE / kept[0]).exists():
        command = code(style, " ".join(["python", f"benchmarks/{kept[0]}", *kept[1:]]))
    else:
        # The shared harness (outside the repository) takes echo.py's options.
        same = " ".join(["python", "benchmarks/echo.py", *kept[1:]])
        command = f"the project's benchmark harness; from a clone: {code(style, same)}"
    python = meta.get("python", "")
    machine = [meta["host"], f"{meta['cpus']} CPUs"]
    if python[:1].isdigit():
        machine.append(f"Python {python}")
    return f"Measured {meta['time'][:10]} ({command}; {', '.join(machine)})."


def _echo_cells(section: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    cells: dict[str, dict[str, dict[str, Any]]] = {}
    for cell in section["cells"]:
        cells.setdefault(cell["scenario"], {})[cell["server"]] = cell["result"]
    return cells


def ratios(section: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Replies per second over trio_naive's, per scenario and server.

    Example:
        >>> cell = lambda server, pps: {"server": server, "scenario": "latency",
        ...                             "result": {"rate_pps": pps}}
        >>> ratios({"cells": [cell("trio_naive", 10.0), cell("c", 15.0)]})
        {'latency': {'trio_naive': 1.0, 'c': 1.5}}
    """
    return {
        scenario: {
            name: result["rate_pps"] / row["trio_naive"]["rate_pps"]
            for name, result in row.items()
        }
        for scenario, row in _echo_cells(section).items()
    }


def _servers(section: dict[str, Any]) -> list[str]:
    present = {cell["server"] for cell in section["cells"]}
    return [name for name in SERVERS if name in present] + sorted(
        present - set(SERVERS)
    )


def echo_summary(style: str, section: dict[str, Any]) -> str:
    """Per server: its ratios to trio_naive, and its one-at-a-time latency."""
    cells, ratio = _echo_cells(section), ratios(section)
    loaded = [s for s in ("throughput", "large") if s in ratio]
    header = ["server", *(f"{SCENARIOS[s]}, x trio_naive" for s in loaded)]
    if "latency" in cells:
        header.append("latency p50, one at a time")
    rows = [
        [
            SERVERS.get(name, name),
            *(f"{ratio[s][name]:.2f}" for s in loaded),
            *(
                [f"{cells['latency'][name]['p50_us']:.0f} us"]
                if "latency" in cells
                else []
            ),
        ]
        for name in _servers(section)
    ]
    return provenance(style, section) + "\n\n" + table(style, header, rows)


def cpu_per_reply(result: dict[str, Any]) -> float | None:
    """The server's CPU microseconds per reply, where the run measured it.

    Example:
        >>> cpu_per_reply({"rate_pps": 10.0, "server_cpu_us_per_reply": 7.5})
        7.5
        >>> cpu_per_reply({"rate_pps": 10.0}) is None
        True
    """
    value = result.get("server_cpu_us_per_reply")
    return None if value is None else float(value)


def echo_against(style: str, section: dict[str, Any], other: str) -> str:
    """trioudp's handler forms against ``other``, per scenario: replies per
    second, and the server's CPU per reply where it was measured."""
    ratio = ratios(section)
    cells = _echo_cells(section)
    forms = [n for n in _TRIOUDP_FORMS if n in ratio["throughput"]]
    rows = [
        [
            f"replies/s, {SCENARIOS.get(s, s)}",
            *(f"{ratio[s][n] / ratio[s][other]:.2f}" for n in forms),
        ]
        for s in ratio
    ]
    for s, row in cells.items():
        theirs = cpu_per_reply(row[other])
        ours = [cpu_per_reply(row[n]) for n in forms]
        if theirs and None not in ours:
            rows.append(
                [
                    f"CPU per reply, {SCENARIOS.get(s, s)}",
                    *(f"{mine / theirs:.2f}" for mine in ours if mine is not None),
                ]
            )
    header = [f"over {other}'s", *(SERVERS[n] for n in forms)]
    return table(style, header, rows)


def echo_full(style: str, section: dict[str, Any]) -> str:
    """Every cell: replies/s, ratio, latency percentiles and loss."""
    rows = []
    ratio = ratios(section)
    for scenario, row in _echo_cells(section).items():
        for name, result in sorted(row.items(), key=lambda item: -item[1]["rate_pps"]):
            loss = result["lost"] / result["sent"] if result["sent"] else 0.0
            cpu = cpu_per_reply(result)
            rows.append(
                [
                    scenario,
                    f"**{name}**" if name.startswith("trioudp") else name,
                    f"{result['rate_pps']:,.0f}",
                    f"{ratio[scenario][name]:.2f}",
                    f"{result['p50_us']:,.0f}",
                    f"{result['p99_us']:,.0f}",
                    f"{loss:.2%}",
                    "-" if cpu is None else f"{cpu:.2f}",
                ]
            )
    header = ["scenario", "server", "replies/s", "x trio_naive", "p50 us", "p99 us"]
    header += ["loss", "CPU us/reply"]
    return provenance(style, section) + "\n\n" + table(style, header, rows)


def client(style: str, section: dict[str, Any]) -> str:
    rows = section["clients"]
    base = next(row["rate"] for row in rows if row["client"] == "trio_naive")
    body = [
        [
            code(style, row["client"]),
            f"{row['rate']:,.0f}",
            f"{row['rate'] / base:.2f}",
            f"{row['p50_us']:,.0f}",
            f"{row['p99_us']:,.0f}",
        ]
        for row in rows
    ]
    header = ["client", "requests/s", "x trio_naive", "p50 us", "p99 us"]
    return provenance(style, section) + "\n\n" + table(style, header, body)


def memory(style: str, results: dict[str, Any]) -> str:
    """Memory: an idle ``trioudp echo``, a server, each waiting handler."""
    mem = results["memory"]["memory"]
    echo = results["workers"]["workers"][0]
    rows = [
        [
            f"an idle {code(style, 'trioudp echo')} process (RSS)",
            f"{echo['rss_kib_idle'][0] / 1024:.1f} MiB",
        ],
        [
            "a server added to a process",
            f"{mem['rss_kib_idle_server'] - mem['rss_kib_before_server']} KiB",
        ],
        [
            f"each handler waiting ({mem['handlers_in_flight']:,} at once)",
            f"{mem['bytes_per_handler']:,} bytes",
        ],
    ]
    return (
        provenance(style, results["memory"])
        + " The first row is the workers benchmark's single process: "
        + provenance(style, results["workers"])
        + "\n\n"
        + table(style, ["what", "memory"], rows)
    )


def flood(style: str, section: dict[str, Any]) -> str:
    figures, settings = section["flood"], section["settings"]
    rows = [
        [
            "datagrams sent",
            f"{figures['sent']:,} in {figures['seconds']} s"
            f" from {settings['senders']} sockets",
        ],
        ["received by the server", f"{figures['received']:,}"],
        ["dropped by the kernel (receive buffer full)", f"{figures['kernel_drops']:,}"],
        ["handled", f"{figures['handled']:,}"],
        *(
            [reason, f"{count:,}"]
            for reason, count in sorted(figures["dropped"].items())
        ),
        ["handler errors", f"{figures['handler_errors']:,}"],
        ["still answering afterwards", "yes" if figures["answering"] else "no"],
        [
            "RSS before, after",
            f"{figures['rss_kib_before'] / 1024:.1f} MiB,"
            f" {figures['rss_kib_after'] / 1024:.1f} MiB",
        ],
        [
            "unaccounted: sent - received - kernel drops",
            f"{figures['unaccounted_sent']}",
        ],
        [
            "unaccounted: received - outcomes",
            f"{figures['unaccounted_received']}",
        ],
    ]
    intro = (
        f"A handler that takes {settings['handler_seconds'] * 1000:.0f} ms,"
        f" max_in_flight {settings['max_in_flight']},"
        f" queue_size {settings['queue_size']},"
        f" {settings['size']}-byte datagrams."
    )
    return (
        provenance(style, section)
        + " "
        + intro
        + "\n\n"
        + table(style, ["", "count"], rows)
    )


def fairness_table(style: str, runs: list[dict[str, Any]]) -> str:
    """Timer, probe and signal delays under a flood, one row per ``batch_time``.

    Example:
        >>> run = {"batch_time": "inf", "sigterm_delay_ms": 600.0,
        ...        "timer_lateness": {"p50_ms": 300.0, "max_ms": 640.0},
        ...        "probe_round_trip": {"p50_ms": 620.0, "max_ms": 950.0},
        ...        "slow_handled_per_s": 198}
        >>> fairness_table("md", [run]).splitlines()[-1]
        '| inf (count alone) | 300.0, 640.0 | 620.0, 950.0 | 600.0 | 198 |'
    """
    names = {"default": "2 ms (the default)", "inf": "inf (count alone)"}
    rows = []
    for run in runs:
        late, probe = run["timer_lateness"], run["probe_round_trip"]
        rows.append(
            [
                names.get(run["batch_time"], run["batch_time"]),
                f"{late['p50_ms']:.1f}, {late['max_ms']:.1f}",
                f"{probe['p50_ms']:.1f}, {probe['max_ms']:.1f}",
                f"{run['sigterm_delay_ms']:.1f}",
                f"{run['slow_handled_per_s']:,}",
            ]
        )
    header = ["batch_time", "timer late, ms (p50, max)"]
    header += ["probe round trip, ms (p50, max)", "SIGTERM delay, ms", "handled/s"]
    return table(style, header, rows)


def fairness(style: str, section: dict[str, Any]) -> str:
    settings = section["settings"]
    intro = (
        f"A Responder that spends {settings['respond_ms']:g} ms of CPU per datagram,"
        f" flooded with {settings['rate']:,} datagrams a second; a timer of"
        f" {settings['tick_ms'][0]:g} to {settings['tick_ms'][1]:g} ms, another"
        f" server asked {settings['probes']} times, one SIGTERM."
    )
    return (
        provenance(style, section)
        + " "
        + intro
        + "\n\n"
        + fairness_table(style, section["fairness"])
    )


def virtual_network(style: str, section: dict[str, Any]) -> str:
    figures, settings = section["virtual_network"], section["settings"]
    rates = figures["datagrams_per_cpu_second"]
    zero = rates["VirtualNetwork"]
    names = {
        "VirtualNetwork": "VirtualNetwork, trace on",
        "(trace off)": "VirtualNetwork, trace off",
        "FakeNet": "trio's FakeNet",
    }
    delayed = [name for name in rates if name not in names]
    rows = [
        [
            names.get(name, f"VirtualNetwork, {name}"),
            f"{rate:,}",
            f"{rate / rates['FakeNet']:.2f}",
            f"{rate / zero:.2f}" if name in delayed else "-",
        ]
        for name, rate in rates.items()
    ]
    intro = (
        f"A closed-loop echo of {settings['datagrams']:,} datagrams, window"
        f" {settings['window']}, on Trio's MockClock(autojump_threshold=0); the"
        f" median of {settings['rounds']} rounds of CPU time. The trace keeps"
        f" {figures['trace_bytes_per_event']} bytes an event (64-byte payloads)."
    )
    pcap = figures.get("pcap")
    if pcap is not None:
        intro += (
            f" :meth:`~trioudp.testing.VirtualNetwork.write_pcap` of a trace of"
            f" {pcap['datagrams']:,} datagrams ({pcap['events']:,} events,"
            f" a {pcap['file_mib']:g} MiB capture) took {pcap['cpu_seconds']:.2f}"
            f" CPU seconds ({pcap['wall_seconds']:.2f} s of wall-clock time) and"
            f" raised the peak RSS of its process by"
            f" {pcap['peak_rss_growth_mib']:g} MiB, to"
            f" {pcap['rss_before_mib'] + pcap['peak_rss_growth_mib']:.1f} MiB"
            " (most of it the trace the process recorded)."
        )
        if style == "md":
            intro = intro.replace(
                ":meth:`~trioudp.testing.VirtualNetwork.write_pcap`",
                "`VirtualNetwork.write_pcap`",
            )
    header = ["network", "datagrams per CPU second", "x FakeNet", "x zero delay"]
    return (
        provenance(style, section) + " " + intro + "\n\n" + table(style, header, rows)
    )


def workers(style: str, section: dict[str, Any]) -> str:
    rows = section["workers"]
    base = rows[0]["pps"]
    body = [
        [
            str(row["workers"]),
            str(row["flows"]),
            f"{row['pps']:,.0f}",
            f"{row['pps'] / base:.2f}",
            ", ".join(f"{cpu:.2f}" for cpu in row["cpu_s_per_worker"]),
            ", ".join(f"{kib / 1024:.1f}" for kib in row["rss_kib_loaded"]),
            ", ".join(f"{kib / 1024:.1f}" for kib in row["pss_kib_loaded"]),
            f"{row['rss_kib_supervisor'] / 1024:.1f}" if row["workers"] > 1 else "-",
        ]
        for row in rows
    ]
    header = ["workers", "flows", "replies/s", "x one process", "CPU s per worker"]
    header += ["RSS MiB per worker", "PSS MiB per worker", "supervisor RSS MiB"]
    return provenance(style, section) + "\n\n" + table(style, header, body)


def _quic_cells(section: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    cells: dict[str, dict[str, dict[str, Any]]] = {}
    for cell in section["cells"]:
        cells.setdefault(cell["scenario"], {})[cell["stack"]] = cell
    return cells


def quic_ratio(section: dict[str, Any], scenario: str, stack: str, other: str) -> float:
    """How many times better ``stack`` did than ``other`` in ``scenario``
    (more per second, or fewer seconds).

    Example:
        >>> cell = lambda stack, value: {"scenario": "upload", "stack": stack,
        ...                              "value": value}
        >>> section = {"settings": {"units": {"upload": ["seconds", False]}},
        ...            "cells": [cell("trioudp", 0.1), cell("aioquic", 0.2)]}
        >>> quic_ratio(section, "upload", "trioudp", "aioquic")
        2.0
    """
    row = _quic_cells(section)[scenario]
    value, base = row[stack]["value"], row[other]["value"]
    more_is_better = section["settings"]["units"][scenario][1]
    return float(value / base if more_is_better else base / value)


def _quic_value(section: dict[str, Any], scenario: str, value: float) -> str:
    if section["settings"]["units"][scenario][1]:
        return f"{value:,.0f}"
    return f"{value * 1000:,.0f} ms"


def quic(style: str, section: dict[str, Any]) -> str:
    """trioudp.quic against aioquic on asyncio and on uvloop: each
    scenario's figure, trioudp's ratios, and the CPU each side used."""
    cells = _quic_cells(section)
    stacks = [name for name in QUIC_STACKS if name in cells[next(iter(cells))]]
    others = [name for name in stacks if name != "trioudp"]
    rows = []
    for scenario, row in cells.items():
        rows.append(
            [
                QUIC_SCENARIOS.get(scenario, scenario),
                *(
                    _quic_value(section, scenario, row[name]["value"])
                    for name in stacks
                ),
                *(
                    f"{quic_ratio(section, scenario, 'trioudp', other):.2f}"
                    for other in others
                ),
            ]
        )
    header = ["", *(QUIC_STACKS[name] for name in stacks)]
    header += [f"trioudp x {QUIC_STACKS[other]}" for other in others]
    cpu_rows = [
        [
            QUIC_OPERATIONS.get(scenario, scenario),
            *(
                f"{row[name]['server_cpu_us']:,.0f} / {row[name]['client_cpu_us']:,.0f}"
                for name in stacks
            ),
        ]
        for scenario, row in cells.items()
    ]
    cpu_header = ["CPU us per operation, server / client"]
    cpu_header += [QUIC_STACKS[name] for name in stacks]
    settings = section["settings"]
    rounds = settings["repeat"]
    intro = (
        f"Each cell the median of {rounds} round{'s' if rounds != 1 else ''}"
        f" of {settings['duration_s']:g} s, the stacks interleaved."
    )
    return (
        provenance(style, section)
        + " "
        + intro
        + "\n\n"
        + table(style, header, rows)
        + "\n"
        + table(style, cpu_header, cpu_rows)
    )


# ---- the chart ------------------------------------------------------------------


def chart(section: dict[str, Any]) -> str:
    """An SVG bar chart of the echo ratios, one panel per scenario, the
    servers in the order of their throughput (written out by hand, so that
    the same results always give the same bytes)."""
    ratio = ratios(section)
    scenarios = [s for s in ("throughput", "large", "latency") if s in ratio]
    servers = sorted(_servers(section), key=lambda n: -ratio["throughput"][n])
    label, bar, gap, bar_height, top = 112, 150, 40, 18, 46
    width = len(scenarios) * (label + bar + gap) + gap // 2
    height = top + len(servers) * (bar_height + 6) + 30
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif"'
        ' font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="18" font-size="14">Echo on loopback: replies per second'
        f" over a naive trio.socket loop's ({section['meta']['time'][:10]},"
        " benchmarks/results/results.json)</text>",
    ]
    for index, scenario in enumerate(scenarios):
        left = gap // 2 + index * (label + bar + gap)
        scale = bar / max(ratio[scenario].values())
        out.append(
            f'<text x="{left + label}" y="{top - 10}">'
            f"{escape(SCENARIOS.get(scenario, scenario))}</text>"
        )
        for row, name in enumerate(servers):
            y = top + row * (bar_height + 6)
            value = ratio[scenario][name]
            length = max(1.0, value * scale)
            colour = "#d62728" if name.startswith("trioudp") else "#8c8c8c"
            out.append(
                f'<text x="{left + label - 6}" y="{y + 13}" text-anchor="end">'
                f"{escape(SERVERS.get(name, name))}</text>"
            )
            out.append(
                f'<rect x="{left + label}" y="{y}" width="{length:.1f}"'
                f' height="{bar_height}" fill="{colour}"/>'
            )
            out.append(
                f'<text x="{left + label + length + 4:.1f}" y="{y + 13}">'
                f"{value:.2f}</text>"
            )
        one = left + label + scale
        bottom = top + len(servers) * (bar_height + 6)
        out.append(
            f'<line x1="{one:.1f}" y1="{top - 4}" x2="{one:.1f}" y2="{bottom}"'
            ' stroke="black" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{one:.1f}" y="{bottom + 14}" text-anchor="middle">1</text>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ---- where they go --------------------------------------------------------------


#: How to render each marker's content from the results, in a page's markup.
_SHOWN_ON_BOTH = {
    "echo-against-uvloop": lambda style, r: echo_against(style, r["echo"], "uvloop"),
    "client": lambda style, r: client(style, r["client"]),
    "memory": memory,
    "flood": lambda style, r: flood(style, r["flood"]),
    "fairness": lambda style, r: fairness(style, r["fairness"]),
    "virtual-network": lambda style, r: virtual_network(style, r["virtual_network"]),
    "workers": lambda style, r: workers(style, r["workers"]),
    "quic": lambda style, r: quic(style, r["quic"]),
}
#: The markers of each page.
SECTIONS: dict[Path, dict[str, Any]] = {
    PERFORMANCE: {
        "echo-summary": lambda style, r: echo_summary(style, r["echo"]),
        **_SHOWN_ON_BOTH,
    },
    BENCHMARKS: {
        "echo-full": lambda style, r: echo_full(style, r["echo"]),
        **_SHOWN_ON_BOTH,
    },
}


def blocks(results: dict[str, Any]) -> dict[Path, dict[str, str]]:
    """What goes between each marker of each file."""
    return {
        path: {
            name: render("md" if path.suffix == ".md" else "rst", results)
            for name, render in sections.items()
        }
        for path, sections in SECTIONS.items()
    }


def fill(text: str, name: str, content: str, style: str) -> str:
    """``text`` with ``content`` between the begin and end markers ``name``.

    Example:
        >>> page = "a\\n<!-- figures: t -->\\nold\\n<!-- /figures: t -->\\nb\\n"
        >>> print(fill(page, "t", "new\\n", "md"), end="")
        a
        <!-- figures: t -->
        <BLANKLINE>
        new
        <BLANKLINE>
        <!-- /figures: t -->
        b
    """
    if style == "md":
        begin, end = f"<!-- figures: {name} -->\n", f"<!-- /figures: {name} -->\n"
    else:
        begin, end = f".. figures: {name}\n", f".. /figures: {name}\n"
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        msg = f"no {begin.strip()!r} ... {end.strip()!r} markers"
        raise ValueError(msg)
    return text[: start + len(begin)] + "\n" + content + "\n" + text[stop:]


def rendered(results: dict[str, Any]) -> dict[Path, str]:
    """Every rendered file's whole new text."""
    files = {CHART: chart(results["echo"])}
    for path, contents in blocks(results).items():
        text = path.read_text()
        style = "md" if path.suffix == ".md" else "rst"
        for name, content in contents.items():
            text = fill(text, name, content, style)
        files[path] = text
    return files


def stale(results: dict[str, Any] | None = None) -> list[Path]:
    """The files whose committed text is not what the results render."""
    results = results or json.loads(RESULTS.read_text())
    return [
        path
        for path, text in rendered(results).items()
        if not path.exists() or path.read_text() != text
    ]


def measure(names: list[str], results: dict[str, Any]) -> None:
    for name in names:
        with tempfile.TemporaryDirectory() as scratch:
            out = Path(scratch) / f"{name}.json"
            script, *arguments = MEASURE[name]
            command = [sys.executable, str(HERE / script), *arguments]
            print("running", " ".join(command[1:]), file=sys.stderr)
            subprocess.run([*command, "--json", str(out)], cwd=HERE, check=True)
            results[name] = json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if stale")
    parser.add_argument("--measure", metavar="NAMES", help="comma list, or all")
    parser.add_argument("--record", action="append", default=[], metavar="NAME=FILE")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text())
    if args.check:
        out_of_date = stale(results)
        for path in out_of_date:
            print(f"stale: {path.relative_to(ROOT)}", file=sys.stderr)
        sys.exit(1 if out_of_date else 0)
    if args.measure:
        names = list(MEASURE) if args.measure == "all" else args.measure.split(",")
        measure(names, results)
    for record in args.record:
        name, _, path = record.partition("=")
        results[name] = json.loads(Path(path).read_text())
    if args.measure or args.record:
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    for path, text in rendered(results).items():
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
