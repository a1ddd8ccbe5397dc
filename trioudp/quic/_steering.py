"""Worker routing: connection IDs that name the worker which issued them, and
the classic BPF program that steers each datagram to that worker's socket.
No I/O.

Several processes serve one port with ``SO_REUSEPORT``; by itself the
kernel picks a socket by a hash of the source address and port, which moves
a connection to another process when its client's port changes (NAT
rebinding) or it migrates. QUIC names the connection in every packet
instead: the destination connection ID (DCID), which the server chose. So:

* Worker ``i`` of ``n`` issues connection IDs whose first byte is ``i``
  modulo ``n`` (the rest random, and the first byte's high part too):
  :func:`worker_connection_id`.
* A classic BPF program attached to the port's reuseport group
  (``SO_ATTACH_REUSEPORT_CBPF``; no privilege needed) returns, for each
  datagram, the first DCID byte modulo ``n``: the index of the socket in
  the group, which is worker ``i``'s when the sockets joined the group in
  worker order and never leave it (the supervisor binds and holds them:
  ``trioudp.WorkerSockets``). :func:`steering_program`.

The one rule also routes what the client chose: its first Initials (and
their retransmissions, and 0-RTT packets) carry a DCID it drew at random,
whose first byte modulo ``n`` is the same for every packet of that flight;
the worker found that way answers with connection IDs of its own, which
route back to it. A Retry's source connection ID is issued the same way, so
the Initial that returns the token reaches the worker that can check it.

The program reads only the first DCID byte: at offset 1 of a short-header
packet (its length is the server's own choice, at least 1 byte), at offset
6 of a long-header one (after the flags, version and DCID length). A
datagram too short for either, or a long header with an empty DCID, makes
the program return an index past the group, and the kernel then falls back
to its hash.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "MAX_WORKERS",
    "steering_program",
    "worker_connection_id",
    "worker_connection_ids",
]

#: One byte of the connection ID names the worker.
MAX_WORKERS = 256

# Classic BPF instruction codes (linux/filter.h).
_LD_LEN = 0x80  # A = length of the packet (here: the UDP payload)
_LDB_ABS = 0x30  # A = the byte at offset k
_JGE_K = 0x35  # if A >= k
_JSET_K = 0x45  # if A & k
_JEQ_K = 0x15  # if A == k
_MOD_K = 0x94  # A %= k
_RET_A = 0x16  # return A
_RET_K = 0x06  # return k
#: Returned for a datagram that names no worker: past the end of any group,
#: so the kernel picks a socket by its hash.
_UNSTEERED = 0xFFFF_FFFF
#: Shortest datagram the program reads: a long header's DCID byte is at 6.
_SHORTEST = 7
_LONG_HEADER = 0x80
_SHORT_DCID = 1
_LONG_DCID_LENGTH = 5
_LONG_DCID = 6


def _check_count(count: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int):
        msg = f"the worker count must be an int, not {count!r}"
        raise TypeError(msg)
    if not 1 <= count <= MAX_WORKERS:
        msg = (
            f"QUIC worker routing takes 1..{MAX_WORKERS} workers (one byte of"
            f" the connection ID names the worker), not {count}"
        )
        raise ValueError(msg)


def worker_connection_id(index: int, count: int, length: int) -> bytes:
    """A random connection ID of ``length`` bytes that routes to worker
    ``index`` of ``count``: its first byte is ``index`` modulo ``count``.

    Example:
        >>> cid = worker_connection_id(1, 2, 8)
        >>> len(cid), cid[0] % 2
        (8, 1)
    """
    _check_count(count)
    if not 0 <= index < count:
        msg = f"worker index must be in 0..{count - 1}, not {index!r}"
        raise ValueError(msg)
    if length < 1:
        msg = f"a routed connection ID needs at least 1 byte, not {length}"
        raise ValueError(msg)
    cid = bytearray(os.urandom(length))
    # The high part of the first byte stays random: an observer learns the
    # worker and nothing else from it.
    cid[0] = index + count * (cid[0] % (MAX_WORKERS // count))
    return bytes(cid)


def worker_connection_ids(index: int, count: int, length: int) -> Callable[[], bytes]:
    """A generator of :func:`worker_connection_id` for one worker, checked
    once.

    Example:
        >>> new_cid = worker_connection_ids(0, 4, 8)
        >>> new_cid()[0] % 4
        0
    """
    worker_connection_id(index, count, length)  # the checks, before any use

    def new_cid() -> bytes:
        return worker_connection_id(index, count, length)

    return new_cid


def steering_program(count: int) -> list[tuple[int, int, int, int]]:
    """The classic BPF program that steers QUIC datagrams to ``count``
    workers: ``(code, jt, jf, k)`` instructions, as ``struct sock_filter``.

    It returns the first byte of the destination connection ID modulo
    ``count``: the index of the socket in the port's reuseport group.

    Example:
        >>> len(steering_program(2))
        13
    """
    _check_count(count)
    return [
        (_LD_LEN, 0, 0, 0),
        (_JGE_K, 0, 10, _SHORTEST),  # too short: the kernel's hash
        (_LDB_ABS, 0, 0, 0),
        (_JSET_K, 3, 0, _LONG_HEADER),
        # A short header: the DCID follows the first byte.
        (_LDB_ABS, 0, 0, _SHORT_DCID),
        (_MOD_K, 0, 0, count),
        (_RET_A, 0, 0, 0),
        # A long header: flags, version (4), DCID length, DCID.
        (_LDB_ABS, 0, 0, _LONG_DCID_LENGTH),
        (_JEQ_K, 3, 0, 0),  # no DCID: the kernel's hash
        (_LDB_ABS, 0, 0, _LONG_DCID),
        (_MOD_K, 0, 0, count),
        (_RET_A, 0, 0, 0),
        (_RET_K, 0, 0, _UNSTEERED),
    ]
