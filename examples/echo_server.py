"""A UDP echo server: every datagram goes back to its sender unchanged.

Ctrl-C (SIGINT) or SIGTERM stops it gracefully: replies in progress finish.
Run:  python examples/echo_server.py [--port 12345]
"""

import argparse
import functools
import signal

import trio

import trioudp


async def echo(datagram: trioudp.Datagram) -> None:
    await datagram.reply(datagram.data)


async def main(host: str, port: int) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(trioudp.serve_udp, echo, port, host=host)
            )
            print(f"Echo server is listening on {host}:{server.port}", flush=True)
            async for _ in signals:
                await server.shutdown(grace=1.0)
                print(f"Stopped after {server.stats.handled} datagrams", flush=True)
                return


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12345)
    args = parser.parse_args()
    trio.run(main, args.host, args.port)
