"""The ``trioudp`` command line: the socket tutorial's server and client, done safely.

Exit codes: 0 success; 1 a network failure (no reply, peer unreachable, bind
failure, bad address); 2 bad usage; 130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
from typing import TYPE_CHECKING

import attrs
import trio

from ._address import is_loopback
from ._backoff import Backoff
from ._client import open_udp_client
from ._errors import TrioUDPError
from ._limits import RateLimit
from ._multicast import Multicast
from ._server import UDPServer, open_udp_sockets, serve_udp_sockets
from ._socket import open_udp_socket

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from ._datagram import Datagram

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130

DEFAULT_PORT = 12345
GRACE = 2.0


def _text(data: bytes) -> str:
    """Bytes as text for printing: UTF-8, with undecodable bytes escaped."""
    return data.decode("utf-8", "backslashreplace")


def _peer_repr(datagram: Datagram) -> str:
    return repr(tuple(datagram.peer[:2]))


# ---- the tutorial's server ------------------------------------------------


def hello_handler(
    exit_requested: trio.Event, *, allow_remote_exit: bool
) -> Callable[[Datagram], Awaitable[None]]:
    """The tutorial server's handler: print, answer ``Hello, client!``, stop on ``exit``."""

    async def handler(datagram: Datagram) -> None:
        text = _text(datagram.data)
        print(f"Received {text} from {_peer_repr(datagram)}", flush=True)
        if text.strip().lower() != "exit":
            await datagram.reply(b"Hello, client!")
        elif allow_remote_exit or is_loopback(datagram.peer[0]):
            exit_requested.set()
        else:
            print(
                f"Refusing 'exit' from non-loopback peer {_peer_repr(datagram)};"
                " start with --allow-remote-exit to allow it",
                file=sys.stderr,
                flush=True,
            )

    return handler


