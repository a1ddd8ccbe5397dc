"""The argument parser of the ``trioudp`` command, and the checks of what
argparse cannot check alone (``listen --group``).

``docs/reference/cli.rst`` renders :func:`build_parser` (sphinx-argparse).
"""

from __future__ import annotations

import argparse
import ipaddress
import socket as stdlib_socket
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from .._address import numeric_family
from .._interfaces import read_host_addresses
from .._multicast import Multicast
from .._serve import DEFAULT_LOOP_GUARD
from ._argtypes import DEFAULT_HOST, DEFAULT_PORT, destination_port, host, number, port
from ._bench import add_bench_parser
from ._console import DRAIN, LIMIT
from ._quic import DEFAULT_ALPN, DEFAULT_QUIC_PORT, quic_echo_command, quic_send_command
from ._send import demo_command, send_command
from ._serve import echo_command, listen_command, serve_command
from ._terminal import SHOWN

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "MAX_WORKERS",
    "broadcast_addresses",
    "build_parser",
    "check_broadcast",
    "group_settings",
]

#: The most ``--workers`` a command line may ask for.
MAX_WORKERS = 1024
#: Every server that answers defaults to the protection an exposed server
#: needs (``docs/howto/exposing.rst``); loopback peers are exempt from the
#: rate limit, and an echo never exceeds the amplification factor.
DEFAULT_RATE_LIMIT = 50.0
DEFAULT_AMPLIFICATION_FACTOR = 3.0

