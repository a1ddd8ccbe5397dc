"""What a connection needs from around it: the transport its datagrams leave
by, a server's table of connection IDs (the router), and the one form a peer
address takes as a key."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from .. import AmplificationGuard

__all__ = ["Router", "Transport", "normalize_address"]

#: The connection a router routes to (a ``QUICConnection``; a type variable
#: so that this module needs no import of it).
Connection = TypeVar("Connection", contravariant=True)


class Transport(Protocol):
    """Where a connection's datagrams go: a :class:`trioudp.UDPSocket`."""

    async def send_to(
        self, data: bytes | bytearray | memoryview, address: tuple[str, int]
    ) -> None: ...


class Router(Protocol[Connection]):
    """A server's side of its connections: the table of connection IDs, kept
    up to date by the connection, and the amplification limit."""

    def cid_issued(self, cid: bytes, connection: Connection) -> None: ...

    def cid_retired(self, cid: bytes) -> None: ...

    @property
    def amplification(self) -> AmplificationGuard:
        """Bytes received from and sent to addresses not yet validated."""

    def withheld(self) -> None:
        """A datagram to an unvalidated address was withheld (over 3x)."""


def normalize_address(address: tuple[object, ...]) -> tuple[str, int]:
    """A peer address as the engine and the routing tables keep it: IPv6
    flow information dropped, so one peer always has one key.

    Example:
        >>> normalize_address(("::1", 4433, 0, 0))
        ('::1', 4433)
        >>> normalize_address(("fe80::1", 4433, 0, 3))
        ('fe80::1', 4433, 0, 3)
    """
    if len(address) == 2 or address[3] == 0:
        return (str(address[0]), int(address[1]))  # type: ignore[call-overload]
    return (str(address[0]), int(address[1]), 0, int(address[3]))  # type: ignore[call-overload, return-value]
