"""Datagrams per second through trioudp's VirtualNetwork and trio's private FakeNet.

The same raw trio.socket echo workload runs on both, alternating, in one
process, under ``MockClock(autojump_threshold=0)`` as tests run it: a
closed-loop client (``--window 1``: send, wait for the echo, send again; a
larger window keeps that many datagrams in flight) against an echo task. The
VirtualNetwork keeps its trace on (the default); it also runs with the trace
off. The ratio of medians is printed, then the trace's memory per event.

Run:  python benchmarks/virtual_network.py
"""

from __future__ import annotations

import argparse
import gc
import socket
import statistics
import time
import tracemalloc
from typing import TYPE_CHECKING, TypeVar

import trio
import trio.testing
from _results import add_json_option, write_json
from trio.testing._fake_net import FakeNet

from trioudp.testing import VirtualNetwork

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

T = TypeVar("T")


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


async def on_virtual_network(count: int, window: int, record: bool) -> float:
    with VirtualNetwork(record=record).install():
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datagrams", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--window", type=int, default=1)
    add_json_option(parser)
    args = parser.parse_args()
    n, window = args.datagrams, args.window
    rates: dict[str, list[float]] = {
        "VirtualNetwork": [],
        "(trace off)": [],
        "FakeNet": [],
    }
    for _ in range(args.rounds):
        rates["VirtualNetwork"].append(run(on_virtual_network, n, window, True))
        rates["(trace off)"].append(run(on_virtual_network, n, window, False))
        rates["FakeNet"].append(run(on_fake_net, n, window))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(f"echo, window {window}, MockClock(autojump_threshold=0)")
    for name, value in medians.items():
        print(f"{name:<15} {value:>12,.0f} datagrams/s (median of {args.rounds})")
    print(
        f"VirtualNetwork / FakeNet = {medians['VirtualNetwork'] / medians['FakeNet']:.2f}"
    )
    per_event, events = trace_bytes_per_event(min(n, 20_000))
    print(f"trace memory per event: {per_event:.0f} B ({events:,} events kept)")
    settings = {"datagrams": n, "rounds": args.rounds, "window": window}
    figures = {
        "datagrams_per_cpu_second": {k: round(v) for k, v in medians.items()},
        "trace_bytes_per_event": round(per_event),
        "trace_events": events,
    }
    write_json(args.json, {"settings": settings, "virtual_network": figures})


if __name__ == "__main__":
    main()