# Shared argument types (see _argtypes): inf, nan and bad text are usage
# errors. Reuse these (or number(...)) for new options.
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
        epilog="Exit codes: 0 success, 1 network failure (or stdout's reader"
        " gone), 2 bad usage, 130 interrupted (SIGINT), 143 stopped by SIGTERM."
        f" Peer data is printed escaped, at most {SHOWN} bytes of it a line"
        " ('... (N bytes)' after). Output never holds up a command: lines not"
        f" read in time ({LIMIT >> 20} MiB waiting) are dropped and counted, and"
        f" at exit stdout gets {DRAIN:g} s to be read.",
    )
    verbose_help = (
        "log debug messages: what was bound, each datagram's peer and size,"
        " a client's attempts"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose_help)
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def protection_options(sub: argparse.ArgumentParser) -> None:
        factor = DEFAULT_AMPLIFICATION_FACTOR
        rate_limit_option(sub)
        sub.add_argument(
            "--amplification-factor",
            type=_factor_or_off,
            default=factor,
            metavar="K",
            help="reply to each peer with at most K times the bytes it sent"
            f" (QUIC's anti-amplification rule); 0 = no limit (default {factor:g})",
        )

    def loop_guard_option(sub: argparse.ArgumentParser) -> None:
        guard = DEFAULT_LOOP_GUARD
        sub.add_argument(
            "--no-loop-guard",
            dest="loop_guard",
            action="store_false",
            help="turn off the loop guard, which is on by default: a peer that"
            f" sends from a service's port (below {guard.ports_below}) gets at"
            f" most {guard.burst} replies at once, then {guard.rate:g} a second,"
            " so that a loop with another service that answers everything ends"
            " by itself; loopback peers are exempt (default on)",
        )

    def workers_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--workers",
            # Each worker is a process with its own interpreter (~27 MiB).
            type=number(int, minimum=0, maximum=MAX_WORKERS),
            default=1,
            metavar="N",
            help="processes sharing the port (SO_REUSEPORT), supervised:"
            " restarted if they die, killed and restarted if one answers no"
            " check for 1 s (stopped, or blocked); SIGUSR1 prints their summed"
            f" counters; 0 = one per CPU, at most {MAX_WORKERS} (default 1)",
        )

    def server_parser(
        name: str, help_text: str, default_port: int = DEFAULT_PORT
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help_text,
            description=f"{help_text} SIGINT or SIGTERM stops it gracefully;"
            " SIGUSR1 prints its counters, as it does when it stops, with the"
            " lines of output dropped because they were not read in time.",
        )
        sub.add_argument(
            "--host",
            type=host,
            default=DEFAULT_HOST,
            metavar="ADDRESS",
            help="address to bind, without a port (an IPv6 one may be in"
            " brackets, [::1]); 0.0.0.0 for every IPv4 address, :: for every"
            f" IPv4 and IPv6 address (default {DEFAULT_HOST}: this host only)",
        )
        sub.add_argument(
            "--port",
            type=port,
            default=default_port,
            help=f"port to bind (default {default_port}; 0 = any free port)",
        )
        return sub

    def broadcast_option(sub: argparse.ArgumentParser, what: str) -> None:
        sub.add_argument(
            "--broadcast",
            action="store_true",
            help=f"{what} datagrams sent to a broadcast address (a subnet's, or"
            " 255.255.255.255) from sources on the link they came over; needs"
            " --host 0.0.0.0, :: or a broadcast address (default off: they are"
            " dropped, and counted: 'dropped N (broadcast N)')",
        )

    serve = server_parser(
        "serve",
        f"The tutorial's server: print each datagram (at most {SHOWN} bytes of"
        " it), reply 'Hello, client!', stop on 'exit'.",
    )
    serve.add_argument(
        "--allow-remote-exit",
        action="store_true",
        help="accept 'exit' from any peer (by default only from loopback)",
    )
    protection_options(serve)
    broadcast_option(serve, "answer")
    loop_guard_option(serve)
    workers_option(serve)
    serve.set_defaults(func=serve_command)
    echo = server_parser(
        "echo", "Echo server: answer each datagram with its own bytes."
    )
    protection_options(echo)
    broadcast_option(echo, "answer")
    loop_guard_option(echo)
    workers_option(echo)
    echo.set_defaults(func=echo_command)
    listen = server_parser(
        "listen",
        f"Print each datagram received (at most {SHOWN} bytes of it); answer nothing.",
    )
    listen.add_argument(
        "--group",
        metavar="GROUP",
        help="join this multicast group (e.g. 239.1.2.3 or ff15::1234) and print"
        " what is sent to it, from sources on the link, with the address each"
        " datagram was sent to; binds every address (--host is not used) and"
        " shares the port with other listeners (default: no group)",
    )
    listen.add_argument(
        "--interface",
        metavar="IF",
        help="with --group: the interface to join on, by name, index or (IPv4) address"
        " (default: the routing table's choice)",
    )
    broadcast_option(listen, "print, each with the address it was sent to,")
    listen.set_defaults(func=listen_command)

    send = commands.add_parser(
        "send",
        help="The tutorial's client: send a message, print the reply, then send 'exit'.",
        description="Send MESSAGE, print the reply, then send 'exit'. Fails with exit"
        " code 1 if no reply comes within --timeout seconds of the first send,"
        " over all attempts.",
    )
    send.add_argument(
        "message",
        nargs="?",
        default="Hello, server!",
        metavar="MESSAGE",
        help="what to send (default 'Hello, server!')",
    )
    send.add_argument(
        "--host",
        type=host,
        default=DEFAULT_HOST,
        metavar="ADDRESS",
        help=f"server address or name, without a port (default {DEFAULT_HOST})",
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
        metavar="SECONDS",
        help="seconds from the first send until it gives up, over all attempts"
        " (which wait 1, 2, 4... shares of it), at least"
        f" {MIN_TIMEOUT:g} (default 1.0)",
    )
    send.add_argument(
        "--retries",
        type=number(int, minimum=0, maximum=MAX_RETRIES),
        default=2,
        metavar="N",
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

    add_quic_parsers(commands, server_parser, workers_option)

    demo_help = "Run the tutorial's server and client together over loopback."
    demo = commands.add_parser("demo", help=demo_help, description=demo_help)
    demo.set_defaults(func=demo_command)

    add_bench_parser(commands)
    for sub in commands.choices.values():
        # Usage errors found after parsing name the command, as argparse's do.
        sub.set_defaults(command_parser=sub)
        # -v also after the command; SUPPRESS keeps an earlier -v in force.
        sub.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            default=argparse.SUPPRESS,
            help=verbose_help,
        )
    return parser


def rate_limit_option(sub: argparse.ArgumentParser) -> None:
    """``--rate-limit N`` (``_serve.rate_limit_from`` reads it)."""
    rate = DEFAULT_RATE_LIMIT
    sub.add_argument(
        "--rate-limit",
        type=_rate_or_off,
        default=rate,
        metavar="N",
        help="datagrams per second allowed from each /24 (IPv4) or /56 (IPv6),"
        f" bursts of 2N, loopback exempt; 0 = no limit (default {rate:g})",
    )


