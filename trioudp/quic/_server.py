"""QUICServer: a running QUIC server, which routes each datagram of its UDP
intake to its connection or admits a new one, and runs each connection's task.

Shape of a running server::

    serve_quic_sockets (the task nursery.start runs, in ``_serve``)
    └── nursery
        ├── serve_udp_sockets: the UDP intake, with its bounds, per-source
        │   rate limit and access list; its handler (``_on_datagram``) is
        │   synchronous but for stateless replies, so it runs eagerly
        └── connections nursery
            └── one task per connection: its driver, then its handler

Every datagram passes the UDP intake first, so its screening applies before
any QUIC state exists. A datagram for a known connection ID goes straight
to that connection. Anything else goes to :func:`_admission.admit`, which
allows state only for a full-size Initial of a supported version, within the
caps on connections and handshakes in progress, and (by default) only from
an address proven by a Retry token; its other answers are stateless and
smaller than what drew them.

Shutdown (:meth:`QUICServer.shutdown`): new connections are refused at once;
handlers have ``grace`` seconds to finish (their connections work meanwhile);
then the rest are cancelled, which sends each connection's
CONNECTION_CLOSE; then the intake stops and the sockets close.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, final

import attrs
import trio
from aioquic.quic.packet import encode_quic_retry, encode_quic_version_negotiation

from .. import (
    AmplificationGuard,
    RateLimit,
    RateLimiter,
    serve_udp_sockets,
)
from ._admission import (
    Action,
    BadPacket,
    admit,
    parse_header_untrusted,
    stateless_reset,
)
from ._connection import INTERNAL_ERROR, QUICConnection
from ._engine import Engine, reset_token
from ._routing import normalize_address
from ._settings import DEFAULT_GRACE, check_seconds
from ._tokens import BadToken, RetryTokens

if TYPE_CHECKING:
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.packet import QuicHeader

    from .. import (
        Datagram,
        ServerStats,
        SocketAddress,
        UDPServer,
        UDPSocket,
    )

__all__ = ["Handler", "QUICServer", "QUICServerStats"]

logger = logging.getLogger("trioudp")

#: What a handler is: an async function of one established connection.
Handler = Callable[[QUICConnection], Awaitable[object]]

#: Stateless replies (Version Negotiation, Retry, stateless reset) per source
#: prefix: each is smaller than its trigger, this bounds the CPU they cost.
STATELESS_REPLIES = RateLimit(rate=100, burst=200)


@attrs.frozen(kw_only=True)
class QUICServerStats:
    """A snapshot of a :class:`QUICServer`'s counters.

    Attributes:
        connections: connections open now (handshaking or established).
        handshakes: handshakes in progress now.
        accepted: connections created (their first Initial decrypted).
        established: handshakes completed.
        handshakes_failed: connections that ended before their handshake
            completed.
        retries: Retry packets sent (address validation).
        version_negotiations: Version Negotiation packets sent.
        stateless_resets: stateless resets sent.
        handler_errors: handlers that raised.
        amplification_withheld: datagrams not sent because an address not
            yet validated would have received more than three times what it
            sent (RFC 9000, section 8; aioquic keeps the limit too).
        dropped: datagrams dropped before reaching a connection, by reason:
            ``malformed``, ``initial_too_small``, ``unknown_connection``,
            ``invalid_token``, ``undecryptable_initial``,
            ``connection_limit``, ``handshake_limit``, ``stopping``,
            ``reply_rate``, ...
        udp: the UDP intake's :class:`trioudp.ServerStats` (rate limiting
            and access-list drops happen there).

    Example:
        >>> QUICServerStats(udp=None).connections
        0
    """

    connections: int = 0
    handshakes: int = 0
    accepted: int = 0
    established: int = 0
    handshakes_failed: int = 0
    retries: int = 0
    version_negotiations: int = 0
    stateless_resets: int = 0
    handler_errors: int = 0
    amplification_withheld: int = 0
    dropped: dict[str, int] = attrs.field(factory=dict)
    udp: ServerStats | None = None


@final
class QUICServer:
    """A running QUIC server; :func:`serve_quic` hands it to ``nursery.start``.

    Example::

        server = await nursery.start(functools.partial(
            trioudp.quic.serve_quic, handler, 0, configuration=configuration))
        print("QUIC on port", server.port)
        await server.shutdown()
    """

    def __init__(
        self,
        handler: Handler,
        sockets: Sequence[UDPSocket],
        *,
        configuration: QuicConfiguration,
        retry_threshold: int | None,
        max_connections: int,
        max_handshakes: int,
        max_streams: int,
        send_buffer: int,
        datagram_queue: int,
        reset_code: int,
        reset_key: bytes,
        token_key: bytes | None = None,
        connection_ids: Callable[[], bytes] | None = None,
    ) -> None:
        self._handler = handler
        self._sockets = tuple(sockets)
        self._by_local = {sock.local_address: sock for sock in sockets}
        self._port = int(self._sockets[0].local_address[1])
        self._configuration = configuration
        self._cid_length = configuration.connection_id_length
        self._retry_threshold = retry_threshold
        self._max_connections = max_connections
        self._max_handshakes = max_handshakes
        self._max_streams = max_streams
        self._send_buffer = send_buffer
        self._datagram_queue = datagram_queue
        self._reset_code = reset_code
        self._reset_key = reset_key
        self._tokens = RetryTokens(token_key)
        # None: aioquic's random connection IDs; else a worker's (_steering).
        self._connection_ids = connection_ids
        self._replies = RateLimiter(STATELESS_REPLIES)
        # Addresses not yet validated, at most a few per handshake.
        self._amplification = AmplificationGuard(
            factor=3.0, table_size=4 * max_handshakes
        )
        self._routes: dict[bytes, QUICConnection] = {}
        self._cids: dict[QUICConnection, set[bytes]] = {}
        self._handshakes = 0
        self._counts = dict.fromkeys(
            (
                "accepted",
                "established",
                "handshakes_failed",
                "retries",
                "version_negotiations",
                "stateless_resets",
                "handler_errors",
                "amplification_withheld",
            ),
            0,
        )
        self._dropped: dict[str, int] = {}
        self._udp: UDPServer | None = None
        self._nursery: trio.Nursery | None = None
        self._stopping = False
        self._stop = trio.Event()
        self._stop_deadline = 0.0
        self._finished = trio.Event()

    # ---- state -----------------------------------------------------------

    @property
    def sockets(self) -> tuple[UDPSocket, ...]:
        """The UDP sockets the server receives on."""
        return self._sockets

    @property
    def addresses(self) -> list[SocketAddress]:
        """The addresses the server is bound to."""
        return [sock.local_address for sock in self._sockets]

    @property
    def port(self) -> int:
        """The port (useful after binding port 0; known after the server stopped)."""
        return self._port

    @property
    def stopping(self) -> bool:
        """Whether a shutdown has begun."""
        return self._stopping

    @property
    def stats(self) -> QUICServerStats:
        """A snapshot of the server's counters."""
        return QUICServerStats(
            connections=len(self._cids),
            handshakes=self._handshakes,
            dropped=dict(self._dropped),
            udp=self._udp.stats if self._udp is not None else None,
            **self._counts,
        )

    def __repr__(self) -> str:
        return f"<trioudp.quic.QUICServer on {self.addresses!r}>"

    # ---- shutdown --------------------------------------------------------

    def begin_shutdown(self, grace: float = DEFAULT_GRACE) -> None:
        """Refuse new connections and give handlers ``grace`` seconds to end;
        then cancel them (each connection sends its CONNECTION_CLOSE) and stop.
        Returns at once; idempotent (a second call can only shorten ``grace``).

        Example::

            server.begin_shutdown(grace=2.0)
        """
        grace = check_seconds("grace", grace, zero=True)
        deadline = trio.current_time() + grace
        if self._stopping:
            self._stop_deadline = min(self._stop_deadline, deadline)
        else:
            self._stopping = True
            self._stop_deadline = deadline
        if self._nursery is not None:
            self._nursery.cancel_scope.deadline = min(
                self._nursery.cancel_scope.deadline, self._stop_deadline
            )
        self._stop.set()

    async def shutdown(self, grace: float = DEFAULT_GRACE) -> None:
        """:meth:`begin_shutdown`, then wait until the server has stopped.

        Example::

            await server.shutdown(grace=2.0)
        """
        self.begin_shutdown(grace)
        await self._finished.wait()

    # ---- routing (the connections' Router) -------------------------------

    def cid_issued(self, cid: bytes, connection: QUICConnection) -> None:
        """Route packets for ``cid`` to ``connection``."""
        self._routes[cid] = connection
        self._cids.setdefault(connection, set()).add(cid)

    def cid_retired(self, cid: bytes) -> None:
        """Stop routing ``cid``."""
        connection = self._routes.pop(cid, None)
        if connection is not None:
            self._cids.get(connection, set()).discard(cid)

    @property
    def amplification(self) -> AmplificationGuard:
        """The 3x limit on what unvalidated addresses are sent."""
        return self._amplification

    def withheld(self) -> None:
        """Count a datagram withheld by the 3x limit."""
        self._counts["amplification_withheld"] += 1

    def _forget(self, connection: QUICConnection) -> None:
        for cid in self._cids.pop(connection, ()):
            if self._routes.get(cid) is connection:
                del self._routes[cid]

    def _drop(self, reason: str) -> None:
        self._dropped[reason] = self._dropped.get(reason, 0) + 1

    # ---- the intake's handler --------------------------------------------

    async def _on_datagram(self, datagram: Datagram) -> None:
        data = datagram.data
        try:
            header = parse_header_untrusted(data, self._cid_length)
        except BadPacket:
            self._drop("malformed")
            return
        connection = self._routes.get(header.destination_cid)
        peer = normalize_address(datagram.peer)
        now = datagram.received_at
        if connection is not None:
            connection._datagram_received(data, peer, now)
            return
        decision = admit(
            header,
            len(data),
            supported_versions=self._configuration.supported_versions,
            stopping=self._stopping,
            connections=len(self._cids),
            max_connections=self._max_connections,
            handshakes=self._handshakes,
            max_handshakes=self._max_handshakes,
            retry_threshold=self._retry_threshold,
        )
        action = decision.action
        if action is Action.DROP:
            self._drop(decision.reason)
        elif action is Action.ACCEPT:
            self._accept(datagram, header, odcid=header.destination_cid, rscid=None)
        elif action is Action.CHECK_TOKEN:
            try:
                odcid = self._tokens.check(
                    header.token, peer, dcid=header.destination_cid, now=now
                )
            except BadToken:
                self._drop("invalid_token")
                return
            self._accept(datagram, header, odcid=odcid, rscid=header.destination_cid)
        elif not self._replies.allow(peer[0], now):
            self._drop("reply_rate")
        else:
            await self._reply_statelessly(datagram, header, action, peer, now)

    async def _reply_statelessly(
        self,
        datagram: Datagram,
        header: QuicHeader,
        action: Action,
        peer: tuple[str, int],
        now: float,
    ) -> None:
        if action is Action.VERSION_NEGOTIATION:
            reply = encode_quic_version_negotiation(
                source_cid=header.destination_cid,
                destination_cid=header.source_cid,
                supported_versions=self._configuration.supported_versions,
            )
            counter = "version_negotiations"
        elif action is Action.RETRY:
            assert header.version is not None
            # A worker's own ID: the Initial that returns the token comes
            # back to this worker, which can check it.
            make = self._connection_ids
            source_cid = make() if make is not None else os.urandom(self._cid_length)
            reply = encode_quic_retry(
                version=header.version,
                source_cid=source_cid,
                destination_cid=header.source_cid,
                original_destination_cid=header.destination_cid,
                retry_token=self._tokens.issue(
                    peer, odcid=header.destination_cid, rscid=source_cid, now=now
                ),
            )
            counter = "retries"
        else:
            packet = stateless_reset(
                reset_token(self._reset_key, header.destination_cid),
                len(datagram.data),
            )
            if packet is None:
                self._drop("short_unknown")
                return
            reply = packet
            counter = "stateless_resets"
        self._counts[counter] += 1
        await datagram.reply(reply)

    def _accept(
        self,
        datagram: Datagram,
        header: QuicHeader,
        *,
        odcid: bytes,
        rscid: bytes | None,
    ) -> None:
        """Make a connection for a client's first Initial, if it decrypts."""
        engine = Engine(
            configuration=self._configuration,
            max_streams=self._max_streams,
            reset_key=self._reset_key,
            original_destination_connection_id=odcid,
            retry_source_connection_id=rscid,
            connection_ids=self._connection_ids,
        )
        connection = QUICConnection(
            engine,
            self._by_local.get(datagram.local, self._sockets[0]),
            send_buffer=self._send_buffer,
            datagram_queue=self._datagram_queue,
            reset_code=self._reset_code,
            router=self,
        )
        connection._datagram_received(
            datagram.data, normalize_address(datagram.peer), datagram.received_at
        )
        if not engine.decrypted_any():
            self._drop("undecryptable_initial")
            return
        assert self._nursery is not None
        self.cid_issued(header.destination_cid, connection)
        self.cid_issued(engine.host_cid, connection)
        self._handshakes += 1
        self._counts["accepted"] += 1
        self._nursery.start_soon(self._run, connection)

    # ---- one connection --------------------------------------------------

    async def _run(self, connection: QUICConnection) -> None:
        handshaking = True
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(connection._drive)
                established = await connection._wait_handshake()
                handshaking = False
                self._handshakes -= 1
                if established:
                    self._counts["established"] += 1
                    await self._handle(connection)
                else:
                    self._counts["handshakes_failed"] += 1
        finally:
            if handshaking:
                self._handshakes -= 1
                self._counts["handshakes_failed"] += 1
            self._forget(connection)

    async def _handle(self, connection: QUICConnection) -> None:
        try:
            await self._handler(connection)
        except Exception:
            self._counts["handler_errors"] += 1
            logger.exception(
                "QUIC handler failed on the connection from %r",
                connection.peer_address,
            )
            connection._close_here(INTERNAL_ERROR, "", frame_type=0)
        else:
            await connection.aclose()

    # ---- running ---------------------------------------------------------

    async def _serve(
        self,
        udp_settings: dict[str, object],
        task_status: trio.TaskStatus[QUICServer],
    ) -> None:
        try:
            async with trio.open_nursery() as outer:
                self._udp = await outer.start(
                    functools.partial(
                        serve_udp_sockets,
                        self._on_datagram,
                        self._sockets,
                        **udp_settings,  # type: ignore[arg-type]
                    )
                )
                async with trio.open_nursery() as connections:
                    self._nursery = connections
                    task_status.started(self)
                    await self._stop.wait()
                    connections.cancel_scope.deadline = self._stop_deadline
                # Every connection has ended: nothing more to receive.
                outer.cancel_scope.cancel()
        finally:
            self._finished.set()
