"""The benchmark scripts keep working: each runs here on a small workload,
and what it writes with --json renders into the tables; the committed tables
and chart are what benchmarks/figures.py renders from the committed results."""

import copy
import doctest
import importlib.util
import json
import re

import pytest

from .conftest import ROOT, run_python

BENCHMARKS = ROOT / "benchmarks"


def run(name, *args):
    return run_python(str(BENCHMARKS / name), *args)


def load(name):
    spec = importlib.util.spec_from_file_location(
        f"bench_{name}", BENCHMARKS / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def figures():
    return load("figures")


@pytest.fixture(scope="module")
def results(figures):
    return json.loads(figures.RESULTS.read_text())


def test_committed_tables_and_chart_are_what_the_results_render(figures, results):
    stale = [str(path.relative_to(ROOT)) for path in figures.stale(results)]
    assert not stale, f"stale, run python benchmarks/figures.py: {stale}"


def test_a_number_changed_in_the_results_makes_the_pages_stale(figures, results):
    changed = copy.deepcopy(results)
    changed["echo"]["cells"][0]["result"]["rate_pps"] *= 1.5
    assert set(figures.stale(changed)) == {
        figures.CHART,
        figures.PERFORMANCE,
        figures.BENCHMARKS,
    }


def test_the_pages_show_the_figures_they_are_rendered_from(figures, results):
    """Spot checks against the results file itself, not the renderers."""
    echo = {(c["scenario"], c["server"]): c["result"] for c in results["echo"]["cells"]}
    ratio = (
        echo["throughput", "trioudp"]["rate_pps"]
        / echo["throughput", "trio_naive"]["rate_pps"]
    )
    performance = figures.PERFORMANCE.read_text()
    assert f"     - {ratio:.2f}\n" in performance
    readme = figures.BENCHMARKS.read_text()
    assert f"| {echo['throughput', 'uvloop']['rate_pps']:,.0f} |" in readme
    assert f">{ratio:.2f}</text>" in figures.CHART.read_text()
    # The front page shows the chart and cites the page; it copies no figure.
    front = (ROOT / "README.md").read_text()
    assert "benchmarks/echo.svg" in front
    assert f"{ratio:.2f}" not in front


@pytest.mark.parametrize("name", ["figures", "echo", "quic"])
def test_benchmark_helpers_doctests(name, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # their sibling modules
    failures, tried = doctest.testmod(load(name), verbose=False)
    assert tried
    assert not failures


def test_flood_reconciles_every_datagram():
    out = run("flood.py", "--datagrams", "20000", "--senders", "2")
    assert "still answering       True" in out
    assert re.search(
        r"unaccounted \(sent - received - kernel drops\)\s+0$", out, re.MULTILINE
    )
    assert re.search(r"unaccounted \(received - outcomes\)\s+0$", out, re.MULTILINE)


def test_fairness_shows_the_time_bound_at_work(tmp_path, figures):
    """On real sockets and the real clock, so only with generous bounds: with
    the default batch_time a flooded 5 ms handler delays a timer and another
    socket's probe by about one call. How far a batch bounded by count alone
    delays them depends on whether the load generator keeps the queue full
    on a loaded machine (320 ms when it does), so that is the benchmark's
    figure, not asserted here; tests/test_fastpath.py proves it exactly on
    the mock clock."""
    out = run(
        "fairness.py",
        "--probes",
        "3",
        "--rate",
        "5000",
        "--json",
        str(tmp_path / "fairness.json"),
    )
    section = json.loads((tmp_path / "fairness.json").read_text())
    bounded, by_count = section["fairness"]
    assert (bounded["batch_time"], by_count["batch_time"]) == ("default", "inf")
    assert by_count["timer_wakeups"] > 0
    assert bounded["timer_lateness"]["p50_ms"] < 100
    assert bounded["probe_round_trip"]["p50_ms"] < 100
    assert "| 2 ms (the default) |" in figures.fairness("md", section)
    assert re.search(r"^ +inf \| ", out, re.MULTILINE)


def test_memory_reports_bytes_per_handler():
    out = run("memory.py", "--handlers", "200")
    assert "RSS with 200 handlers in flight" in out
    assert re.search(r"bytes per in-flight handler\s+[\d,]+", out)


def test_virtual_network_versus_fakenet():
    out = run(
        "virtual_network.py",
        "--datagrams",
        "2000",
        "--rounds",
        "1",
        "--pcap-datagrams",
        "3000",
    )
    assert re.search(r"VirtualNetwork / FakeNet = \d+\.\d\d", out)
    assert re.search(r"\(trace off\) +[\d,]+ datagrams/s", out)
    assert re.search(r"1 ms latency, 1 ms jitter / zero delay = \d+\.\d\d", out)
    assert re.search(r"trace memory per event: \d+ B \([\d,]+ events kept\)", out)
    assert re.search(
        r"write_pcap of 3,000 datagrams \([\d,]+ events\): \d+\.\d\d CPU s,"
        r" peak RSS \+\d+\.\d MiB",
        out,
    )


def test_echo_benchmark_runs_side_by_side_and_its_json_renders(tmp_path, figures):
    out = run(
        "echo.py",
        "--only",
        "c,trio_naive,trio_task,anyio,trioudp",
        "--scenarios",
        "throughput",
        "--duration",
        "0.5",
        "--build-dir",
        str(tmp_path),
        "--json",
        str(tmp_path / "echo.json"),
    )
    rows = {
        line.split("|")[2].strip(): line
        for line in out.splitlines()
        if line.startswith("| throughput")
    }
    assert set(rows) == {"c", "trio_naive", "trio_task", "anyio", "trioudp"}
    assert "| 1.00 |" in rows["trio_naive"]
    section = json.loads((tmp_path / "echo.json").read_text())
    assert figures.ratios(section)["throughput"]["trio_naive"] == 1.0
    summary = figures.echo_summary("md", section)
    assert summary.startswith("Measured ")
    assert "`python benchmarks/echo.py --only" in summary
    assert all(
        cell["result"]["server_cpu_us_per_reply"] > 0 for cell in section["cells"]
    )
    assert "<svg" in figures.chart(section)


def test_cpu_per_reply_is_shown_against_uvloop_where_measured(figures):
    def cell(server, scenario, pps, cpu=None):
        result = {"rate_pps": pps, "p50_us": 1.0, "p99_us": 2.0, "lost": 0, "sent": 1}
        if cpu is not None:
            result["server_cpu_us_per_reply"] = cpu
        return {"server": server, "scenario": scenario, "result": result}

    meta = {"argv": ["run.py"], "time": "2026-12-05", "host": "h", "cpus": 2}
    section = {
        "meta": meta,
        "cells": [
            cell("trio_naive", "throughput", 10.0, 20.0),
            cell("uvloop", "throughput", 40.0, 4.0),
            cell("trioudp", "throughput", 44.0, 5.0),
            cell("trio_naive", "latency", 10.0),
            cell("uvloop", "latency", 10.0),
            cell("trioudp", "latency", 11.0),
        ],
    }
    rows = figures.echo_against("md", section, "uvloop").splitlines()
    assert "| replies/s, throughput (64 in flight, 64 B) | 1.10 |" in rows
    assert "| CPU per reply, throughput (64 in flight, 64 B) | 1.25 |" in rows
    # Not measured in latency: no row rather than a made-up one.
    assert not any(row.startswith("| CPU per reply, latency") for row in rows)
    full = figures.echo_full("md", section)
    assert "| throughput | **trioudp** | 44 | 4.40 | 1 | 2 | 0.00% | 5.00 |" in full
    assert "| latency | **trioudp** | 11 | 1.10 | 1 | 2 | 0.00% | - |" in full


def test_client_benchmark_runs_side_by_side(tmp_path, figures):
    out = run(
        "client.py",
        "--duration",
        "0.3",
        "--concurrency",
        "8",
        "--build-dir",
        str(tmp_path),
        "--json",
        str(tmp_path / "client.json"),
    )
    rates = {
        line.split("|")[1].strip(): float(line.split("|")[2].replace(",", ""))
        for line in out.splitlines()
        if line.startswith("| ") and not line.startswith("| client")
    }
    assert set(rates) == {"trio_naive", "trio_naive_deadline", "request", "request x8"}
    assert all(rate > 0 for rate in rates.values())
    table = figures.client("md", json.loads((tmp_path / "client.json").read_text()))
    assert "| `request x8` |" in table


def test_workers_benchmark_spreads_flows_and_reports_memory(tmp_path):
    out = run(
        "workers.py",
        "--flows",
        "4",
        "--duration",
        "0.3",
        "--build-dir",
        str(tmp_path),
    )
    rows = [line for line in out.splitlines() if re.match(r"\| [12] \| 4 \|", line)]
    assert len(rows) == 2, out
    assert "totals of 2 workers: received" in out


def test_quic_benchmark_runs_both_stacks_side_by_side_and_its_json_renders(
    tmp_path, figures
):
    out = run(
        "quic.py",
        "--duration",
        "0.3",
        "--scenarios",
        "handshakes,requests",
        "--stacks",
        "trioudp,aioquic",
        "--json",
        str(tmp_path / "quic.json"),
    )
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| ")]
    cells = {(row[1].strip(), row[2].strip()): row for row in rows[1:]}
    assert set(cells) == {
        (scenario, stack)
        for scenario in ("handshakes", "requests")
        for stack in ("trioudp", "aioquic")
    }
    assert all(float(row[3].replace(",", "")) > 0 for row in cells.values())
    assert cells["requests", "aioquic"][5].strip() == "1.00"
    section = json.loads((tmp_path / "quic.json").read_text())
    rendered = figures.quic("md", section)
    assert "`python benchmarks/quic.py --duration 0.3" in rendered
    assert "| trioudp x aioquic on asyncio |" in rendered
    ratio = figures.quic_ratio(section, "requests", "trioudp", "aioquic")
    assert f" {ratio:.2f} |" in rendered
