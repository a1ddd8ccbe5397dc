"""The server commands: ``serve`` (the tutorial's server), ``echo`` and ``listen``.

Each serves until a signal (or, for ``serve``, an ``exit`` datagram from
loopback) and then stops gracefully, printing its counters (also on
SIGUSR1); with ``--workers N``, ``serve`` and ``echo`` hand over to
``_supervise``. Peer data is printed only through :func:`printable` (no
control character reaches the terminal). With ``-v``, each datagram's peer
and size is logged at debug level.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
from typing import TYPE_CHECKING

import attrs
import trio

from .._address import is_loopback
from .._limits import RateLimit
from .._open import open_udp_sockets
from .._responder import Responder
from .._serve import serve_udp_sockets
from ._output import EXIT_OK, peer_repr, plural, served_addresses, stats_line
from ._supervise import supervise
from ._terminal import printable

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable

    from .._datagram import Datagram
    from .._multicast import Multicast
    from .._server import UDPServer
    from .._workers import Worker

__all__ = [
    "GRACE",
    "SERVER_COMMANDS",
    "Protection",
    "echo_command",
    "hello_handler",
    "listen_command",
    "rate_limit_from",
    "serve_command",
    "serve_until_exit",
    "watch_server_signals",
]

logger = logging.getLogger("trioudp")

#: Seconds a stopping server gives the datagrams it is handling.
GRACE = 2.0


def _log_datagram(datagram: Datagram) -> None:
    logger.debug(
        "datagram from %s: %s", peer_repr(datagram), plural(len(datagram.data), "byte")
    )


def hello_handler(
    exit_requested: trio.Event, *, allow_remote_exit: bool
) -> Callable[[Datagram], Awaitable[None]]:
    """The tutorial server's handler: print, answer ``Hello, client!``, stop on ``exit``."""

    async def handler(datagram: Datagram) -> None:
        _log_datagram(datagram)
        print(
            f"Received {printable(datagram.data)} from {peer_repr(datagram)}",
            flush=True,
        )
        if datagram.data.strip().lower() != b"exit":
            await datagram.reply(b"Hello, client!")
        elif allow_remote_exit or is_loopback(datagram.peer[0]):
            exit_requested.set()
        else:
            print(
                f"Refusing 'exit' from non-loopback peer {peer_repr(datagram)};"
                " start with --allow-remote-exit to allow it",
                file=sys.stderr,
                flush=True,
            )

    return handler


