"""Sockets a supervisor binds for its workers: one per worker (and address),
bound in worker order and held for the pool's life, and the classic BPF
program that steers the port's datagrams among them.

Linux keeps the sockets that share a port with ``SO_REUSEPORT`` in a group,
in the order they joined it; a program attached with
``SO_ATTACH_REUSEPORT_CBPF`` picks a socket by its index there. When a socket
leaves, the last one takes its place, and a newcomer joins at the end: if
each worker bound its own socket, a worker's restart would move its index
and another worker's. Here the supervisor binds worker 0's socket first,
then worker 1's..., and keeps its copies open while the pool runs: a worker
that dies leaves its socket in the group (datagrams wait in its buffer) and
the worker that replaces it receives the same socket, so worker ``i`` is
index ``i`` for good.
"""

from __future__ import annotations

import ctypes
import socket as stdlib_socket
import struct
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import attrs

from .._open import open_udp_sockets

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from .._socket import UDPSocket

__all__ = [
    "WorkerSockets",
    "attach_reuseport_program",
    "bind_worker_sockets",
    "descriptors",
    "held_sockets",
]

#: linux/asm-generic/socket.h (the socket module names it from Python 3.13
#: on some builds only).
SO_ATTACH_REUSEPORT_CBPF = getattr(stdlib_socket, "SO_ATTACH_REUSEPORT_CBPF", 51)
#: Classic BPF programs are at most this long (linux/filter.h, BPF_MAXINSNS).
MAX_INSTRUCTIONS = 4096


@attrs.frozen(kw_only=True)
class WorkerSockets:
    """Have :func:`run_workers`'s supervisor bind the workers' sockets itself,
    so that each keeps its place in the port's ``SO_REUSEPORT`` group
    through restarts, and optionally steer datagrams among them.

    Each worker serves ``worker.sockets``. Linux.

    Attributes:
        host: the address to bind; None binds every IPv4 and (where the host
            has IPv6) every IPv6 address.
        steering: ``steering(workers)`` returns a classic BPF program as
            ``(code, jt, jf, k)`` instructions, attached to the group with
            ``SO_ATTACH_REUSEPORT_CBPF``: for each datagram (its UDP payload
            at offset 0) it returns the index of the worker that gets it;
            an index past the last worker leaves the choice to the kernel's
            hash. None: the kernel's hash of the source address and port.
            :func:`trioudp.quic.worker_sockets` sets the QUIC one.
        receive_buffer: ``SO_RCVBUF`` to ask for, for each socket.

    Example:
        >>> WorkerSockets(host="127.0.0.1").host
        '127.0.0.1'
    """

    host: str | None = None
    steering: Callable[[int], Sequence[tuple[int, int, int, int]]] | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(attrs.validators.is_callable()),
    )
    receive_buffer: int | None = None


def attach_reuseport_program(
    sock: UDPSocket, program: Sequence[tuple[int, int, int, int]]
) -> None:
    """Attach a classic BPF ``program`` to the reuseport group of ``sock``
    (``SO_ATTACH_REUSEPORT_CBPF``): it replaces the group's program, for
    every socket in the group.

    Raises:
        ValueError: the program is empty, too long or not instructions.
        OSError: the kernel refused it (not Linux, or an invalid program).

    Example::

        attach_reuseport_program(sock, [(0x06, 0, 0, 0)])  # always socket 0
    """
    if not 0 < len(program) <= MAX_INSTRUCTIONS:
        msg = f"a classic BPF program has 1..{MAX_INSTRUCTIONS} instructions, not {len(program)}"
        raise ValueError(msg)
    try:
        code = b"".join(struct.pack("=HBBI", *instruction) for instruction in program)
    except (struct.error, TypeError) as exc:
        msg = f"not (code, jt, jf, k) instructions: {exc}"
        raise ValueError(msg) from None
    filters = ctypes.create_string_buffer(code, len(code))
    # struct sock_fprog: the number of instructions and a pointer to them,
    # which must stay valid during the call (the kernel copies the program).
    fprog = struct.pack("@HP", len(program), ctypes.addressof(filters))
    sock.trio_socket.setsockopt(
        stdlib_socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog
    )


async def bind_worker_sockets(
    plan: WorkerSockets, count: int, port: int
) -> list[list[UDPSocket]]:
    """Bind ``count`` workers' sockets on ``port`` (0: a free one), worker 0's
    first, and attach ``plan.steering(count)`` to the group of each address.

    Returns each worker's sockets (one per address bound), which the caller
    owns and closes when the pool has stopped.
    """
    program = plan.steering(count) if plan.steering is not None else None
    held: list[list[UDPSocket]] = []
    try:
        for _ in range(count):
            sockets = await open_udp_sockets(
                held[0][0].local_address[1] if held else port,
                plan.host,
                reuse_port=True,
                receive_buffer=plan.receive_buffer,
            )
            held.append(sockets)
            if [sock.family for sock in sockets] != [s.family for s in held[0]]:
                msg = f"worker {len(held) - 1} could not bind what worker 0 bound"
                raise OSError(msg)
        if program is not None:
            for sock in held[0]:
                attach_reuseport_program(sock, program)
    except BaseException:
        for sockets in held:
            for sock in sockets:
                sock.close()
        raise
    return held


@asynccontextmanager
async def held_sockets(
    plan: WorkerSockets | None, count: int, port: int
) -> AsyncIterator[list[list[UDPSocket]]]:
    """:func:`bind_worker_sockets` for the block, closed when it ends (none
    without a ``plan``)."""
    held = await bind_worker_sockets(plan, count, port) if plan is not None else []
    try:
        yield held
    finally:
        for sockets in held:
            for sock in sockets:
                sock.close()


def descriptors(held: list[list[UDPSocket]], index: int) -> tuple[int, ...]:
    """The file descriptors of worker ``index``'s held sockets (none if the
    supervisor holds none)."""
    return tuple(sock.trio_socket.fileno() for sock in held[index]) if held else ()
