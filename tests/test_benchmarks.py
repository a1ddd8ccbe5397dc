"""The benchmark scripts keep working: each runs here on a small workload."""

import re

from .conftest import ROOT, run_python

BENCHMARKS = ROOT / "benchmarks"


def run(name, *args):
    return run_python(str(BENCHMARKS / name), *args)


def test_flood_reconciles_every_datagram():
    out = run("flood.py", "--datagrams", "20000", "--senders", "2")
    assert "still answering       True" in out
    assert re.search(
        r"unaccounted \(sent - received - kernel drops\)\s+0$", out, re.MULTILINE
    )
    assert re.search(r"unaccounted \(received - outcomes\)\s+0$", out, re.MULTILINE)


def test_memory_reports_bytes_per_handler():
    out = run("memory.py", "--handlers", "200")
    assert "RSS with 200 handlers in flight" in out
    assert re.search(r"bytes per in-flight handler\s+[\d,]+", out)


def test_virtual_network_versus_fakenet():
    out = run("virtual_network.py", "--datagrams", "2000", "--rounds", "1")
    assert re.search(r"VirtualNetwork / FakeNet = \d+\.\d\d", out)
    assert re.search(r"\(trace off\) +[\d,]+ datagrams/s", out)
    assert re.search(r"trace memory per event: \d+ B \([\d,]+ events kept\)", out)


def test_echo_benchmark_runs_side_by_side(tmp_path):
    out = run(
        "echo.py",
        "--only",
        "c,trio_naive,trioudp",
        "--scenarios",
        "throughput",
        "--duration",
        "0.5",
        "--build-dir",
        str(tmp_path),
    )
    rows = {
        line.split("|")[2].strip(): line
        for line in out.splitlines()
        if line.startswith("| throughput")
    }
    assert set(rows) == {"c", "trio_naive", "trioudp"}
    assert "| 1.00 |" in rows["trio_naive"]


def test_client_benchmark_runs_side_by_side(tmp_path):
    out = run(
        "client.py",
        "--duration",
        "0.3",
        "--concurrency",
        "8",
        "--build-dir",
        str(tmp_path),
    )
    rates = {
        line.split("|")[1].strip(): float(line.split("|")[2].replace(",", ""))
        for line in out.splitlines()
        if line.startswith("| ") and not line.startswith("| client")
    }
    assert set(rates) == {"trio_naive", "request", "request x8"}
    assert all(rate > 0 for rate in rates.values())


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


def test_harness_ratios_are_relative_to_trio_naive():
    import doctest
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_echo", BENCHMARKS / "echo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    failures, tried = doctest.testmod(module, verbose=False)
    assert tried
    assert not failures
