"""The server commands: ``serve`` (the tutorial's server), ``echo`` and ``listen``.

Each serves until a signal (or, for ``serve``, an ``exit`` datagram from
loopback) and then stops gracefully, printing its counters (also on
SIGUSR1); with ``--workers N``, ``serve`` and ``echo`` hand over to
``_supervise``. Peer data is printed only through :func:`printable` (no
control character reaches the terminal, at most ``SHOWN`` bytes of a
datagram), and every line through ``_console`` (never a blocking write).
A server whose stdout reader closed its end stops quietly. With ``-v``,
each datagram's peer and size is logged at debug level.
"""

from __future__ import annotations

import functools
import logging
import signal
from typing import TYPE_CHECKING

import attrs
import trio

from .._address import is_loopback
from .._limits import LoopGuard, RateLimit
from .._open import open_udp_sockets
from .._responder import Responder
from .._serve import DEFAULT_LOOP_GUARD, serve_udp_sockets
from ._console import close_stdout, dropped_note, say, wait_stdout_gone, warn
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
        say(f"Received {printable(datagram.data)} from {peer_repr(datagram)}")
        if datagram.data.strip().lower() != b"exit":
            await datagram.reply(b"Hello, client!")
        elif allow_remote_exit or is_loopback(datagram.peer[0]):
            exit_requested.set()
        else:
            warn(
                f"Refusing 'exit' from non-loopback peer {peer_repr(datagram)};"
                " start with --allow-remote-exit to allow it"
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
    stderr, with the lines of output dropped if any; SIGINT or SIGTERM is announced, appended to ``received``, and
    calls ``stop()`` (once: the watch then ends)."""
    watched = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
    with trio.open_signal_receiver(*watched) as signals:
        task_status.started()
        async for signum in signals:
            if signum == signal.SIGUSR1:
                warn(stats_text() + dropped_note())
                continue
            name = signal.Signals(signum).name
            warn(f"Received {name}, shutting down...")
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
    broadcast: bool = False,
    reuse_port: bool = False,
    task_status: trio.TaskStatus[UDPServer] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Serve with the handler ``handler_for(exit_requested)`` builds, until
    the handler or a signal sets ``exit_requested``; then stop gracefully.

    ``banner`` is formatted with ``address`` (every address served, such as
    ``0.0.0.0:12345 and [::]:12345``), ``host`` and ``port``. With
    ``watch_signals``, SIGINT and SIGTERM stop it, SIGUSR1 prints its
    counters, and it prints them when it stops (after stdout has had its
    lines written, so that the count of those dropped is final); so does
    stdout's reader closing its end. Returns the exit code: 0, or 128 + the
    number of the signal that stopped it.

    ``broadcast``: answer (or, for ``listen``, print) datagrams sent to a
    broadcast address, as :func:`serve_udp`'s ``broadcast``.

    In a ``--workers`` worker the port is shared (``SO_REUSEPORT``) and the
    supervisor prints the banner, watches signals and prints the counters.
    """
    exit_requested = trio.Event()
    signals: list[int] = []
    protection = protection or Protection()
    sockets = await open_udp_sockets(
        port,
        host,
        multicast=multicast,
        broadcast=broadcast,
        reuse_port=reuse_port or worker is not None,
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
                loop_guard=protection.loop_guard,
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
                nursery.start_soon(_stop_when_stdout_gone, exit_requested)
            say(banner.format(address=address, host=host, port=server.port))
        else:
            worker.serving(server, stop=exit_requested.set)
        task_status.started(server)
        await exit_requested.wait()
        if on_exit:
            say(on_exit)
        await server.shutdown(grace=GRACE)
        nursery.cancel_scope.cancel()
    if worker is None and watch_signals:
        await close_stdout()
        warn(stats_line(server.stats) + dropped_note())
    return 128 + signals[0] if signals else EXIT_OK


async def _stop_when_stdout_gone(exit_requested: trio.Event) -> None:
    # As a program that writes to a closed pipe dies of SIGPIPE (which
    # Python ignores), quietly; the entry point makes the exit code 1.
    await wait_stdout_gone()
    exit_requested.set()


@attrs.frozen
class Protection:
    """The protection settings of a CLI server: no rate limit and no
    amplification guard unless asked for (the command line's options default
    to on), and the library's default loop guard."""

    rate_limit: RateLimit | None = None
    amplification_factor: float | None = None
    loop_guard: LoopGuard | None = DEFAULT_LOOP_GUARD

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Protection:
        """Settings from ``--rate-limit`` and ``--amplification-factor`` (0 =
        off) and ``--no-loop-guard``."""
        return cls(
            rate_limit=rate_limit_from(args),
            amplification_factor=args.amplification_factor or None,
            loop_guard=DEFAULT_LOOP_GUARD if args.loop_guard else None,
        )


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
        broadcast=args.broadcast,
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
    exit_requested: trio.Event, *, show_destination: bool = False
) -> Callable[[Datagram], Awaitable[None]]:
    """Print each datagram: its peer, with ``show_destination`` the address
    it was sent to (where known), its size and its bytes."""

    async def listen(datagram: Datagram) -> None:
        _log_datagram(datagram)
        to = ""
        if show_destination and datagram.destination is not None:
            to = f" to {datagram.destination}"
        say(
            f"{peer_repr(datagram)}{to} {plural(len(datagram.data), 'byte')}:"
            f" {printable(datagram.data)}"
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
        broadcast=args.broadcast,
    )


#: The commands ``--workers`` runs in each worker, by name.
SERVER_COMMANDS: dict[
    str, Callable[[argparse.Namespace, Worker | None], Awaitable[int]]
] = {"serve": serve_command, "echo": echo_command}


async def listen_command(args: argparse.Namespace) -> int:
    """``trioudp listen``: print every datagram, answer nothing; with
    ``--group``, bind every address and join the multicast group; with
    ``--broadcast``, print datagrams sent to a broadcast address too. With
    either, each line shows the address the datagram was sent to."""
    handler = functools.partial(
        _listen_handler, show_destination=args.broadcast or args.group is not None
    )
    if args.group is None:
        return await serve_until_exit(
            handler,
            args.host,
            args.port,
            "Listening on {address}",
            broadcast=args.broadcast,
        )
    multicast: Multicast = args.multicast
    return await serve_until_exit(
        handler,
        None,  # group datagrams are addressed to the group, not to a host
        args.port,
        f"Listening to group {args.group} on port {{port}}",
        multicast=multicast,
        broadcast=args.broadcast,
        # Several listeners of groups may share a port, as multicast
        # receivers conventionally do.
        reuse_port=True,
    )
