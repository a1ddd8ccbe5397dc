"""The client commands: ``send`` (the tutorial's client) and ``demo`` (its
server and client together over loopback).

``send --timeout T`` gives up exactly T seconds after its first send: the
attempts wait 1, 2, 4... shares of T, with no jitter (one client has nobody
to fall in step with).
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

import trio

from .._backoff import Backoff
from .._client_open import open_udp_client
from .._open import open_udp_socket
from ._console import say, warn
from ._output import EXIT_FAILURE, EXIT_OK, peer_repr, plural
from ._serve import hello_handler, serve_until_exit
from ._terminal import printable

if TYPE_CHECKING:
    import argparse

    from .._server import UDPServer

__all__ = ["broadcast_exchange", "demo_command", "hello_exchange", "send_command"]

logger = logging.getLogger("trioudp")


async def hello_exchange(
    host: str,
    port: int,
    message: bytes,
    *,
    backoff: Backoff,
    attempts: int,
    send_exit: bool,
) -> None:
    """The tutorial client: send, print the reply, then send ``exit``."""
    async with open_udp_client(
        host, port, attempts=attempts, backoff=backoff
    ) as client:
        logger.debug(
            "sending %s to %r: up to %s, waiting %.3g s for the first reply,"
            " up to %.3g s in all",
            plural(len(message), "byte"),
            client.peer,
            plural(attempts, "attempt"),
            backoff.base(0),
            backoff.worst_case(attempts),
        )
        sent_at = trio.current_time()
        try:
            reply = await client.request(message)
        finally:
            logger.debug(
                "%s sent (%d retransmitted) in %.3f s",
                plural(client.stats.sent, "datagram"),
                client.stats.retransmitted,
                trio.current_time() - sent_at,
            )
        logger.debug(
            "reply from %s: %s", peer_repr(reply), plural(len(reply.data), "byte")
        )
        say(f"Received {printable(reply.data)} from server")
        if send_exit:
            await client.send(b"exit")


async def broadcast_exchange(
    host: str, port: int, message: bytes, *, wait: float
) -> int:
    """Send ``message`` once to a broadcast address; print every reply that
    comes within ``wait`` seconds. Returns how many came."""
    replies = 0
    async with open_udp_socket("0.0.0.0", 0, broadcast=True) as sock:
        await sock.send_to(message, (host, port))
        with trio.move_on_after(wait):
            async for reply in sock:
                replies += 1
                say(f"Received {printable(reply.data)} from {peer_repr(reply)}")
    return replies


async def send_command(args: argparse.Namespace) -> int:
    """``trioudp send``: the tutorial's client, with a timeout and retries."""
    if args.broadcast:
        message = args.message.encode()
        if await broadcast_exchange(args.host, args.port, message, wait=args.timeout):
            return EXIT_OK
        warn(f"trioudp send: no reply within {args.timeout:g} s")
        return EXIT_FAILURE
    await hello_exchange(
        args.host,
        args.port,
        args.message.encode(),
        backoff=Backoff.within(args.timeout, args.retries + 1, jitter=0.0),
        attempts=args.retries + 1,
        send_exit=not args.no_exit,
    )
    return EXIT_OK


async def demo_command(args: argparse.Namespace) -> int:
    """``trioudp demo``: the tutorial's server and client over loopback."""
    async with trio.open_nursery() as nursery:
        server: UDPServer = await nursery.start(
            functools.partial(
                serve_until_exit,
                functools.partial(hello_handler, allow_remote_exit=False),
                "127.0.0.1",
                0,
                "Server is listening on {address}",
                on_exit="Server exiting...",
                watch_signals=False,
            )
        )
        await hello_exchange(
            "127.0.0.1",
            server.port,
            b"Hello, server!",
            backoff=Backoff.within(5.0, 3),
            attempts=3,
            send_exit=True,
        )
    return EXIT_OK
