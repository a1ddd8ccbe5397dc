"""The Datagram value: one received UDP datagram, where it came from, and how to answer it.

A datagram knows the socket it arrived on only as a :class:`DatagramOrigin`
(what it needs of it: a way to reply, and the server's amplification guard),
so this module depends on no socket class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, cast

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from ._address import SocketAddress
    from ._limits import AmplificationGuard

__all__ = ["Datagram", "DatagramOrigin"]


class DatagramOrigin(Protocol):
    """What a received datagram needs of the socket it arrived on (a
    socket's ``_outbox.Outbox``)."""

    #: The amplification guard of the server serving the socket, if any.
    guard: AmplificationGuard | None

    def validate(self, peer: tuple[str, int]) -> None:
        """Lift the server's limits on replies to ``peer``; see
        :meth:`Datagram.validate_peer`."""

    def reply(
        self, data: bytes | bytearray | memoryview, peer: SocketAddress
    ) -> Coroutine[Any, Any, None]:
        """Send ``data`` to ``peer`` as a reply; see :meth:`Datagram.reply`."""
        ...


#: Payload bytes a Datagram's repr shows (logs and tracebacks stay readable).
REPR_BYTES = 64


def _data_repr(data: bytes) -> str:
    if len(data) <= REPR_BYTES:
        return repr(data)
    return f"{data[:REPR_BYTES]!r}...({len(data)} bytes)"


@attrs.frozen(kw_only=True)
class Datagram:
    """One received UDP datagram.

    Datagrams come from :meth:`UDPSocket.receive`, from iterating a
    :class:`UDPSocket`, and are handed to :func:`serve_udp` handlers. They are
    immutable values; :meth:`reply` answers from the socket the datagram
    arrived on.

    Attributes:
        data: the payload (possibly empty: a zero-length datagram is valid).
        peer: the sender's address, as the kernel reported it. On a
            dual-stack socket (bound to ``"::"``) IPv4 senders appear in
            IPv4-mapped form: ``("::ffff:192.0.2.1", 4000, 0, 0)``.
        local: the address of the socket that received it. For a socket bound
            to a wildcard address (``0.0.0.0`` or ``::``) this is that
            wildcard address.
        received_at: when it was taken from the socket, on the Trio clock
            (:func:`trio.current_time`).
        destination: the address the datagram was sent to, in the form of
            :attr:`peer`'s: one of this host's addresses, a broadcast address
            (``"10.9.0.255"``, ``"255.255.255.255"``) or a multicast group
            (``"239.1.2.3"``, ``"ff02::1"``); IPv4-mapped on a dual-stack
            socket. Known for the datagrams a server receives (from
            ``IP_PKTINFO``/``IPV6_PKTINFO`` on Linux, on real sockets and on
            the virtual network; for a socket bound to one address, that
            address); None where unknown, and for a plain
            :meth:`UDPSocket.receive`.

    Example:
        >>> d = Datagram(data=b"hi", peer=("127.0.0.1", 4000),
        ...              local=("127.0.0.1", 12345), received_at=0.0)
        >>> d.data, d.peer, d.destination
        (b'hi', ('127.0.0.1', 4000), None)

    A handler that tells unicast from group traffic (a server answers
    broadcast and multicast only where it asked for them, see
    :func:`serve_udp`'s ``broadcast`` and ``multicast``)::

        async def handler(datagram: trioudp.Datagram) -> None:
            if datagram.destination == "239.1.2.3":
                ...  # the group's traffic

    Its repr shows at most the first 64 bytes of ``data`` and its length.
    """

    data: bytes = attrs.field(repr=_data_repr)
    peer: SocketAddress
    local: SocketAddress
    received_at: float
    destination: str | None = None
    _origin: DatagramOrigin | None = attrs.field(
        default=None, eq=False, repr=False, alias="origin"
    )

    @classmethod
    def _received(
        cls,
        data: bytes,
        peer: SocketAddress,
        local: SocketAddress,
        received_at: float,
        origin: DatagramOrigin,
        destination: str | None = None,
    ) -> Datagram:
        """Construct on the receive hot path: the fields go straight into their
        slots, which takes half the time of the frozen ``__init__`` (no
        validators or converters are skipped: there are none)."""
        datagram = _new(cls)
        _set_data(datagram, data)
        _set_peer(datagram, peer)
        _set_local(datagram, local)
        _set_received_at(datagram, received_at)
        _set_destination(datagram, destination)
        _set_origin(datagram, origin)
        return datagram

    def validate_peer(self) -> None:
        """Lift the server's limits on replies to :attr:`peer`: the
        amplification guard's and the loop guard's (see :func:`serve_udp`).

        Call it once the handler knows the peer is real (it echoed a cookie,
        presented a token, completed a handshake). A no-op without guards.

        Example::

            if valid_cookie(datagram.data):
                datagram.validate_peer()
        """
        origin = self._origin
        if origin is not None:
            origin.validate((self.peer[0], self.peer[1]))

    def reply(self, data: bytes | bytearray | memoryview) -> Coroutine[Any, Any, None]:
        """Send ``data`` back to :attr:`peer` from the socket this came in on.

        It is a cancel point; on a real socket it returns without a trip
        through the scheduler when the kernel accepts the datagram at once.
        Inside a server on Linux, a small reply (up to 2 KiB) may instead be
        collected and sent with the other replies of the batch the server is
        handling, in one system call, at most ``REPLY_DELAY`` (1 ms) or one
        batch later; ``data`` is copied, so its buffer may be reused at once.
        Per-datagram send errors are counted in ``stats.send_errors`` either way.

        Raises:
            TypeError: ``data`` is not bytes-like.
            DatagramTooLarge: ``data`` does not fit in one datagram.
            trio.ClosedResourceError: the socket has been closed.
            RuntimeError: this datagram was built by hand, not received
                (raised when ``reply`` is called).

        Example::

            async def handler(datagram: trioudp.Datagram) -> None:
                await datagram.reply(b"Hello, client!")
        """
        if self._origin is None:
            msg = (
                "this Datagram was not received from a socket, so it has"
                " nowhere to reply from; use UDPSocket.send_to instead"
            )
            raise RuntimeError(msg)
        # Returning the origin's coroutine saves a layer on the hot path.
        return self._origin.reply(data, self.peer)


def _slot_setter(name: str) -> Callable[[Datagram, object], None]:
    return cast("Callable[[Datagram, object], None]", getattr(Datagram, name).__set__)


_new = object.__new__
_set_data = _slot_setter("data")
_set_peer = _slot_setter("peer")
_set_local = _slot_setter("local")
_set_received_at = _slot_setter("received_at")
_set_destination = _slot_setter("destination")
_set_origin = _slot_setter("_origin")
