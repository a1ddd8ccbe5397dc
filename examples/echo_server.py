"""A UDP echo server: every datagram goes back to its sender unchanged.

Run:  python examples/echo_server.py [--port 12345]   (Ctrl-C stops it)
"""

import argparse
import functools

import trio

import trioudp


async def echo(datagram: trioudp.Datagram) -> None:
    await datagram.reply(datagram.data)


async def main(host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(trioudp.serve_udp, echo, port, host=host)
        )
        print(f"Echo server is listening on {host}:{server.port}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12345)
    args = parser.parse_args()
    try:
        trio.run(main, args.host, args.port)
    except KeyboardInterrupt:
        pass
