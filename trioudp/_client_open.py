"""Opening a UDPClient: :func:`open_udp_client` checks its arguments, resolves the peer once and connects the socket."""

from __future__ import annotations

import ipaddress
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from ._address import check_address, numeric_family
from ._backoff import Backoff
from ._checks import check_attempts
from ._client import OnUnreachable, UDPClient, _check_backoff
from ._errors import InvalidAddress
from ._open import family_of_name, open_udp_socket
from ._rng import new_rng

if TYPE_CHECKING:
    import random
    from collections.abc import AsyncIterator

    from ._matching import Match

__all__ = ["open_udp_client"]


def _is_ipv4_mapped(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None


@asynccontextmanager
async def open_udp_client(
    host: str,
    port: int,
    *,
    attempts: int = 3,
    backoff: Backoff | None = None,
    match: Match | None = None,
    on_unreachable: OnUnreachable | str = OnUnreachable.RAISE,
    family: int = 0,
    local_address: tuple[str, int] | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[UDPClient]:
    """Open a :class:`UDPClient` on a socket connected to ``(host, port)``.

    A connected socket only accepts datagrams from the peer, and the kernel
    reports ICMP "port unreachable" as an error instead of silence.

    Args:
        host, port: the peer; a name is resolved once, here. An
            IPv4-mapped address (``::ffff:192.0.2.1``, as a dual-stack
            server sees IPv4 peers) is reached as that IPv4 peer.
        attempts: sends per request (1 = no retransmission).
        backoff: the retransmission schedule; default :class:`Backoff()`
            (1 s, doubling, +-10% jitter).
        match: default id extractor for requests; see :data:`Match`.
        on_unreachable: ``"raise"`` (default) or ``"retry"``; see
            :class:`OnUnreachable`.
        family: ``AF_INET`` or ``AF_INET6``; by default, the peer's.
        local_address: ``(host, port)`` to bind; default any, ephemeral.
        rng: where jitter comes from; pass ``random.Random(seed)`` for
            reproducible schedules. By default an unseeded generator, or,
            while a :class:`~trioudp.testing.VirtualNetwork` is installed,
            one derived from the network's seed.

    Example (the tutorial's client)::

        async with trioudp.open_udp_client("127.0.0.1", 12345) as client:
            reply = await client.request(b"Hello, server!")
            print(f"Received {reply.data.decode()} from server")
            await client.send(b"exit")
    """
    host, port = check_address((host, port))
    if port == 0:
        raise InvalidAddress(
            (host, port), "port 0 is not a destination; give the peer's port"
        )
    check_attempts(attempts)
    if match is not None and not callable(match):
        msg = f"match must be a function of the bytes, or None, not {match!r}"
        raise TypeError(msg)
    backoff = _check_backoff(backoff or Backoff())
    on_unreachable = OnUnreachable(on_unreachable)
    family = family or numeric_family(host) or await family_of_name(host, port)
    local_host, local_port = local_address or (None, 0)
    # An IPv4-mapped peer (a dual-stack server's view of an IPv4 one) is
    # reached as IPv4, which an IPv6-only socket cannot do.
    mapped = _is_ipv4_mapped(host)
    async with open_udp_socket(
        local_host, local_port, family=family, dual_stack=mapped or None
    ) as sock:
        await sock.connect((host, port))
        peer = sock.peer_address
        assert peer is not None
        yield UDPClient(
            sock,
            peer,
            attempts=attempts,
            backoff=backoff,
            match=match,
            on_unreachable=on_unreachable,
            rng=rng or new_rng(),
        )
