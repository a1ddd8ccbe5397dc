"""Serve one UDP port from several processes: ``trioudp.run_workers``.

Run ``python examples/workers.py --port 9999 --workers 0`` (one process per
CPU) and send it datagrams; each reply names the worker that served it.
The processes share the port through ``SO_REUSEPORT``: the kernel spreads
datagrams over them by source address and port. A worker that dies is
restarted; SIGUSR1 logs the summed counters; Ctrl-C stops them all.
"""

from __future__ import annotations

import argparse
import functools
import logging

import trio

import trioudp


async def serve(worker: trioudp.Worker) -> None:
    """One worker: an upper-casing service on the shared port."""
    host = worker.args[0]

    async def handler(datagram: trioudp.Datagram) -> None:
        reply = b"worker %d: %s" % (worker.index, datagram.data.upper())
        await datagram.reply(reply)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                trioudp.serve_udp, handler, worker.port, host=host, reuse_port=True
            )
        )
        worker.serving(server)


async def main(host: str, port: int, workers: int) -> None:
    async with trio.open_nursery() as nursery:
        pool = await nursery.start(
            functools.partial(
                trioudp.run_workers, serve, workers, port=port, args=[host]
            )
        )
        print(f"{pool.workers} workers listening on {host}:{pool.port}", flush=True)
    total = await pool.stats()
    print(f"served {total.replied} replies to {total.received} datagrams")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--workers", type=int, default=2, help="0 = one per CPU")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    trio.run(main, args.host, args.port, args.workers)
