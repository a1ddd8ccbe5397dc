"""The tutorial's program: the socket tutorial's UDP server and client, grown
into trioudp (``docs/tutorial/index.rst`` builds it step by step).

Run it:  python docs/examples/hello.py   (server and client over loopback, in
one process; SIGINT or SIGTERM stop the server gracefully)
"""

from __future__ import annotations

import functools
import signal
from typing import TYPE_CHECKING

import trio

import trioudp

if TYPE_CHECKING:
    import random
    from collections.abc import Awaitable, Callable


def hello_handler(
    exit_requested: trio.Event,
) -> Callable[[trioudp.Datagram], Awaitable[None]]:
    """The tutorial server's loop body, as a handler: one call per datagram."""

    async def handler(datagram: trioudp.Datagram) -> None:
        message = datagram.data.decode(errors="backslashreplace")
        print(f"Received {message} from {datagram.peer[0]}")
        if message.lower() == "exit":
            print("Server exiting...")
            exit_requested.set()
        else:
            await datagram.reply(b"Hello, client!")

    return handler


async def stop_on_signal(exit_requested: trio.Event) -> None:
    """Set ``exit_requested`` on SIGINT or SIGTERM (Ctrl-C, ``kill``)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            exit_requested.set()
            return


async def hello_server(
    port: int,
    *,
    grace: float = 2.0,
    task_status: trio.TaskStatus[trioudp.UDPServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until a client sends ``exit`` or a signal comes, then stop
    gracefully: handlers still running get ``grace`` seconds to finish."""
    exit_requested = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_on_signal, exit_requested)
        server = await nursery.start(
            functools.partial(
                trioudp.serve_udp, hello_handler(exit_requested), port, host="127.0.0.1"
            )
        )
        task_status.started(server)
        await exit_requested.wait()
        await server.shutdown(grace=grace)
        nursery.cancel_scope.cancel()  # the signal watcher


async def hello_client(
    port: int,
    *,
    backoff: trioudp.Backoff | None = None,
    rng: random.Random | None = None,
) -> bytes:
    """Ask once (retransmitting as ``backoff`` says, with jitter drawn from
    ``rng``), then tell the server to exit."""
    async with trioudp.open_udp_client(
        "127.0.0.1", port, attempts=4, backoff=backoff, rng=rng
    ) as client:
        reply = await client.request(b"Hello, server!")
        print(f"Received {reply.data.decode()} from server")
        await client.send(b"exit")
    return reply.data


async def main() -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(hello_server, 0)
        await hello_client(server.port)


if __name__ == "__main__":
    trio.run(main)
