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
from pathlib import Path

import trio
from _dns import MAX_QUERY_SIZE, answer_untrusted, load_zone
from _output import open_output

import trioudp

DEFAULT_ZONE = Path(__file__).parent / "zones" / "example.test.zone"
# A DNS answer can be much bigger than its query, and the source address of a
# query can be spoofed: as docs/howto/exposing.rst says, a peer gets at most
# 3 times the bytes it sent. Answers are cut to that (truncated, TC set: the
# client may ask again over TCP), and the guard withholds anything beyond.
AMPLIFICATION = 3
PROTECTION = {
    "rate_limit": trioudp.RateLimit(
        rate=20, burst=100, exempt=["127.0.0.0/8", "::1/128"]
    ),
    "amplification_factor": AMPLIFICATION,
    # Longer datagrams are not queries: dropped unread, counted as oversize.
    "max_datagram_size": MAX_QUERY_SIZE,
}


async def main(host: str, port: int, zone_file: str) -> None:
    zone = load_zone(zone_file)
    outcomes: collections.Counter[str] = collections.Counter()

    async with open_output() as (out, err):
        # A Responder: the answer comes from memory, nothing to wait for, and
        # the log line is only queued (a reader that does not keep up loses
        # lines, counted, but never holds up the answers).
        def answer(datagram: trioudp.Datagram) -> bytes | None:
            outcome = answer_untrusted(zone, datagram.data, amplification=AMPLIFICATION)
            outcomes[outcome.rcode] += 1
            if outcome.reply is None:
                return None
            line = {"peer": datagram.peer[0], **outcome._asdict()}
            del line["reply"]
            out.line(json.dumps(line))
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
                err.line(f"DNS server for {zone.origin} on {host}:{server.port}")
                async for _ in signals:
                    await server.shutdown(grace=1.0)
                    if server.stats.dropped_oversize:
                        outcomes["oversize"] = server.stats.dropped_oversize
                    await out.aclose()
                    if out.dropped:
                        err.line(f"{out.dropped} log lines dropped: stdout not read")
                    err.line(f"stopped: {dict(outcomes)}")
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
