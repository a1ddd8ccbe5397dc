"""Every exception trioudp raises on its own account.

The root is :class:`TrioUDPError`. Each leaf also derives from the builtin
exception a caller would naturally catch (``ValueError``, ``OSError``,
``TimeoutError``, ``ConnectionError``), so existing ``except`` clauses keep
working. Resource state reuses Trio's vocabulary
(:class:`trio.ClosedResourceError`, :class:`trio.BusyResourceError`).
"""

from __future__ import annotations

import os
import signal
from typing import Any

import trio

__all__ = [
    "BindError",
    "DatagramTooLarge",
    "InvalidAddress",
    "PeerUnreachable",
    "RequestTimeout",
    "TrioUDPError",
    "WorkerCrashLoop",
    "WorkerStartFailed",
]


class TrioUDPError(Exception):
    """Base class of all trioudp errors.

    Example:
        >>> issubclass(RequestTimeout, TrioUDPError)
        True
    """

    #: The constructor's arguments, so that errors survive pickling.
    _init_args: tuple[Any, ...] = ()

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._init_args)


class DatagramTooLarge(TrioUDPError, ValueError):
    """A payload is larger than a single UDP datagram (or a configured limit).

    Raised before anything reaches the kernel.

    Attributes:
        size: the payload's length in bytes.
        limit: the largest payload allowed there.

    Example:
        >>> str(DatagramTooLarge(70000, 65507))
        'payload of 70000 bytes is larger than the limit of 65507 bytes; split it or use a stream protocol'
    """

    def __init__(self, size: int, limit: int) -> None:
        self._init_args = (size, limit)
        self.size = size
        self.limit = limit
        super().__init__(
            f"payload of {size} bytes is larger than the limit of {limit} bytes;"
            " split it or use a stream protocol"
        )


class InvalidAddress(TrioUDPError, ValueError):
    """An address is malformed, of the wrong family, or cannot be resolved.

    Attributes:
        address: the address as given.
        reason: what is wrong with it.

    Example:
        >>> str(InvalidAddress(("x", -1), "port must be in 0..65535, not -1"))
        "invalid address ('x', -1): port must be in 0..65535, not -1"
    """

    def __init__(self, address: object, reason: str) -> None:
        self._init_args = (address, reason)
        self.address = address
        self.reason = reason
        super().__init__(f"invalid address {address!r}: {reason}")


class BindError(TrioUDPError, OSError):
    """Binding a UDP socket failed (port in use, permission denied, ...).

    It is an :class:`OSError` with the original ``errno``.

    Attributes:
        host: the host the socket was to bind.
        port: the port it was to bind.
        cause: the underlying :class:`OSError`.

    Example:
        >>> import errno
        >>> err = BindError("127.0.0.1", 53, OSError(errno.EACCES, "Permission denied"))
        >>> err.errno == errno.EACCES
        True
    """

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        self._init_args = (host, port, cause)
        self.host = host
        self.port = port
        self.cause = cause
        hint = _BIND_HINTS.get(cause.errno or 0, "")
        strerror = cause.strerror or str(cause)
        message = f"cannot bind UDP socket to {host!r} port {port}: {strerror}{hint}"
        super().__init__(cause.errno, message)

    def __str__(self) -> str:
        return str(self.strerror)

    __reduce__ = TrioUDPError.__reduce__


_BIND_HINTS = {
    getattr(os, "EADDRINUSE", 98): (
        " (another socket already uses it; pick another port, or 0 for any free one)"
    ),
    getattr(os, "EACCES", 13): (
        " (ports below 1024 need privileges; use a port of 1024 or above)"
    ),
    getattr(os, "EADDRNOTAVAIL", 99): (
        " (that address does not belong to this host; use one of its own"
        " addresses, or 0.0.0.0 / :: for all)"
    ),
}


