"""The socket tutorial's UDP client, with trioudp: it never hangs.

Sends "Hello, server!", prints the reply, then sends "exit". Without a
server it gives up after 3 attempts (about 7 s) instead of waiting forever.
Run:  python examples/hello_client.py [--port 12345]
"""

import argparse
import sys

import trio

import trioudp


async def main(host: str, port: int) -> int:
    async with trioudp.open_udp_client(host, port) as client:
        try:
            reply = await client.request(b"Hello, server!")
        except trioudp.TrioUDPError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(f"Received {reply.data.decode()} from server")
        await client.send(b"exit")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12345)
    args = parser.parse_args()
    sys.exit(trio.run(main, args.host, args.port))
