"""Datagrams per second through trioudp's VirtualNetwork and trio's private FakeNet.

The same raw trio.socket echo workload (a client keeps WINDOW datagrams in
flight against an echo task) runs on both, alternating, in one process, and
the ratio is printed. Run:  python benchmarks/virtual_network.py
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time

import trio
from trio.testing._fake_net import FakeNet

from trioudp.testing import VirtualNetwork

WINDOW = 16


async def echo_workload(count: int) -> float:
    """Echo ``count`` datagrams; returns datagrams (both ways) per second."""
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
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo)
        for _ in range(WINDOW):
            await client.sendto(payload, address)
        for sent in range(WINDOW, count + WINDOW):
            await client.recvfrom(2048)
            if sent < count:
                await client.sendto(payload, address)
        nursery.cancel_scope.cancel()
    elapsed = time.perf_counter() - started
    server.close()
    client.close()
    return 2 * count / elapsed


async def on_virtual_network(count: int) -> float:
    with VirtualNetwork(record=False).install():
        return await echo_workload(count)


async def on_fake_net(count: int) -> float:
    FakeNet().enable()
    return await echo_workload(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datagrams", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"VirtualNetwork": [], "FakeNet": []}
    for _ in range(args.rounds):
        rates["VirtualNetwork"].append(trio.run(on_virtual_network, args.datagrams))
        rates["FakeNet"].append(trio.run(on_fake_net, args.datagrams))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for name, value in medians.items():
        print(f"{name:<15} {value:>12,.0f} datagrams/s (median of {args.rounds})")
    print(
        f"VirtualNetwork / FakeNet = {medians['VirtualNetwork'] / medians['FakeNet']:.2f}"
    )


if __name__ == "__main__":
    main()
