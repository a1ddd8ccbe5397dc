"""Flood a trioudp server whose handler is slow, and account for every datagram.

Starts a server (in a child process) whose handler takes 10 ms per datagram,
floods it over loopback with --datagrams datagrams from blocking stdlib
sockets, checks that it still answers, stops it, and reconciles:

    sent = received + kernel drops
    received = handled + handler errors + dropped (by reason) + in flight + queued

Run:  python benchmarks/flood.py [--datagrams 1000000]
Traffic goes to 127.0.0.1 only; the flood is bounded in count and time.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time

import attrs
import trio
from _proc import rss_kib
from _results import add_json_option, write_json

import trioudp

HANDLER_SECONDS = 0.01


async def serve(max_in_flight: int, queue_size: int) -> None:
    async def slow_echo(datagram: trioudp.Datagram) -> None:
        await trio.sleep(HANDLER_SECONDS)
        await datagram.reply(datagram.data)

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(
                    trioudp.serve_udp,
                    slow_echo,
                    0,
                    host="127.0.0.1",
                    max_in_flight=max_in_flight,
                    queue_size=queue_size,
                )
            )
            print(server.port, flush=True)
            async for _ in signals:
                await server.shutdown(grace=1.0)
                stats = attrs.asdict(server.stats)
                stats["accounted"] = server.stats.accounted
                print(json.dumps(stats), flush=True)
                return


def flood(port: int, count: int, senders: int, size: int, limit_seconds: float) -> int:
    """Send ``count`` datagrams round-robin from ``senders`` sockets; returns how many went."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(senders)]
    payload = b"f" * size
    sent = 0
    deadline = time.monotonic() + limit_seconds
    try:
        while sent < count and (sent % 10_000 or time.monotonic() < deadline):
            try:
                sockets[sent % senders].sendto(payload, ("127.0.0.1", port))
            except OSError:  # ENOBUFS and the like: not sent, not counted
                continue
            sent += 1
    finally:
        for sock in sockets:
            sock.close()
    return sent


def still_answers(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(1.0)
        for _ in range(5):
            probe.sendto(b"probe", ("127.0.0.1", port))
            try:
                while probe.recv(100) != b"probe":
                    pass
                return True
            except TimeoutError:
                continue
    return False


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datagrams", type=int, default=1_000_000)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--max-in-flight", type=int, default=64)
    parser.add_argument("--queue-size", type=int, default=256)
    parser.add_argument("--limit-seconds", type=float, default=120.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    add_json_option(parser)
    args = parser.parse_args()
    if args.serve:
        trio.run(serve, args.max_in_flight, args.queue_size)
        return

    child = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            "--max-in-flight",
            str(args.max_in_flight),
            "--queue-size",
            str(args.queue_size),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    port = int(child.stdout.readline())
    time.sleep(0.5)
    rss_before = rss_kib(child.pid)
    started = time.monotonic()
    sent = flood(port, args.datagrams, args.senders, args.size, args.limit_seconds)
    flood_seconds = time.monotonic() - started
    time.sleep(2.0)  # let the server drain its queue
    answering = still_answers(port)
    rss_after = rss_kib(child.pid)
    child.send_signal(signal.SIGTERM)
    stats = json.loads(child.stdout.readline())
    child.wait(timeout=30)
    received = stats["received"]
    kernel_drops = stats["kernel_drops"] or 0
    probes = 1 if answering else 0
    drops = {
        key: value
        for key, value in stats.items()
        if key.startswith("dropped_") and value
    }
    print(
        f"datagrams sent        {sent:,} in {flood_seconds:.1f} s ({sent / flood_seconds:,.0f}/s)"
    )
    print(f"received by server    {received:,}")
    print(f"kernel drops          {kernel_drops:,}")
    print(f"handled               {stats['handled']:,}")
    for reason, value in sorted(drops.items()):
        print(f"{reason:<21} {value:,}")
    print(f"handler errors        {stats['handler_errors']:,}")
    print(f"still answering       {answering}")
    print(
        f"RSS before / after    {rss_before / 1024:.1f} MiB / {rss_after / 1024:.1f} MiB (+{(rss_after - rss_before) / 1024:.1f} MiB)"
    )
    unaccounted = (sent + probes) - received - kernel_drops
    print(f"unaccounted (sent - received - kernel drops)   {unaccounted:,}")
    print(
        f"unaccounted (received - outcomes)              {received - stats['accounted']:,}"
    )
    figures = {
        "sent": sent,
        "seconds": round(flood_seconds, 2),
        "received": received,
        "kernel_drops": kernel_drops,
        "handled": stats["handled"],
        "dropped": drops,
        "handler_errors": stats["handler_errors"],
        "answering": answering,
        "rss_kib_before": rss_before,
        "rss_kib_after": rss_after,
        "unaccounted_sent": unaccounted,
        "unaccounted_received": received - stats["accounted"],
    }
    settings = {
        "handler_seconds": HANDLER_SECONDS,
        **{k: getattr(args, k) for k in ("senders", "size", "max_in_flight")},
        "queue_size": args.queue_size,
    }
    write_json(args.json, {"settings": settings, "flood": figures})


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
