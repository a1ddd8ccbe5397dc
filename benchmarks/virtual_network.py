"""Datagrams per second through trioudp's VirtualNetwork and trio's private FakeNet.

The same raw trio.socket echo workload runs on both, alternating, in one
process, under ``MockClock(autojump_threshold=0)`` as tests run it: a
closed-loop client (``--window 1``: send, wait for the echo, send again; a
larger window keeps that many datagrams in flight) against an echo task. The
VirtualNetwork keeps its trace on (the default); it also runs with the trace
off, and with every link at 1 ms of latency and up to 1 ms of jitter, each
datagram then waiting for the clock to jump to its own arrival time. The
ratios of medians are printed, then the trace's memory per event, then what
``write_pcap`` costs for a long trace: in a fresh process that records
``--pcap-datagrams`` datagrams (a million by default), the CPU seconds the
write takes and how far it raises the process's peak RSS.

Run:  python benchmarks/virtual_network.py
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import TYPE_CHECKING, Any, TypeVar

import trio
import trio.testing
from _proc import rss_kib
from _results import add_json_option, write_json
from trio.testing._fake_net import FakeNet

from trioudp.testing import VirtualNetwork

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

T = TypeVar("T")

#: The delayed case: latency and jitter of every link, in seconds.
LATENCY = JITTER = 0.001


async def echo_workload(count: int, window: int) -> float:
    """Echo ``count`` datagrams; returns datagrams (both ways) per CPU second
    (process time: a busy machine skews it less than wall time)."""
    server = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await server.bind(("127.0.0.1", 0))
    await client.bind(("127.0.0.1", 0))
    address = server.getsockname()

    async def echo() -> None:
        while True:
            data, peer = await server.recvfrom(2048)
            await server.sendto(data, peer)

    payload = b"x" * 64
    started = time.process_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo)
        for _ in range(window):
            await client.sendto(payload, address)
        for sent in range(window, count + window):
            await client.recvfrom(2048)
            if sent < count:
                await client.sendto(payload, address)
        nursery.cancel_scope.cancel()
    elapsed = time.process_time() - started
    server.close()
    client.close()
    return 2 * count / elapsed


async def on_virtual_network(
    count: int, window: int, record: bool, delay: float = 0.0
) -> float:
    with VirtualNetwork(record=record, latency=delay, jitter=delay).install():
        return await echo_workload(count, window)


async def on_fake_net(count: int, window: int) -> float:
    FakeNet().enable()
    return await echo_workload(count, window)


def run(fn: Callable[..., Awaitable[T]], *args: object) -> T:
    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


async def kept_network(count: int, record: bool) -> VirtualNetwork:
    net = VirtualNetwork(record=record, trace_limit=None)
    with net.install():
        await echo_workload(count, 1)
    return net


def trace_bytes_per_event(count: int) -> tuple[float, int]:
    """Memory a trace holds per event (tracemalloc): what a network that
    recorded ``count`` round trips keeps beyond one that did not, divided by
    its events. Payloads (64 bytes here) are shared by the events of one
    datagram, so about half of one is in each figure."""
    kept = {}
    for record in (False, True):
        gc.collect()
        tracemalloc.start()
        net = run(kept_network, count, record)
        gc.collect()
        kept[record] = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        events = len(net.trace)
        del net
    return (kept[True] - kept[False]) / events, events


# ---- write_pcap of a long trace, in a fresh process ------------------------------


async def one_way(count: int) -> VirtualNetwork:
    """A trace of ``count`` datagrams, each sent and received (a few lost,
    a few duplicated), kept whole."""
    net = VirtualNetwork(seed=1, trace_limit=None, loss=0.01, duplicate=0.01)
    with net.install():
        a = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await a.bind(("127.0.0.1", 0))
        await b.bind(("127.0.0.1", 0))
        destination = b.getsockname()
        payload = b"x" * 64
        for _ in range(count):
            await a.sendto(payload, destination)
            while b.is_readable():
                await b.recv(100)
    return net


def _peak_rss_kib() -> int:
    with open("/proc/self/status") as lines:
        for line in lines:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    msg = "no VmHWM line in /proc/self/status"
    raise RuntimeError(msg)


def pcap_child(count: int) -> dict[str, Any]:
    """In this (fresh) process: record ``count`` datagrams, then write them."""
    net = run(one_way, count)
    gc.collect()
    before = rss_kib()
    # Linux: "5" resets the peak RSS (VmHWM) to the current RSS.
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "trace.pcapng")
        cpu, wall = time.process_time(), time.perf_counter()
        packets = net.write_pcap(path)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        size = os.path.getsize(path)
    peak = _peak_rss_kib()
    return {
        "datagrams": count,
        "events": len(net.trace),
        "packets": packets,
        "file_mib": round(size / 2**20, 1),
        "cpu_seconds": round(cpu, 2),
        "wall_seconds": round(wall, 2),
        "rss_before_mib": round(before / 1024, 1),
        "peak_rss_growth_mib": round((peak - before) / 1024, 1),
    }


def pcap_in_fresh_process(count: int) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, "--pcap-child", str(count)],
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, Any] = json.loads(result.stdout)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datagrams", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--window", type=int, default=1)
    parser.add_argument("--pcap-datagrams", type=int, default=1_000_000)
    parser.add_argument("--pcap-child", type=int, help=argparse.SUPPRESS)
    add_json_option(parser)
    args = parser.parse_args()
    if args.pcap_child is not None:
        print(json.dumps(pcap_child(args.pcap_child)))
        return
    n, window = args.datagrams, args.window
    delayed = f"{LATENCY * 1000:g} ms latency, {JITTER * 1000:g} ms jitter"
    rates: dict[str, list[float]] = {
        "VirtualNetwork": [],
        "(trace off)": [],
        delayed: [],
        "FakeNet": [],
    }
    for _ in range(args.rounds):
        rates["VirtualNetwork"].append(run(on_virtual_network, n, window, True))
        rates["(trace off)"].append(run(on_virtual_network, n, window, False))
        rates[delayed].append(run(on_virtual_network, n, window, True, LATENCY))
        rates["FakeNet"].append(run(on_fake_net, n, window))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(f"echo, window {window}, MockClock(autojump_threshold=0)")
    for name, value in medians.items():
        print(f"{name:<15} {value:>12,.0f} datagrams/s (median of {args.rounds})")
    print(
        f"VirtualNetwork / FakeNet = {medians['VirtualNetwork'] / medians['FakeNet']:.2f}"
    )
    print(
        f"{delayed} / zero delay = {medians[delayed] / medians['VirtualNetwork']:.2f}"
    )
    per_event, events = trace_bytes_per_event(min(n, 20_000))
    print(f"trace memory per event: {per_event:.0f} B ({events:,} events kept)")
    pcap = pcap_in_fresh_process(args.pcap_datagrams)
    print(
        f"write_pcap of {pcap['datagrams']:,} datagrams ({pcap['events']:,} events):"
        f" {pcap['cpu_seconds']:.2f} CPU s, peak RSS +{pcap['peak_rss_growth_mib']:.1f} MiB"
    )
    settings = {
        "datagrams": n,
        "rounds": args.rounds,
        "window": window,
        "latency": LATENCY,
        "jitter": JITTER,
    }
    figures = {
        "datagrams_per_cpu_second": {k: round(v) for k, v in medians.items()},
        "trace_bytes_per_event": round(per_event),
        "trace_events": events,
        "pcap": pcap,
    }
    write_json(args.json, {"settings": settings, "virtual_network": figures})


if __name__ == "__main__":
    main()
