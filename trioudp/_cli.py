"""The ``trioudp`` command line: the socket tutorial's server and client, done safely.

Exit codes: 0 success; 1 a network failure (no reply, peer unreachable, bind
failure, bad address); 2 bad usage; 130 interrupted by Ctrl-C (SIGINT); 143
stopped by SIGTERM. A server stopped by either signal shuts down gracefully
first.

Peer data is printed only through :func:`printable` (no control character
reaches the terminal).
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import logging
import signal
import socket as stdlib_socket
import sys
from typing import TYPE_CHECKING

import attrs
import trio

from . import __version__
from ._address import is_loopback, numeric_family
from ._argtypes import destination_port, number, port
from ._backoff import Backoff
from ._cli_workers import supervise
from ._client import open_udp_client
from ._errors import TrioUDPError
from ._limits import RateLimit
from ._multicast import Multicast
from ._responder import Responder
from ._server import UDPServer, open_udp_sockets, serve_udp_sockets
from ._socket import open_udp_socket
from ._terminal import printable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Sequence

    from ._address import SocketAddress
    from ._datagram import Datagram
    from ._workers import Worker

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILURE = 1
#: The most ``--workers`` a command line may ask for.
MAX_WORKERS = 1024
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

DEFAULT_PORT = 12345
GRACE = 2.0


def _text(data: bytes) -> str:
    """Peer bytes as text for printing: see :func:`printable`."""
    return printable(data)


def plural(count: int, noun: str) -> str:
    """``1 byte``, ``2 bytes``: a count with its noun agreeing.

    Example:
        >>> plural(1, "attempt"), plural(0, "datagram")
        ('1 attempt', '0 datagrams')
    """
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _address_text(address: SocketAddress) -> str:
    """``host:port``, with an IPv6 host in brackets (``[::]:12345``)."""
    host, port_number = address[0], address[1]
    return f"[{host}]:{port_number}" if ":" in host else f"{host}:{port_number}"


def served_addresses(addresses: Iterable[SocketAddress]) -> str:
    """Every address served, for a banner: ``0.0.0.0:12345 and [::]:12345``."""
    return " and ".join(_address_text(address) for address in addresses)


def _peer_repr(datagram: Datagram) -> str:
    return repr(tuple(datagram.peer[:2]))


# ---- the tutorial's server ------------------------------------------------


def hello_handler(
    exit_requested: trio.Event, *, allow_remote_exit: bool
) -> Callable[[Datagram], Awaitable[None]]:
    """The tutorial server's handler: print, answer ``Hello, client!``, stop on ``exit``."""

    async def handler(datagram: Datagram) -> None:
        print(
            f"Received {_text(datagram.data)} from {_peer_repr(datagram)}", flush=True
        )
        if datagram.data.strip().lower() != b"exit":
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


