"""A program a LAN station runs (``lan.Station.start``): an echo server.

``python station.py echo SETTINGS`` serves an echo with ``serve_udp``, whose
keyword arguments are the JSON object ``SETTINGS`` (``multicast`` is a
``Multicast``'s; ``"loop_guard": null`` turns the loop guard off). It prints
``{"port": P}`` once serving, serves until its stdin closes, then prints the
server's counters as JSON (and the handled datagrams' destinations).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from typing import Any

import attrs
import trio

import trioudp


async def stdin_closed() -> None:
    while True:
        await trio.lowlevel.wait_readable(0)
        if not os.read(0, 4096):
            return


async def echo(settings: dict[str, Any]) -> dict[str, Any]:
    destinations: list[str | None] = []

    def answer(datagram: trioudp.Datagram) -> bytes:
        destinations.append(getattr(datagram, "destination", None))
        return datagram.data

    if "multicast" in settings:
        settings["multicast"] = trioudp.Multicast(**settings["multicast"])
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(trioudp.serve_udp, trioudp.Responder(answer), **settings)
        )
        print(json.dumps({"port": server.port}), flush=True)
        await stdin_closed()
        stats = server.stats
        nursery.cancel_scope.cancel()
    return attrs.asdict(stats) | {
        "accounted": stats.accounted,
        "destinations": sorted(set(map(str, destinations))),
    }


async def main(role: str, settings: str) -> None:
    result = await {"echo": echo}[role](json.loads(settings))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    trio.run(main, *sys.argv[1:])