async def _watch_signals(exit_requested: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            print(f"Received {name}, shutting down...", file=sys.stderr, flush=True)
            exit_requested.set()
            return


async def _serve_until_exit(
    handler_for: Callable[[trio.Event], Callable[[Datagram], Awaitable[None]]],
    host: str | None,
    port: int,
    banner: str,
    *,
    on_exit: str | None = None,
    watch_signals: bool = True,
    protection: Protection | None = None,
    multicast: Multicast | None = None,
    task_status: trio.TaskStatus[UDPServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve with the handler ``handler_for(exit_requested)`` builds, until
    the handler or a signal sets ``exit_requested``; then stop gracefully.
    """
    exit_requested = trio.Event()
    protection = protection or Protection()
    sockets = await open_udp_sockets(port, host, multicast=multicast)
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
        print(banner.format(host=host, port=server.port), flush=True)
        if watch_signals:
            nursery.start_soon(_watch_signals, exit_requested)
        task_status.started(server)
        await exit_requested.wait()
        if on_exit:
            print(on_exit, flush=True)
        await server.shutdown(grace=GRACE)
        nursery.cancel_scope.cancel()


@attrs.frozen
class Protection:
    """The protection settings of a CLI server (none by default)."""

    rate_limit: RateLimit | None = None
    amplification_factor: float | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Protection:
        """Settings from ``--rate-limit`` and ``--amplification-factor`` (0 = off)."""
        rate_limit = None
        if args.rate_limit > 0:
            rate_limit = RateLimit(
                rate=args.rate_limit,
                burst=max(1.0, 2 * args.rate_limit),
                exempt=["127.0.0.0/8", "::1/128"],
            )
        factor = args.amplification_factor or None
        return cls(rate_limit=rate_limit, amplification_factor=factor)


async def serve_command(args: argparse.Namespace) -> int:
    """``trioudp serve``: the tutorial's server."""
    await _serve_until_exit(
        functools.partial(hello_handler, allow_remote_exit=args.allow_remote_exit),
        args.host,
        args.port,
        "Server is listening on {host}:{port}",
        on_exit="Server exiting...",
        protection=Protection.from_args(args),
    )
    return EXIT_OK


def _echo_handler(exit_requested: trio.Event) -> Callable[[Datagram], Awaitable[None]]:
    async def echo(datagram: Datagram) -> None:
        await datagram.reply(datagram.data)

    return echo


def _listen_handler(
    exit_requested: trio.Event,
) -> Callable[[Datagram], Awaitable[None]]:
    async def listen(datagram: Datagram) -> None:
        print(
            f"{_peer_repr(datagram)} {len(datagram.data)} bytes: {_text(datagram.data)}",
            flush=True,
        )

    return listen


async def echo_command(args: argparse.Namespace) -> int:
    """``trioudp echo``: answer every datagram with its own bytes."""
    await _serve_until_exit(
        _echo_handler,
        args.host,
        args.port,
        "Echo server is listening on {host}:{port}",
        protection=Protection.from_args(args),
    )
    return EXIT_OK


async def listen_command(args: argparse.Namespace) -> int:
    """``trioudp listen``: print every datagram, answer nothing; with
    ``--group``, bind every address and join the multicast group."""
    if args.group is None:
        await _serve_until_exit(
            _listen_handler, args.host, args.port, "Listening on {host}:{port}"
        )
    else:
        await _serve_until_exit(
            _listen_handler,
            None,  # group datagrams are addressed to the group, not to a host
            args.port,
            f"Listening to group {args.group} on port {{port}}",
            multicast=Multicast(groups=[args.group], interface=args.interface),
        )
    return EXIT_OK


# ---- the tutorial's client ------------------------------------------------


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
        reply = await client.request(message)
        print(f"Received {_text(reply.data)} from server", flush=True)
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
                print(
                    f"Received {_text(reply.data)} from {_peer_repr(reply)}",
                    flush=True,
                )
    return replies


async def send_command(args: argparse.Namespace) -> int:
    """``trioudp send``: the tutorial's client, with a timeout and retries."""
    if args.broadcast:
        message = args.message.encode()
        if await broadcast_exchange(args.host, args.port, message, wait=args.timeout):
            return EXIT_OK
        print(f"trioudp send: no reply within {args.timeout:g} s", file=sys.stderr)
        return EXIT_FAILURE
    await hello_exchange(
        args.host,
        args.port,
        args.message.encode(),
        backoff=Backoff.within(args.timeout, args.retries + 1),
        attempts=args.retries + 1,
        send_exit=not args.no_exit,
    )
    return EXIT_OK


async def demo_command(args: argparse.Namespace) -> int:
    """``trioudp demo``: the tutorial's server and client over loopback."""
    async with trio.open_nursery() as nursery:
        server: UDPServer = await nursery.start(
            functools.partial(
                _serve_until_exit,
                functools.partial(hello_handler, allow_remote_exit=False),
                "127.0.0.1",
                0,
                "Server is listening on {host}:{port}",
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


# ---- the parser -----------------------------------------------------------


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        msg = f"must be a positive number of seconds, not {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        msg = f"port must be in 0..65535, not {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        msg = f"must be >= 0, not {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        msg = f"must be >= 0, not {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``trioudp`` command."""
    parser = argparse.ArgumentParser(
        prog="trioudp",
        description="UDP server and client tools built on Trio.",
        epilog="Exit codes: 0 success, 1 network failure, 2 bad usage, 130 interrupted.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug messages"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def protection_options(
        sub: argparse.ArgumentParser, *, rate: float, factor: float
    ) -> None:
        sub.add_argument(
            "--rate-limit",
            type=_non_negative_float,
            default=rate,
            metavar="N",
            help="datagrams per second allowed from each /24 (IPv4) or /56 (IPv6),"
            f" bursts of 2N, loopback exempt; 0 = no limit (default {rate:g})",
        )
        sub.add_argument(
            "--amplification-factor",
            type=_non_negative_float,
            default=factor,
            metavar="K",
            help="reply to each peer with at most K times the bytes it sent"
            f" (QUIC's anti-amplification rule); 0 = no limit (default {factor:g})",
        )

    def server_parser(
        name: str, help_text: str, default_host: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--host",
            default=default_host,
            help=f"address to bind (default {default_host})",
        )
        sub.add_argument(
            "--port",
            type=_port,
            default=DEFAULT_PORT,
            help=f"port to bind (default {DEFAULT_PORT}; 0 = any free port)",
        )
        return sub

    serve = server_parser(
        "serve",
        "The tutorial's server: print each datagram, reply 'Hello, client!', stop on 'exit'.",
        "0.0.0.0",
    )
    serve.add_argument(
        "--allow-remote-exit",
        action="store_true",
        help="accept 'exit' from any peer (by default only from loopback)",
    )
    protection_options(serve, rate=50, factor=3)
    serve.set_defaults(func=serve_command)
    echo = server_parser(
        "echo", "Echo server: answer each datagram with its own bytes.", "127.0.0.1"
    )
    protection_options(echo, rate=0, factor=0)
    echo.set_defaults(func=echo_command)
    listen = server_parser(
        "listen", "Print each datagram received; answer nothing.", "127.0.0.1"
    )
    listen.add_argument(
        "--group",
        metavar="GROUP",
        help="join this multicast group (e.g. 239.1.2.3 or ff15::1234) and print"
        " what is sent to it; binds every address (--host is not used)",
    )
    listen.add_argument(
        "--interface",
        metavar="IF",
        help="with --group: the interface to join on, by name or (IPv4) address"
        " (default: the routing table's choice)",
    )
    listen.set_defaults(func=listen_command)

    send = commands.add_parser(
        "send",
        help="The tutorial's client: send a message, print the reply, then send 'exit'.",
        description="Send MESSAGE, print the reply, then send 'exit'. Fails with exit"
        " code 1 if no reply comes within --timeout seconds over all attempts.",
    )
    send.add_argument(
        "message",
        nargs="?",
        default="Hello, server!",
        metavar="MESSAGE",
        help="what to send (default 'Hello, server!')",
    )
    send.add_argument(
        "--host", default="127.0.0.1", help="server address (default 127.0.0.1)"
    )
    send.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"server port (default {DEFAULT_PORT})",
    )
    send.add_argument(
        "--timeout",
        type=_positive_float,
        default=1.0,
        help="seconds to wait for a reply, over all attempts (default 1.0)",
    )
    send.add_argument(
        "--retries",
        type=_non_negative_int,
        default=2,
        help="retransmissions after the first send (default 2)",
    )
    send.add_argument(
        "--no-exit", action="store_true", help="do not send 'exit' afterwards"
    )
    send.add_argument(
        "--broadcast",
        action="store_true",
        help="--host is a broadcast address: send MESSAGE once (SO_BROADCAST) and"
        " print every reply within --timeout; no 'exit' is sent; exit code 1 if"
        " none came",
    )
    send.set_defaults(func=send_command)

    demo = commands.add_parser(
        "demo", help="Run the tutorial's server and client together over loopback."
    )
    demo.set_defaults(func=demo_command)

    from ._bench import add_bench_parser

    add_bench_parser(commands)
    return parser


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first ``kind`` in ``exc``, looking inside exception groups."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``trioudp`` command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    command: Callable[[argparse.Namespace], Awaitable[int]] = args.func
    try:
        return trio.run(command, args)
    except BaseException as exc:
        if _find(exc, KeyboardInterrupt) is not None:
            return EXIT_INTERRUPTED
        failure = _find(exc, TrioUDPError) or _find(exc, OSError)
        if failure is None:
            raise
        print(f"trioudp {args.command}: error: {failure}", file=sys.stderr)
        return EXIT_FAILURE
