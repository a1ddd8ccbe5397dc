"""Datagrams per second through trioudp's VirtualNetwork and trio's private FakeNet.

The same raw trio.socket echo workload runs on both, alternating, in one
process, under ``MockClock(autojump_threshold=0)`` as tests run it: a
closed-loop client (``--window 1``: send, wait for the echo, send again; a
larger window keeps that many datagrams in flight) against an echo task. The
VirtualNetwork keeps its trace on (the default), and the ratio of medians is
printed, with the trace's memory per event.

Run:  python benchmarks/virtual_network.py
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time
from typing import TYPE_CHECKING

import trio
import trio.testing
from trio.testing._fake_net import FakeNet

from trioudp.testing import VirtualNetwork

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


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


def run(fn: Callable[..., Awaitable[float]], *args: object) -> float:
    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datagrams", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--window", type=int, default=1)
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


if __name__ == "__main__":
    main()
