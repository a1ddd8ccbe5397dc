"""A UDP echo server: every datagram goes back to its sender unchanged.

Ctrl-C (SIGINT) or SIGTERM stops it gracefully: replies in progress finish.
Run:  python examples/echo_server.py [--port 12345]
"""

import argparse
import functools
import signal

import trio

import trioudp

# Exposed to the network, a UDP server needs these: at most 50 datagrams a
# second from each /24 (bursts of 100; this machine exempt), and replies of
# at most 3 times the bytes a peer sent, so spoofed sources cannot use the
# server to flood someone else.
PROTECTION = {
    "rate_limit": trioudp.RateLimit(
        rate=50, burst=100, exempt=["127.0.0.0/8", "::1/128"]
    ),
    "amplification_factor": 3,
}


def echo(datagram: trioudp.Datagram) -> bytes:
    return datagram.data


async def main(host: str, port: int) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(
                    trioudp.serve_udp,
                    trioudp.Responder(echo),
                    port,
                    host=host,
                    **PROTECTION,
                )
            )
            print(f"Echo server is listening on {host}:{server.port}", flush=True)
            async for _ in signals:
                await server.shutdown(grace=1.0)
                handled = server.stats.handled
                noun = "datagram" if handled == 1 else "datagrams"
                print(f"Stopped after {handled} {noun}", flush=True)
                return


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12345)
    args = parser.parse_args()
    trio.run(main, args.host, args.port)
