"""A syslog collector: RFC 3164 and RFC 5424 messages over UDP, one JSON
object per line on stdout. Malformed datagrams are counted, never fatal.

Ctrl-C (SIGINT) or SIGTERM stops it gracefully.
Run:  python examples/syslog_server.py [--host 127.0.0.1] [--port 5514]
Try:  logger --udp --server 127.0.0.1 --port 5514 -t myapp -p local3.warning hello
"""

import argparse
import functools
import json
import signal
import sys

import trio
from _syslog import MalformedMessage, parse_untrusted

import trioudp

# Logs come in bursts; a collector never replies (factor 1: it could not
# reflect anything even if a handler tried).
PROTECTION = {
    "rate_limit": trioudp.RateLimit(
        rate=1000, burst=5000, exempt=["127.0.0.0/8", "::1/128"]
    ),
    "amplification_factor": 1,
}


class Collector:
    def __init__(self) -> None:
        self.messages = 0
        self.malformed = 0

    def __call__(self, datagram: trioudp.Datagram) -> None:
        try:
            message = parse_untrusted(datagram.data)
        except MalformedMessage as exc:
            self.malformed += 1
            print(f"malformed datagram from {datagram.peer[0]}: {exc}", file=sys.stderr)
            return
        self.messages += 1
        print(json.dumps(message), flush=True)


async def main(host: str, port: int) -> None:
    collect = Collector()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(
                    trioudp.serve_udp,
                    trioudp.Responder(collect),
                    port,
                    host=host,
                    **PROTECTION,
                )
            )
            print(f"syslog server on {host}:{server.port}", file=sys.stderr, flush=True)
            async for _ in signals:
                await server.shutdown(grace=1.0)
                print(
                    f"stopped: {collect.messages} messages, {collect.malformed} malformed",
                    file=sys.stderr,
                    flush=True,
                )
                return


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    parser.add_argument("--port", type=int, default=5514, help="default 5514")
    args = parser.parse_args()
    trio.run(main, args.host, args.port)
