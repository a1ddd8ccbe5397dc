"""What the command line prints, other than peer data, and the exit codes it returns.

Exit codes: 0 success; 1 a network failure (no reply, peer unreachable, bind
failure, bad address); 2 bad usage; 130 interrupted by Ctrl-C (SIGINT); 143
stopped by SIGTERM. A server stopped by either signal shuts down gracefully
first.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .._address import SocketAddress
    from .._datagram import Datagram
    from .._server import ServerStats

__all__ = [
    "DROPPED_REASONS",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "RARE_COUNTS",
    "WITHHELD_REASONS",
    "address_text",
    "error_text",
    "peer_repr",
    "plural",
    "served_addresses",
    "stats_line",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def plural(count: int, noun: str) -> str:
    """``1 byte``, ``2 bytes``: a count with its noun agreeing.

    Example:
        >>> plural(1, "attempt"), plural(0, "datagram")
        ('1 attempt', '0 datagrams')
    """
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def address_text(address: SocketAddress) -> str:
    """``host:port``, with an IPv6 host in brackets (``[::]:12345``)."""
    host, port_number = address[0], address[1]
    return f"[{host}]:{port_number}" if ":" in host else f"{host}:{port_number}"


def served_addresses(addresses: Iterable[SocketAddress]) -> str:
    """Every address served, for a banner: ``0.0.0.0:12345 and [::]:12345``."""
    return " and ".join(address_text(address) for address in addresses)


def peer_repr(datagram: Datagram) -> str:
    return repr(tuple(datagram.peer[:2]))


#: Why received datagrams were dropped (the parts of ``ServerStats.dropped``),
#: as the counters line names them.
DROPPED_REASONS = {
    "dropped_queue_full": "queue full",
    "dropped_shutdown": "shutdown",
    "dropped_rate_limited": "rate limited",
    "dropped_denied": "denied",
    "dropped_port_zero": "source port 0",
    "dropped_forged": "forged source",
    "dropped_broadcast": "broadcast",
    "dropped_multicast": "multicast",
}
#: Why replies were withheld (they count replies, not received datagrams).
WITHHELD_REASONS = {
    "dropped_amplification": "amplification guard",
    "dropped_loop": "loop guard",
}
#: Counts the line shows only when they are not 0 (the CLI's servers never
#: set what makes them grow but a library user's may).
RARE_COUNTS = {
    "handler_timeouts": "handler timeouts",
    "dropped_oversize": "oversize",
    "rate_limited_logged": "over the rate limit (logged only)",
}


def stats_line(total: ServerStats, workers: int | None = None) -> str:
    """One line of a server's counters, or of ``workers`` workers' summed.

    ``dropped`` counts the received datagrams the server dropped, followed
    by each reason that is not 0 (see :data:`DROPPED_REASONS`); ``replies
    withheld`` the replies the amplification or loop guard held back;
    ``kernel drops`` what the kernel dropped before the server saw it (its
    receive buffer was full; shown where the system tells). Handler
    timeouts, oversize datagrams, rate-limit overruns that were only logged,
    and receive and send errors (by errno) appear when they are not 0.

    Example:
        >>> from trioudp import ServerStats
        >>> stats_line(ServerStats(received=3, handled=3, replied=3, kernel_drops=0), 2)
        'totals of 2 workers: received 3, handled 3, replied 3, dropped 0, replies withheld 0, handler errors 0, kernel drops 0'
        >>> stats_line(ServerStats(received=3, handled=1, dropped_forged=2, dropped_loop=1))
        'totals: received 3, handled 1, replied 0, dropped 2 (forged source 2), replies withheld 1 (loop guard 1), handler errors 0'
    """
    whose = "totals" if workers is None else f"totals of {plural(workers, 'worker')}"
    withheld = total.dropped_amplification + total.dropped_loop
    parts = [
        f"received {total.received}",
        f"handled {total.handled}",
        f"replied {total.replied}",
        f"dropped {total.dropped}{_reasons(total, DROPPED_REASONS)}",
        f"replies withheld {withheld}{_reasons(total, WITHHELD_REASONS)}",
        f"handler errors {total.handler_errors}",
    ]
    parts += [
        f"{label} {getattr(total, name)}"
        for name, label in RARE_COUNTS.items()
        if getattr(total, name)
    ]
    for label, errors in (
        ("receive errors", total.receive_errors),
        ("send errors", total.send_errors),
    ):
        if errors:
            each = ", ".join(
                f"{code} {count}" for code, count in sorted(errors.items())
            )
            parts.append(f"{label} {sum(errors.values())} ({each})")
    if total.kernel_drops is not None:
        parts.append(f"kernel drops {total.kernel_drops}")
    return f"{whose}: {', '.join(parts)}"


def _reasons(total: ServerStats, labels: dict[str, str]) -> str:
    """`` (forged source 2, loop guard 1)``: each count not 0, else nothing."""
    counts = [
        f"{label} {getattr(total, name)}"
        for name, label in labels.items()
        if getattr(total, name)
    ]
    return f" ({', '.join(counts)})" if counts else ""


def error_text(
    error: BaseException, *, host: str | None = None, group: str | None = None
) -> str:
    """An error as the command line reports it, with what to do where the
    system's words alone do not say (``host``: the peer a client sent to;
    ``group``: the multicast group a listener joined).

    Example:
        >>> error_text(PermissionError(errno.EACCES, "Permission denied"), host="10.0.0.255")
        'cannot send to 10.0.0.255: Permission denied (is it a broadcast address? add --broadcast to send to one)'
    """
    code = getattr(error, "errno", None)
    strerror = getattr(error, "strerror", None) or str(error)
    if host is not None and code == errno.EACCES:
        return (
            f"cannot send to {host}: {strerror} (is it a broadcast address?"
            " add --broadcast to send to one)"
        )
    if group is not None and code == errno.ENODEV:
        return (
            f"cannot join {group}: {strerror} (no route picks an interface for"
            " the group: name one with --interface, or add a route for it)"
        )
    return str(error)