async def watch_server_signals(
    stats_text: Callable[[], str],
    stop: Callable[[], object],
    received: list[int],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A one-process server's signals: SIGUSR1 prints ``stats_text()`` on
    stderr; SIGINT or SIGTERM is announced, appended to ``received``, and
    calls ``stop()`` (once: the watch then ends)."""
    watched = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
    with trio.open_signal_receiver(*watched) as signals:
        task_status.started()
        async for signum in signals:
            if signum == signal.SIGUSR1:
                print(stats_text(), file=sys.stderr, flush=True)
                continue
            name = signal.Signals(signum).name
            print(f"Received {name}, shutting down...", file=sys.stderr, flush=True)
            received.append(signum)
            stop()
            return


async def serve_until_exit(
    handler_for: Callable[[trio.Event], Callable[[Datagram], Awaitable[None]]],
    host: str | None,
    port: int,
    banner: str,
    *,
    on_exit: str | None = None,
    watch_signals: bool = True,
    protection: Protection | None = None,
    worker: Worker | None = None,
    multicast: Multicast | None = None,
    reuse_port: bool = False,
    task_status: trio.TaskStatus[UDPServer] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Serve with the handler ``handler_for(exit_requested)`` builds, until
    the handler or a signal sets ``exit_requested``; then stop gracefully.

    ``banner`` is formatted with ``address`` (every address served, such as
    ``0.0.0.0:12345 and [::]:12345``), ``host`` and ``port``. With
    ``watch_signals``, SIGINT and SIGTERM stop it, SIGUSR1 prints its
    counters, and it prints them when it stops. Returns the exit code: 0, or
    128 + the number of the signal that stopped it.

    In a ``--workers`` worker the port is shared (``SO_REUSEPORT``) and the
    supervisor prints the banner, watches signals and prints the counters.
    """
    exit_requested = trio.Event()
    signals: list[int] = []
    protection = protection or Protection()
    sockets = await open_udp_sockets(
        port, host, multicast=multicast, reuse_port=reuse_port or worker is not None
    )
    address = served_addresses(sock.local_address for sock in sockets)
    logger.debug("bound %s", address)
    async with trio.open_nursery() as nursery:
        server: UDPServer = await nursery.start(
            functools.partial(
                serve_udp_sockets,
                handler_for(exit_requested),
                sockets,
                rate_limit=protection.rate_limit,
                amplification_factor=protection.amplification_factor,
            )
        )
        if worker is None:
            if watch_signals:
                # Before the banner: a signal sent once it is out is handled.
                await nursery.start(
                    watch_server_signals,
                    lambda: stats_line(server.stats),
                    exit_requested.set,
                    signals,
                )
            print(
                banner.format(address=address, host=host, port=server.port), flush=True
            )
        else:
            worker.serving(server, stop=exit_requested.set)
        task_status.started(server)
        await exit_requested.wait()
        if on_exit:
            print(on_exit, flush=True)
        await server.shutdown(grace=GRACE)
        nursery.cancel_scope.cancel()
    if worker is None and watch_signals:
        print(stats_line(server.stats), file=sys.stderr, flush=True)
    return 128 + signals[0] if signals else EXIT_OK


@attrs.frozen
class Protection:
    """The protection settings of a CLI server (none unless asked for: the
    command line's options default to on)."""

    rate_limit: RateLimit | None = None
    amplification_factor: float | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Protection:
        """Settings from ``--rate-limit`` and ``--amplification-factor`` (0 = off)."""
        factor = args.amplification_factor or None
        return cls(rate_limit=rate_limit_from(args), amplification_factor=factor)


def rate_limit_from(args: argparse.Namespace) -> RateLimit | None:
    """``--rate-limit N``: N datagrams a second per source prefix, bursts
    of 2N, loopback exempt; None for 0 (off)."""
    if args.rate_limit <= 0:
        return None
    return RateLimit(
        rate=args.rate_limit,
        burst=max(1.0, 2 * args.rate_limit),
        exempt=["127.0.0.0/8", "::1/128"],
    )


async def serve_command(args: argparse.Namespace, worker: Worker | None = None) -> int:
    """``trioudp serve``: the tutorial's server (in ``worker``, one of its
    ``--workers``)."""
    banner = "Server is listening on {address}"
    if worker is None and args.workers != 1:
        return await supervise(args, banner, GRACE)
    return await serve_until_exit(
        functools.partial(hello_handler, allow_remote_exit=args.allow_remote_exit),
        args.host,
        args.port if worker is None else worker.port,
        banner,
        on_exit="Server exiting...",
        protection=Protection.from_args(args),
        worker=worker,
    )


def _echo(datagram: Datagram) -> bytes:
    return datagram.data


def _echo_logged(datagram: Datagram) -> bytes:
    _log_datagram(datagram)
    return datagram.data


def _echo_handler(exit_requested: trio.Event) -> Responder:
    # The fastest correct form: an echo needs no waiting. The logging one
    # only with -v: a log call per datagram costs more than the echo.
    return Responder(_echo_logged if logger.isEnabledFor(logging.DEBUG) else _echo)


def _listen_handler(
    exit_requested: trio.Event,
) -> Callable[[Datagram], Awaitable[None]]:
    async def listen(datagram: Datagram) -> None:
        _log_datagram(datagram)
        print(
            f"{peer_repr(datagram)} {plural(len(datagram.data), 'byte')}:"
            f" {printable(datagram.data)}",
            flush=True,
        )

    return listen


async def echo_command(args: argparse.Namespace, worker: Worker | None = None) -> int:
    """``trioudp echo``: answer every datagram with its own bytes (in
    ``worker``, one of its ``--workers``)."""
    banner = "Echo server is listening on {address}"
    if worker is None and args.workers != 1:
        return await supervise(args, banner, GRACE)
    return await serve_until_exit(
        _echo_handler,
        args.host,
        args.port if worker is None else worker.port,
        banner,
        protection=Protection.from_args(args),
        worker=worker,
    )


#: The commands ``--workers`` runs in each worker, by name.
SERVER_COMMANDS: dict[
    str, Callable[[argparse.Namespace, Worker | None], Awaitable[int]]
] = {"serve": serve_command, "echo": echo_command}


async def listen_command(args: argparse.Namespace) -> int:
    """``trioudp listen``: print every datagram, answer nothing; with
    ``--group``, bind every address and join the multicast group."""
    if args.group is None:
        return await serve_until_exit(
            _listen_handler, args.host, args.port, "Listening on {address}"
        )
    multicast: Multicast = args.multicast
    return await serve_until_exit(
        _listen_handler,
        None,  # group datagrams are addressed to the group, not to a host
        args.port,
        f"Listening to group {args.group} on port {{port}}",
        multicast=multicast,
        # Several listeners of groups may share a port, as multicast
        # receivers conventionally do.
        reuse_port=True,
    )
