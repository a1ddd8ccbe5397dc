"""The socket tutorial's UDP server, with trioudp.

Prints each datagram, answers "Hello, client!", and stops on "exit" (from
this machine only). Run:  python examples/hello_server.py [--port 12345]
"""

import argparse
import functools
import ipaddress

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


async def main(host: str, port: int) -> None:
    done = trio.Event()

    async def handler(datagram: trioudp.Datagram) -> None:
        message = datagram.data.decode("utf-8", "backslashreplace")
        print(f"Received {message} from {datagram.peer[:2]}", flush=True)
        if (
            message.strip().lower() == "exit"
            and ipaddress.ip_address(datagram.peer[0]).is_loopback
        ):
            done.set()
        else:
            await datagram.reply(b"Hello, client!")

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(trioudp.serve_udp, handler, port, host=host, **PROTECTION)
        )
        print(f"Server is listening on {host}:{server.port}", flush=True)
        await done.wait()
        print("Server exiting...", flush=True)
        await server.shutdown(grace=1.0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=12345)
    args = parser.parse_args()
    trio.run(main, args.host, args.port)