async def _watch_signals(
    exit_requested: trio.Event,
    received: list[int],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            print(f"Received {name}, shutting down...", file=sys.stderr, flush=True)
            received.append(signum)
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
    worker: Worker | None = None,
    multicast: Multicast | None = None,
    reuse_port: bool = False,
    task_status: trio.TaskStatus[UDPServer] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Serve with the handler ``handler_for(exit_requested)`` builds, until
    the handler or a signal sets ``exit_requested``; then stop gracefully.

    ``banner`` is formatted with ``address`` (every address served, such as
    ``0.0.0.0:12345 and [::]:12345``), ``host`` and ``port``. Returns the
    exit code: 0, or 128 + the number of the signal that stopped it.

    In a ``--workers`` worker the port is shared (``SO_REUSEPORT``) and the
    supervisor prints the banner and watches signals.
    """
    exit_requested = trio.Event()
    signals: list[int] = []
    protection = protection or Protection()
    sockets = await open_udp_sockets(
        port, host, multicast=multicast, reuse_port=reuse_port or worker is not None
    )
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
                # Before the banner: a signal sent once it is out stops gracefully.
                await nursery.start(_watch_signals, exit_requested, signals)
            address = served_addresses(sock.local_address for sock in sockets)
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
    return 128 + signals[0] if signals else EXIT_OK


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
    banner = "Server is listening on {address}"
    if args.workers != 1:
        return await supervise(args, banner, GRACE)
    return await _serve_until_exit(
        functools.partial(hello_handler, allow_remote_exit=args.allow_remote_exit),
        args.host,
        args.port,
        banner,
        on_exit="Server exiting...",
        protection=Protection.from_args(args),
        worker=getattr(args, "worker", None),
    )


def _echo(datagram: Datagram) -> bytes:
    return datagram.data


def _echo_handler(exit_requested: trio.Event) -> Responder:
    # The fastest correct form: an echo needs no waiting.
    return Responder(_echo)


def _listen_handler(
    exit_requested: trio.Event,
) -> Callable[[Datagram], Awaitable[None]]:
    async def listen(datagram: Datagram) -> None:
        print(
            f"{_peer_repr(datagram)} {plural(len(datagram.data), 'byte')}:"
            f" {_text(datagram.data)}",
            flush=True,
        )

    return listen


async def echo_command(args: argparse.Namespace) -> int:
    """``trioudp echo``: answer every datagram with its own bytes."""
    banner = "Echo server is listening on {address}"
    if args.workers != 1:
        return await supervise(args, banner, GRACE)
    return await _serve_until_exit(
        _echo_handler,
        args.host,
        args.port,
        banner,
        protection=Protection.from_args(args),
        worker=getattr(args, "worker", None),
    )


async def listen_command(args: argparse.Namespace) -> int:
    """``trioudp listen``: print every datagram, answer nothing; with
    ``--group``, bind every address and join the multicast group."""
    if args.group is None:
        return await _serve_until_exit(
            _listen_handler, args.host, args.port, "Listening on {address}"
        )
    multicast: Multicast = args.multicast
    return await _serve_until_exit(
        _listen_handler,
        None,  # group datagrams are addressed to the group, not to a host
        args.port,
        f"Listening to group {args.group} on port {{port}}",
        multicast=multicast,
        # Several listeners of groups may share a port, as multicast
        # receivers conventionally do.
        reuse_port=True,
    )


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


# ---- the parser -----------------------------------------------------------


# Shared argument types (see _argtypes): inf, nan and bad text are usage
# errors. Reuse these (or number(...)) for new options.
_port = port
#: A rate limit's N: bursts are 2N, which must stay a finite float.
_rate_or_off = number(float, above=0, maximum=1e9, zero_is_off=True)
#: An amplification factor: 0 turns it off, else QUIC's rule needs >= 1.
_factor_or_off = number(float, minimum=1, zero_is_off=True)
#: send --retries and --timeout: Backoff.within halves the first wait per
#: retry, and the first wait must stay a normal float.
MAX_RETRIES = 100
MIN_TIMEOUT = 0.001


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``trioudp`` command."""
    parser = argparse.ArgumentParser(
        prog="trioudp",
        description="UDP server and client tools built on Trio.",
        epilog="Exit codes: 0 success, 1 network failure, 2 bad usage,"
        " 130 interrupted (SIGINT), 143 stopped by SIGTERM.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug messages"
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def protection_options(
        sub: argparse.ArgumentParser, *, rate: float, factor: float
    ) -> None:
        sub.add_argument(
            "--rate-limit",
            type=_rate_or_off,
            default=rate,
            metavar="N",
            help="datagrams per second allowed from each /24 (IPv4) or /56 (IPv6),"
            f" bursts of 2N, loopback exempt; 0 = no limit (default {rate:g})",
        )
        sub.add_argument(
            "--amplification-factor",
            type=_factor_or_off,
            default=factor,
            metavar="K",
            help="reply to each peer with at most K times the bytes it sent"
            f" (QUIC's anti-amplification rule); 0 = no limit (default {factor:g})",
        )

    def workers_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--workers",
            # Each worker is a process with its own interpreter (~27 MiB).
            type=number(int, minimum=0, maximum=MAX_WORKERS),
            default=1,
            metavar="N",
            help="processes sharing the port (SO_REUSEPORT), supervised and"
            " restarted if they die; SIGUSR1 prints their summed counters;"
            f" 0 = one per CPU, at most {MAX_WORKERS} (default 1)",
        )

    def server_parser(
        name: str, help_text: str, default_host: str | None
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--host",
            default=default_host,
            help="address to bind (default "
            + (default_host or "every address, IPv4 and IPv6, as serve_udp")
            + ")",
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
        None,
    )
    serve.add_argument(
        "--allow-remote-exit",
        action="store_true",
        help="accept 'exit' from any peer (by default only from loopback)",
    )
    protection_options(serve, rate=50, factor=3)
    workers_option(serve)
    serve.set_defaults(func=serve_command)
    echo = server_parser(
        "echo", "Echo server: answer each datagram with its own bytes.", "127.0.0.1"
    )
    protection_options(echo, rate=0, factor=0)
    workers_option(echo)
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
        help="with --group: the interface to join on, by name, index or (IPv4) address"
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
        type=destination_port,
        default=DEFAULT_PORT,
        help=f"server port (default {DEFAULT_PORT})",
    )
    send.add_argument(
        "--timeout",
        type=number(float, minimum=MIN_TIMEOUT),
        default=1.0,
        help="seconds to wait for a reply, over all attempts, at least"
        f" {MIN_TIMEOUT:g} (default 1.0)",
    )
    send.add_argument(
        "--retries",
        type=number(int, minimum=0, maximum=MAX_RETRIES),
        default=2,
        help=f"retransmissions after the first send, 0..{MAX_RETRIES} (default 2)",
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
    for sub in commands.choices.values():
        # -v also after the command; SUPPRESS keeps an earlier -v in force.
        sub.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            default=argparse.SUPPRESS,
            help="log debug messages",
        )
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


def _group_settings(group: str, interface_text: str | None) -> Multicast:
    """``listen --group``'s settings, checked (ValueError naming the value):
    a multicast group, an interface by name, index or IPv4 address."""
    try:
        multicast_group = ipaddress.ip_address(group).is_multicast
    except ValueError:
        multicast_group = False
    if not multicast_group:
        msg = f"--group must be a multicast address (224.0.0.0/4 or ff00::/8), not {group!r}"
        raise ValueError(msg)
    interface: str | int | None = interface_text
    if interface_text is not None:
        if interface_text.isdigit():
            interface = int(interface_text)
        elif numeric_family(interface_text) is None:
            try:
                stdlib_socket.if_nametoindex(interface_text)
            except OSError:
                msg = f"--interface: no network interface is named {interface_text!r}"
                raise ValueError(msg) from None
    return Multicast(groups=[group], interface=interface)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``trioudp`` command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "group", None) is not None:
        try:
            args.multicast = _group_settings(args.group, args.interface)
        except (TypeError, ValueError) as exc:
            parser.error(str(exc))
    args.argv = list(sys.argv[1:] if argv is None else argv)
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
