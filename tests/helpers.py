"""What the core's tests share: echo handlers, starting a server, flooding it
from a plain socket, and loopback ports nothing listens on."""

import ctypes
import functools
import socket

import trioudp
from trioudp import _mmsg


async def echo(datagram: trioudp.Datagram) -> None:
    """The async echo handler."""
    await datagram.reply(datagram.data)


def echo_answer(datagram: trioudp.Datagram) -> bytes:
    """The echo as a :class:`trioudp.Responder`'s function."""
    return datagram.data


async def start(nursery, handler=echo, port=0, **settings):
    """``serve_udp(handler, port)`` on 127.0.0.1 unless ``host=`` says
    otherwise; returns the :class:`trioudp.UDPServer`."""
    settings.setdefault("host", "127.0.0.1")
    return await nursery.start(
        functools.partial(trioudp.serve_udp, handler, port, **settings)
    )


def accounted(stats: trioudp.ServerStats) -> int:
    """Every received datagram's current outcome, summed."""
    return (
        stats.handled
        + stats.handler_errors
        + stats.handler_timeouts
        + stats.dropped_queue_full
        + stats.dropped_shutdown
        + stats.in_flight
        + stats.queued
    )


def by_id(data: bytes) -> bytes:
    """A client's ``match``: the first four bytes are the request's id."""
    return data[:4]


def client_socket(host):
    """A trioudp socket on ``host``, any port (``async with``)."""
    return trioudp.open_udp_socket(host, 0)


def flood(port, payloads):
    """Queue datagrams in a loopback server's kernel buffer without letting
    it run, so that it takes them in one batch; returns the client socket."""
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    for payload in payloads:
        client.sendto(payload, ("127.0.0.1", port))
    return client


def receive_all(sock: socket.socket, count: int) -> list[bytes]:
    """The next ``count`` datagrams on a plain socket (5 s at most each)."""
    sock.settimeout(5)
    return [sock.recv(70_000) for _ in range(count)]


def closed_port(family, host):
    """A loopback address where nothing listens (ICMP port unreachable)."""
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[:2]


def free_port():
    """A loopback port nothing is bound to now."""
    return closed_port(socket.AF_INET, "127.0.0.1")[1]


def assert_port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", port))


def wrap_sendmmsg(monkeypatch, errors=(), most=None):
    """Replace the C sendmmsg with a wrapper that records each call's message
    count and fails the first calls with ``errors`` (errno values) before
    passing the rest on, sending at most ``most`` messages per call if given.
    Returns the list of recorded counts."""
    real = _mmsg._sendmmsg
    calls = []
    failures = iter(errors)

    def wrapper(fd, headers, count, flags):
        calls.append(count)
        code = next(failures, None)
        if code is not None:
            ctypes.set_errno(code)
            return -1
        return real(fd, headers, count if most is None else min(count, most), flags)

    monkeypatch.setattr(_mmsg, "_sendmmsg", wrapper)
    return calls
