"""A syslog collector: RFC 3164 and RFC 5424 messages over UDP, one JSON
object per line on stdout, ``peer`` (the sender's address) first: anyone can
send a syslog datagram that names any host. Malformed datagrams are
counted, never fatal.

Ctrl-C (SIGINT) or SIGTERM stops it gracefully.
Run:  python examples/syslog_server.py [--host 127.0.0.1] [--port 5514]
Try:  logger --udp --server 127.0.0.1 --port 5514 -t myapp -p local3.warning hello
"""

import argparse
import functools
import signal

import trio
from _output import LineWriter, open_output
from _syslog import MalformedMessage, json_line, parse_untrusted

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
    """A Responder's function: lines are only queued, so that a reader that
    does not keep up loses lines (counted) but never holds up the server."""

    def __init__(self, out: LineWriter, err: LineWriter) -> None:
        self.out = out
        self.err = err
        self.messages = 0
        self.malformed = 0

    def __call__(self, datagram: trioudp.Datagram) -> None:
        try:
            message = parse_untrusted(datagram.data)
        except MalformedMessage as exc:
            self.malformed += 1
            self.err.line(f"malformed datagram from {datagram.peer[0]}: {exc}")
            return
        self.messages += 1
        self.out.line(json_line(datagram.peer[0], message))


async def main(host: str, port: int) -> None:
    async with open_output() as (out, err):
        collect = Collector(out, err)
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
                err.line(f"syslog server on {host}:{server.port}")
                async for _ in signals:
                    await server.shutdown(grace=1.0)
                    await out.aclose()
                    if out.dropped:
                        err.line(f"{out.dropped} records dropped: stdout not read")
                    err.line(
                        f"stopped: {collect.messages} messages,"
                        f" {collect.malformed} malformed"
                    )
                    return


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    parser.add_argument("--port", type=int, default=5514, help="default 5514")
    args = parser.parse_args()
    trio.run(main, args.host, args.port)
