"""A trioudp backend for the nginx example: replies ``<name> <data>``, so a
client sees which backend answered.

    python backend.py --name a --port 9001
"""

from __future__ import annotations

import argparse
import contextlib
import functools

import trio

import trioudp


async def main(name: str, host: str, port: int) -> None:
    tag = name.encode() + b" "

    async def handler(datagram: trioudp.Datagram) -> None:
        await datagram.reply(tag + datagram.data)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(trioudp.serve_udp, handler, port, host=host)
        )
        print(f"backend {name} listening on {host}:{server.port}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main, args.name, args.host, args.port)
