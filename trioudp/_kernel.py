"""What the kernel reports about a UDP socket besides datagrams: per-datagram errors, the error queue, drops.

Also the non-blocking twin of a real socket's descriptor, through which the
fast path (``_inbox``, ``_outbox``, ``_fastpath``) calls the kernel without a
trip through Trio's scheduler. Plain system calls: no Trio here.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import socket as stdlib_socket
import stat
import struct
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import trio

__all__ = [
    "PENDING_ICMP_ERRNOS",
    "TRANSIENT_ERRNOS",
    "KernelDrops",
    "count_error",
    "drain_error_queue",
    "kernel_socket",
    "stdlib_twin",
]

logger = logging.getLogger("trioudp")

#: Errors that concern one datagram (often an ICMP message about an earlier
#: one), not the socket: a server counts them and carries on.
TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNREFUSED",
        "ECONNRESET",
        "EHOSTUNREACH",
        "ENETUNREACH",
        "EHOSTDOWN",
        "ENETDOWN",
        "EMSGSIZE",
        "ENOBUFS",
        "ENOMEM",
        "EPERM",
        "EACCES",
        "ETIMEDOUT",
        "EPROTO",
        "EINTR",
    )
    if hasattr(errno, name)
)

#: ICMP-reported errors that Linux hands to the next send on the socket, which
#: then does not transmit: the send is worth repeating once.
PENDING_ICMP_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH}
)

#: Seconds a reading of the kernel's drop counter is reused.
KERNEL_DROPS_REFRESH = 0.1

#: Socket error queue (``IP_RECVERR``): most entries taken per drain, the
#: ``recvmsg`` flag and ancillary buffer, the (level, type) pairs that carry a
#: ``struct sock_extended_err`` (whose first fields are ``ee_errno`` (u32) and
#: ``ee_origin`` (u8)), and the origins that are errors: local, ICMP, ICMPv6.
_ERRQUEUE_BATCH = 256
_MSG_ERRQUEUE: int | None = getattr(stdlib_socket, "MSG_ERRQUEUE", None)
_ERRQUEUE_ANCILLARY = 512
_RECVERR_CMSGS = frozenset(
    {
        (stdlib_socket.IPPROTO_IP, getattr(stdlib_socket, "IP_RECVERR", 11)),
        (stdlib_socket.IPPROTO_IPV6, getattr(stdlib_socket, "IPV6_RECVERR", 25)),
    }
)
_EXTENDED_ERR = struct.Struct("=IB")
_ERR_ORIGINS = frozenset({1, 2, 3})


def kernel_socket(sock: trio.socket.SocketType) -> bool:
    """Whether ``sock`` has a kernel socket behind it (a virtual one has
    not). Takes no descriptor, so it answers also when none is free."""
    try:
        fd = sock.fileno()
        return isinstance(fd, int) and fd >= 0 and stat.S_ISSOCK(os.fstat(fd).st_mode)
    except (NotImplementedError, OSError, ValueError):
        return False


def stdlib_twin(sock: trio.socket.SocketType) -> stdlib_socket.socket | None:
    """A non-blocking stdlib socket on a duplicate of ``sock``'s descriptor.

    Returns None for socket objects without a kernel descriptor (virtual
    ones), and for a real one whose descriptor cannot be duplicated (no
    descriptor free: ``EMFILE``), logging a warning: that socket is then
    served on the plain path, screened all the same (``_inbox``).
    """
    if not kernel_socket(sock):
        return None
    try:
        fd = os.dup(sock.fileno())
    except OSError as exc:
        logger.warning(
            "no fast path for %r: its descriptor could not be duplicated (%s);"
            " serving it on the plain path, screened as on the fast path",
            sock,
            exc,
        )
        return None
    twin = stdlib_socket.socket(sock.family, sock.type, sock.proto, fd)
    twin.setblocking(False)
    return twin


def _errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def count_error(
    table: dict[str, int], exc: OSError, where: object, peer: object
) -> None:
    """Count a per-datagram error in ``table`` by errno name; log it (on
    ``where``, a socket) when its count reaches a power of two."""
    name = _errno_name(exc)
    count = table[name] = table.get(name, 0) + 1
    # Powers of two keep a flood of ICMP errors from flooding the log.
    if count & (count - 1) == 0:
        logger.debug("UDP %s on %r (peer %r), seen %d times", name, where, peer, count)


def drain_error_queue(
    fast: stdlib_socket.socket, table: dict[str, int], where: object
) -> int:
    """Take the errors queued on a socket that has
    ``IP_RECVERR``/``IPV6_RECVERR`` set (``MSG_ERRQUEUE``), count each in
    ``table`` by errno, and return how many there were.

    While that queue holds anything the socket polls as ready (EPOLLERR),
    so a receiver that never drained it would spin. Timestamping and
    zero-copy notices, which share the queue, are taken but not counted.
    At most ``_ERRQUEUE_BATCH`` are taken per call; the rest keep the
    socket ready and are taken on the next call.
    """
    if _MSG_ERRQUEUE is None:
        return 0
    drained = 0
    for _ in range(_ERRQUEUE_BATCH):
        try:
            _, ancillary, _, offender = fast.recvmsg(
                0, _ERRQUEUE_ANCILLARY, _MSG_ERRQUEUE
            )
        except OSError:  # BlockingIOError: empty; anything else: give up
            break
        for level, kind, payload in ancillary:
            if (level, kind) not in _RECVERR_CMSGS or len(payload) < 8:
                continue
            code, origin = _EXTENDED_ERR.unpack_from(payload)
            if origin in _ERR_ORIGINS and code:
                drained += 1
                count_error(table, OSError(code, os.strerror(code)), where, offender)
    return drained


def _read_kernel_drops(sock: stdlib_socket.socket) -> int | None:
    """The ``drops`` column of this socket's line in /proc/net/udp{,6}."""
    try:
        inode = str(os.fstat(sock.fileno()).st_ino)
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            with open(table) as lines:
                for line in lines:
                    fields = line.split()
                    if len(fields) > 12 and fields[9] == inode:
                        return int(fields[-1])
    except OSError:
        return None
    return None


class KernelDrops:
    """Datagrams the kernel dropped for a socket (receive buffer full), read
    from ``/proc/net/udp`` and ``/proc/net/udp6`` on Linux at most every
    ``KERNEL_DROPS_REFRESH`` seconds (the tables can be long)."""

    def __init__(self, fast: stdlib_socket.socket | None) -> None:
        self._fast = fast
        self._value: int | None = None
        self._read_at = -math.inf
        #: What :meth:`keep` read, reported once the socket is closed.
        self.at_close: int | None = None

    def read(self) -> int | None:
        """The count (None on other systems and for virtual sockets)."""
        if self._fast is None:
            return None
        now = time.monotonic()
        if now - self._read_at >= KERNEL_DROPS_REFRESH:
            self._read_at = now
            self._value = _read_kernel_drops(self._fast)
        return self._value

    def keep(self) -> None:
        """Take a fresh reading to report after the socket closes (reading
        /proc costs a little, so only servers ask for it)."""
        self._read_at = -math.inf
        self.at_close = self.read()
