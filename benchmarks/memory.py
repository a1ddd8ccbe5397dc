"""Memory cost of a trioudp server: RSS when idle, and bytes per in-flight handler.

Run:  python benchmarks/memory.py [--handlers 10000]
Real sockets on 127.0.0.1; each handler waits (on an Event) until all are in flight.
"""

from __future__ import annotations

import argparse
import functools
import gc
import socket
from typing import TYPE_CHECKING

import trio
import trio.testing
from _proc import rss_kib
from _results import add_json_option, write_json

import trioudp

if TYPE_CHECKING:
    from pathlib import Path


async def measure(json_path: Path | None, handlers: int) -> None:
    release = trio.Event()

    async def waiting(datagram: trioudp.Datagram) -> None:
        await release.wait()
        await datagram.reply(b"done")

    gc.collect()
    before_server = rss_kib()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                trioudp.serve_udp,
                waiting,
                0,
                host="127.0.0.1",
                max_in_flight=handlers,
                queue_size=0,
                receive_buffer=8 * 1024 * 1024,
            )
        )
        await trio.testing.wait_all_tasks_blocked()
        idle = rss_kib()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
            for i in range(handlers):
                sender.sendto(b"%08d" % i, ("127.0.0.1", server.port))
                if i % 100 == 99:
                    await trio.testing.wait_all_tasks_blocked()
            await trio.testing.wait_all_tasks_blocked()
            busy = rss_kib()
            in_flight = server.stats.in_flight
            release.set()
            await trio.testing.wait_all_tasks_blocked()
        await server.shutdown()
    print(f"RSS of the process before the server   {before_server / 1024:.1f} MiB")
    print(
        f"RSS with an idle server                {idle / 1024:.1f} MiB (+{idle - before_server} KiB)"
    )
    print(f"RSS with {in_flight:,} handlers in flight    {busy / 1024:.1f} MiB")
    per_handler = (busy - idle) * 1024 / max(in_flight, 1)
    print(f"bytes per in-flight handler            {per_handler:,.0f}")
    figures = {
        "rss_kib_before_server": before_server,
        "rss_kib_idle_server": idle,
        "handlers_in_flight": in_flight,
        "rss_kib_busy": busy,
        "bytes_per_handler": round(per_handler),
    }
    write_json(json_path, {"memory": figures})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--handlers", type=int, default=10_000)
    add_json_option(parser)
    args = parser.parse_args()
    trio.run(measure, args.json, args.handlers)


if __name__ == "__main__":
    main()
