"""The application tests/workers/ runs in worker processes.

Replies ``<pid> <data>``; ``crash`` makes the worker exit with status 3 at
once; with ``args == ["crash-when-ready"]`` every worker exits with status 3
as soon as it serves (a crash loop); with ``args == ["raise-on-request"]``,
``raise`` makes the worker's main function raise (after the reply). In a
pool whose supervisor binds the sockets, it serves ``worker.sockets``.
"""

from __future__ import annotations

import functools
import os

import trio
import trio.testing

import trioudp

raise_requested = trio.Event()


async def handler(datagram: trioudp.Datagram) -> None:
    if datagram.data == b"crash":
        os._exit(3)
    await datagram.reply(b"%d %s" % (os.getpid(), datagram.data))
    if datagram.data == b"raise":
        raise_requested.set()


async def serve(worker: trioudp.Worker) -> None:
    async with trio.open_nursery() as nursery:
        if worker.sockets:
            serve = functools.partial(
                trioudp.serve_udp_sockets, handler, worker.sockets
            )
        else:
            serve = functools.partial(
                trioudp.serve_udp,
                handler,
                worker.port,
                host="127.0.0.1",
                reuse_port=True,
            )
        server = await nursery.start(serve)
        if worker.args == ("raise-on-request",):
            worker.serving(server, stop=nursery.cancel_scope.cancel)
            await raise_requested.wait()
            raise RuntimeError("asked to raise")
        worker.serving(server)
        if worker.args == ("crash-when-ready",):
            await trio.testing.wait_all_tasks_blocked()  # the report has left
            os._exit(3)
