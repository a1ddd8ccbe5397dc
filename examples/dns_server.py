"""An authoritative DNS server for one zone: one JSON line per query on
stdout; malformed queries get FORMERR or are dropped, and are counted.

Ctrl-C (SIGINT) or SIGTERM stops it gracefully.
Run:  python examples/dns_server.py [--host 127.0.0.1] [--port 5353] [--zone FILE]
Try:  dig @127.0.0.1 -p 5353 www.example.test A +short
"""

import argparse
import collections
import functools
import json
import signal
import sys
from pathlib import Path

import trio
from _dns import answer_untrusted, load_zone

import trioudp

DEFAULT_ZONE = Path(__file__).parent / "zones" / "example.test.zone"
# A DNS answer can be much bigger than its query, and the source address of a
# query can be spoofed: answers are cut to 10 times the query's size
# (truncated, TC set), and the guard below withholds anything beyond that.
AMPLIFICATION = 10
PROTECTION = {
    "rate_limit": trioudp.RateLimit(
        rate=20, burst=100, exempt=["127.0.0.0/8", "::1/128"]
    ),
    "amplification_factor": AMPLIFICATION,
}


async def main(host: str, port: int, zone_file: str) -> None:
    zone = load_zone(zone_file)
    outcomes: collections.Counter[str] = collections.Counter()

    # A Responder: the answer comes from memory, nothing to wait for.
    def answer(datagram: trioudp.Datagram) -> bytes | None:
        outcome = answer_untrusted(zone, datagram.data, amplification=AMPLIFICATION)
        outcomes[outcome.rcode] += 1
        if outcome.reply is None:
            return None
        line = {"peer": datagram.peer[0], **outcome._asdict()}
        del line["reply"]
        print(json.dumps(line), flush=True)
        return outcome.reply

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(
                    trioudp.serve_udp,
                    trioudp.Responder(answer),
                    port,
                    host=host,
                    **PROTECTION,
                )
            )
            print(
                f"DNS server for {zone.origin} on {host}:{server.port}",
                file=sys.stderr,
                flush=True,
            )
            async for _ in signals:
                await server.shutdown(grace=1.0)
                print(f"stopped: {dict(outcomes)}", file=sys.stderr, flush=True)
                return


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    parser.add_argument("--port", type=int, default=5353, help="default 5353")
    parser.add_argument(
        "--zone", default=str(DEFAULT_ZONE), help="zone file (default: example.test)"
    )
    args = parser.parse_args()
    trio.run(main, args.host, args.port, args.zone)
