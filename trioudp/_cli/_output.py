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
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
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


def stats_line(total: ServerStats, workers: int | None = None) -> str:
    """One line of a server's counters, or of ``workers`` workers' summed.

    ``dropped`` counts what the server dropped (rate limit, queue full, ...),
    ``kernel drops`` what the kernel dropped before the server saw it (its
    receive buffer was full; shown where the system tells).

    Example:
        >>> from trioudp import ServerStats
        >>> stats_line(ServerStats(received=3, handled=3, replied=3, kernel_drops=0), 2)
        'totals of 2 workers: received 3, handled 3, replied 3, dropped 0, handler errors 0, kernel drops 0'
        >>> stats_line(ServerStats(received=1, handled=1))
        'totals: received 1, handled 1, replied 0, dropped 0, handler errors 0'
    """
    whose = "totals" if workers is None else f"totals of {plural(workers, 'worker')}"
    line = (
        f"{whose}: received {total.received},"
        f" handled {total.handled}, replied {total.replied},"
        f" dropped {total.dropped}, handler errors {total.handler_errors}"
    )
    if total.kernel_drops is not None:
        line += f", kernel drops {total.kernel_drops}"
    return line


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