def closed_socket_error() -> trio.ClosedResourceError:
    """What an operation on a closed :class:`~trioudp.UDPSocket` raises.

    Example:
        >>> closed_socket_error()
        ClosedResourceError('this UDPSocket has been closed')
    """
    return trio.ClosedResourceError("this UDPSocket has been closed")


class RequestTimeout(TrioUDPError, TimeoutError):
    """A request got no reply after every attempt its retry schedule allowed.

    Attributes:
        peer: the address the request was sent to.
        attempts: how many times it was sent.
        elapsed: seconds from the first send to giving up, on the Trio clock.

    Example:
        >>> str(RequestTimeout(("127.0.0.1", 9), 3, 7.0))
        "no reply from ('127.0.0.1', 9) after 3 attempts in 7.000 s; is the server running?"
    """

    def __init__(self, peer: object, attempts: int, elapsed: float) -> None:
        self._init_args = (peer, attempts, elapsed)
        self.peer = peer
        self.attempts = attempts
        self.elapsed = elapsed
        super().__init__(
            f"no reply from {peer!r} after {attempts}"
            f" {'attempt' if attempts == 1 else 'attempts'} in {elapsed:.3f} s;"
            " is the server running?"
        )


class PeerUnreachable(TrioUDPError, ConnectionError):
    """The peer's host reported that nothing listens there (ICMP unreachable).

    Attributes:
        peer: the address that could not be reached.
        cause: the :class:`OSError` the kernel reported.

    Example:
        >>> import errno
        >>> err = PeerUnreachable(("127.0.0.1", 9), ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"))
        >>> "nothing is listening" in str(err)
        True
    """

    def __init__(self, peer: object, cause: OSError) -> None:
        self._init_args = (peer, cause)
        self.peer = peer
        self.cause = cause
        super().__init__(
            cause.errno,
            f"{peer!r} is unreachable: {cause.strerror or cause}"
            " (nothing is listening there, or the network refused the datagram)",
        )

    def __str__(self) -> str:
        return str(self.strerror)

    __reduce__ = TrioUDPError.__reduce__


def describe_exit(returncode: int) -> str:
    """How a process ended, in words: ``exited with code 1``, ``was killed by SIGKILL``.

    Example:
        >>> describe_exit(-9)
        'was killed by SIGKILL'
    """
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


class WorkerStartFailed(TrioUDPError, RuntimeError):
    """A worker process of :func:`trioudp.run_workers` ended before it served.

    Its own error (a :class:`BindError`, a traceback) is on its stderr.

    Attributes:
        index: the worker's number (0-based).
        returncode: its exit status (negative: the signal that killed it).

    Example:
        >>> str(WorkerStartFailed(0, 1))
        'worker 0 exited with code 1 before it was serving; its error is above'
    """

    def __init__(self, index: int, returncode: int) -> None:
        self._init_args = (index, returncode)
        self.index = index
        self.returncode = returncode
        super().__init__(
            f"worker {index} {describe_exit(returncode)} before it was serving;"
            " its error is above"
        )


class WorkerCrashLoop(TrioUDPError, RuntimeError):
    """Workers kept dying: the supervisor stopped instead of restarting forever.

    Attributes:
        index: the worker that died last.
        returncode: its exit status (negative: the signal that killed it).
        crashes: how many workers died within ``window``.
        window: the window, in seconds.

    Example:
        >>> str(WorkerCrashLoop(1, -9, 6, 60.0))
        'worker 1 was killed by SIGKILL: 6 worker crashes within 60 s, giving up (a crash loop); fix the cause and start again'
    """

    def __init__(
        self, index: int, returncode: int, crashes: int, window: float
    ) -> None:
        self._init_args = (index, returncode, crashes, window)
        self.index = index
        self.returncode = returncode
        self.crashes = crashes
        self.window = window
        super().__init__(
            f"worker {index} {describe_exit(returncode)}: {crashes} worker crashes"
            f" within {window:g} s, giving up (a crash loop); fix the cause and"
            " start again"
        )