def add_quic_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    server_parser: Callable[..., argparse.ArgumentParser],
    workers_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    """``quic-echo`` and ``quic-send`` (they need the quic extra)."""
    alpn_help = f"application protocol (ALPN) to speak (default {DEFAULT_ALPN})"
    echo = server_parser(
        "quic-echo",
        "QUIC echo server: answer each stream of each connection with its own"
        " bytes. Without --certificate it makes a self-signed one and says so.",
        DEFAULT_QUIC_PORT,
    )
    echo.add_argument(
        "--certificate",
        type=Path,
        metavar="FILE",
        help="the server's certificate chain, PEM (default: a self-signed"
        " certificate for localhost, 127.0.0.1 and ::1, made at start)",
    )
    echo.add_argument(
        "--key", type=Path, metavar="FILE", help="the certificate's private key, PEM"
    )
    echo.add_argument(
        "--alpn", default=DEFAULT_ALPN, metavar="PROTOCOL", help=alpn_help
    )
    rate_limit_option(echo)
    workers_option(echo)
    echo.set_defaults(func=quic_echo_command)

    send_help = "QUIC client: send MESSAGE on a stream and print the answer."
    send = commands.add_parser("quic-send", help=send_help, description=send_help)
    send.add_argument(
        "message",
        nargs="?",
        default="Hello, QUIC!",
        metavar="MESSAGE",
        help="what to send (default 'Hello, QUIC!')",
    )
    send.add_argument(
        "--host",
        type=host,
        default=DEFAULT_HOST,
        metavar="ADDRESS",
        help=f"server address or name, without a port; also the name the"
        f" certificate must carry (default {DEFAULT_HOST})",
    )
    send.add_argument(
        "--port",
        type=destination_port,
        default=DEFAULT_QUIC_PORT,
        help=f"server port (default {DEFAULT_QUIC_PORT})",
    )
    trust = send.add_mutually_exclusive_group()
    trust.add_argument(
        "--ca",
        type=Path,
        metavar="FILE",
        help="trust the certificates in FILE (PEM), such as the self-signed one"
        " quic-echo prints (default: the system's certificate authorities)",
    )
    trust.add_argument(
        "--insecure",
        action="store_true",
        help="do not check the server's certificate (tests only)",
    )
    send.add_argument(
        "--alpn", default=DEFAULT_ALPN, metavar="PROTOCOL", help=alpn_help
    )
    send.add_argument(
        "--timeout",
        type=number(float, above=0),
        default=5.0,
        metavar="SECONDS",
        help="give up after this many seconds, handshake included (default 5)",
    )
    send.set_defaults(func=quic_send_command)


def group_settings(group: str, interface_text: str | None) -> Multicast:
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


#: Broadcast addresses every Linux host has: the limited broadcast, and
#: loopback's (``ip route show table local``).
_ALWAYS_BROADCAST = frozenset({"255.255.255.255", "127.255.255.255"})


def broadcast_addresses() -> frozenset[str]:
    """This host's IPv4 broadcast addresses: its subnets' (where the system
    tells, Linux) and those every host has."""
    try:
        table = read_host_addresses()
    except OSError:
        table = None
    return _ALWAYS_BROADCAST | (table.broadcast if table is not None else frozenset())


def check_broadcast(
    host_text: str, broadcast: bool, broadcasts: Collection[str]
) -> None:
    """Refuse (ValueError, saying what to write) a server's ``--host`` and
    ``--broadcast`` that cannot work together: ``--broadcast`` on an
    address that receives no broadcast (one of this host's unicast
    addresses, an IPv6 one), or a broadcast address (in ``broadcasts``)
    without ``--broadcast``, where every datagram would be dropped. Host
    names are not checked.

    Example:
        >>> check_broadcast("0.0.0.0", True, {"10.9.0.255"})
        >>> check_broadcast("127.0.0.1", True, {"10.9.0.255"})
        Traceback (most recent call last):
        ...
        ValueError: --broadcast needs --host 0.0.0.0, :: or a broadcast address, not 127.0.0.1: a socket bound to one of this host's addresses receives no datagram sent to a broadcast address
    """
    try:
        address = ipaddress.ip_address(host_text.split("%", 1)[0])
    except ValueError:
        return
    if address.is_unspecified:
        return
    is_broadcast = address.version == 4 and str(address) in broadcasts
    if broadcast and not is_broadcast:
        why = (
            "IPv6 has no broadcast (:: serves IPv4 too)"
            if address.version == 6
            else "a socket bound to one of this host's addresses receives no"
            " datagram sent to a broadcast address"
        )
        msg = (
            f"--broadcast needs --host 0.0.0.0, :: or a broadcast address,"
            f" not {host_text}: {why}"
        )
        raise ValueError(msg)
    if is_broadcast and not broadcast:
        msg = (
            f"--host {host_text} is a broadcast address: every datagram sent to"
            " it would be dropped; add --broadcast to take them, or bind"
            " 0.0.0.0 or one of this host's addresses"
        )
        raise ValueError(msg)
