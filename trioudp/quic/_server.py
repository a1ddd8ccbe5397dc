"""serve_quic and QUICServer: QUIC connections on a trioudp UDP server.

Shape of a running server::

    serve_quic_sockets (the task nursery.start runs)
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
    open_udp_sockets,
    serve_udp_sockets,
)
from ._admission import (
    Action,
    BadPacket,
    admit,
    parse_header_untrusted,
    stateless_reset,
)
from ._connection import INTERNAL_ERROR, QUICConnection, normalize_address
from ._engine import Engine, reset_token
from ._settings import check_int, check_seconds
from ._tokens import BadToken, RetryTokens

if TYPE_CHECKING:
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.packet import QuicHeader

    from .. import (
        AccessList,
        Datagram,
        ServerStats,
        SocketAddress,
        UDPServer,
        UDPSocket,
    )

__all__ = ["QUICServer", "QUICServerStats", "serve_quic", "serve_quic_sockets"]

logger = logging.getLogger("trioudp")

#: What a handler is: an async function of one established connection.
Handler = Callable[[QUICConnection], Awaitable[object]]

DEFAULT_MAX_CONNECTIONS = 10_000
DEFAULT_MAX_HANDSHAKES = 1_000
DEFAULT_MAX_STREAMS = 100
DEFAULT_SEND_BUFFER = 1 << 20
DEFAULT_DATAGRAM_QUEUE = 128
DEFAULT_GRACE = 5.0
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


def check_configuration(configuration: object, *, is_client: bool) -> None:
    from aioquic.quic.configuration import QuicConfiguration

    if not isinstance(configuration, QuicConfiguration):
        msg = (
            "configuration must be an aioquic QuicConfiguration, not"
            f" {type(configuration).__name__}"
        )
        raise TypeError(msg)
    if configuration.is_client != is_client:
        role = "client" if is_client else "server"
        msg = f"a QUIC {role} needs QuicConfiguration(is_client={is_client})"
        raise ValueError(msg)
    if not is_client and (
        configuration.certificate is None or configuration.private_key is None
    ):
        msg = (
            "a QUIC server needs a certificate and its key:"
            " configuration.load_cert_chain(certfile, keyfile)"
        )
        raise ValueError(msg)


def check_connection_settings(
    max_streams: int, send_buffer: int, datagram_queue: int, reset_code: int
) -> None:
    """Refuse out-of-range per-connection settings, naming them."""
    check_int("max_streams", max_streams, low=1, high=1 << 60)
    check_int("send_buffer", send_buffer, low=1)
    check_int("datagram_queue", datagram_queue, low=1)
    check_int("reset_code", reset_code, low=0, high=(1 << 62) - 1)


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
        self._tokens = RetryTokens()
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
            source_cid = os.urandom(self._cid_length)
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


def _udp_settings(
    rate_limit: RateLimit | None, access: AccessList | None, queue_size: int
) -> dict[str, object]:
    return {"rate_limit": rate_limit, "access": access, "queue_size": queue_size}


async def serve_quic_sockets(
    handler: Handler,
    sockets: Sequence[UDPSocket],
    *,
    configuration: QuicConfiguration,
    retry_threshold: int | None = 0,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    max_handshakes: int = DEFAULT_MAX_HANDSHAKES,
    max_streams: int = DEFAULT_MAX_STREAMS,
    send_buffer: int = DEFAULT_SEND_BUFFER,
    datagram_queue: int = DEFAULT_DATAGRAM_QUEUE,
    reset_code: int = 0,
    reset_key: bytes | None = None,
    rate_limit: RateLimit | None = None,
    access: AccessList | None = None,
    queue_size: int = 256,
    task_status: trio.TaskStatus[QUICServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve QUIC on already-open UDP sockets; the lower layer of
    :func:`serve_quic`, which documents the arguments. The server takes
    ownership of the sockets and closes them when it stops.

    Example::

        async with trioudp.open_udp_socket("127.0.0.1", 0) as sock:
            server = await nursery.start(functools.partial(
                trioudp.quic.serve_quic_sockets, handler, [sock],
                configuration=configuration))
    """
    try:
        check_configuration(configuration, is_client=False)
        check_connection_settings(max_streams, send_buffer, datagram_queue, reset_code)
        check_int("max_connections", max_connections, low=1)
        check_int("max_handshakes", max_handshakes, low=1)
        if retry_threshold is not None:
            check_int("retry_threshold", retry_threshold, low=0)
        if reset_key is not None and (
            not isinstance(reset_key, bytes) or len(reset_key) < 16
        ):
            msg = "reset_key must be at least 16 random bytes (os.urandom(32))"
            raise ValueError(msg)
        if not callable(handler):
            msg = f"handler must be an async function, not {handler!r}"
            raise TypeError(msg)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    server = QUICServer(
        handler,
        sockets,
        configuration=configuration,
        retry_threshold=retry_threshold,
        max_connections=max_connections,
        max_handshakes=max_handshakes,
        max_streams=max_streams,
        send_buffer=send_buffer,
        datagram_queue=datagram_queue,
        reset_code=reset_code,
        reset_key=reset_key if reset_key is not None else os.urandom(32),
    )
    await server._serve(_udp_settings(rate_limit, access, queue_size), task_status)


async def serve_quic(
    handler: Handler,
    port: int,
    *,
    configuration: QuicConfiguration,
    host: str | None = None,
    retry_threshold: int | None = 0,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    max_handshakes: int = DEFAULT_MAX_HANDSHAKES,
    max_streams: int = DEFAULT_MAX_STREAMS,
    send_buffer: int = DEFAULT_SEND_BUFFER,
    datagram_queue: int = DEFAULT_DATAGRAM_QUEUE,
    reset_code: int = 0,
    reset_key: bytes | None = None,
    rate_limit: RateLimit | None = None,
    access: AccessList | None = None,
    queue_size: int = 256,
    receive_buffer: int | None = None,
    reuse_port: bool = False,
    task_status: trio.TaskStatus[QUICServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve QUIC on ``port``: each connection, once its handshake completed,
    is handed to ``await handler(connection)`` in a task of its own.

    Like :func:`trioudp.serve_udp`, use it with ``nursery.start``: it binds,
    starts receiving, reports the :class:`QUICServer`, and runs until
    cancelled or shut down.

    Args:
        handler: ``async def handler(connection: QUICConnection)``. When it
            returns, the connection is closed (after the peer acknowledged
            what the streams sent); when it raises, the error is logged on
            the ``trioudp`` logger and counted, and the connection closed
            with a transport internal error.
        port: the UDP port; 0 picks a free one (``server.port``).
        configuration: aioquic's ``QuicConfiguration(is_client=False)``, with
            a certificate chain loaded; its ``alpn_protocols``,
            ``idle_timeout``, ``max_datagram_frame_size`` (datagrams),
            ``max_stream_data`` and ``max_data`` (the receive windows) apply.
        host: the address to bind; None binds all (IPv4 and IPv6).
        retry_threshold: address validation. A client whose Initial carries
            no Retry token gets a Retry (one more round trip) once this many
            handshakes are in progress: 0 (the default) always, None never.
            Until a client's address is validated the server sends it at
            most three times what it received (aioquic's accounting).
        max_connections: connections at once; Initials beyond are dropped.
        max_handshakes: handshakes in progress at once; Initials beyond
            are dropped.
        max_streams: streams of each kind a peer may have open at once
            (unread, unclosed or unacknowledged); more is a protocol error.
        send_buffer: bytes a stream may have sent and unacknowledged before
            ``send_all`` waits.
        datagram_queue: RFC 9221 datagrams held for ``receive_datagram``
            (more are dropped) and queued by ``send_datagram`` (more wait).
        reset_code: the application error code of the resets trioudp makes
            (a stream left by an exception or a cancelled ``send_all``).
        reset_key: the stateless reset key (16 bytes or more); give every
            process serving the port the same one (default: random).
        rate_limit: per-source :class:`trioudp.RateLimit` of the UDP
            intake, applied before any QUIC processing.
        access: :class:`trioudp.AccessList` of the intake.
        queue_size: datagrams the intake may queue (see
            :func:`trioudp.serve_udp_sockets`).
        receive_buffer: ``SO_RCVBUF`` to ask for.
        reuse_port: set ``SO_REUSEPORT``.
        task_status: reports the :class:`QUICServer`.

    Resource handling:
        Cancelling the surrounding scope cancels every handler and closes
        each connection (sending CONNECTION_CLOSE where the socket still
        can) and the sockets. :meth:`QUICServer.shutdown` stops gracefully.

    Error handling:
        Bad settings raise ``TypeError`` or ``ValueError`` before anything
        is bound. Malformed datagrams, undecryptable packets and refused
        Initials are dropped and counted (``server.stats.dropped``).

    Example::

        from aioquic.quic.configuration import QuicConfiguration

        configuration = QuicConfiguration(is_client=False, alpn_protocols=["echo"])
        configuration.load_cert_chain("cert.pem", "key.pem")

        async def handler(connection: trioudp.quic.QUICConnection) -> None:
            async with await connection.accept_stream() as stream:
                async for data in stream:
                    await stream.send_all(data)

        async with trio.open_nursery() as nursery:
            server = await nursery.start(functools.partial(
                trioudp.quic.serve_quic, handler, 4433, configuration=configuration))
    """
    check_configuration(configuration, is_client=False)
    check_connection_settings(max_streams, send_buffer, datagram_queue, reset_code)
    sockets = await open_udp_sockets(
        port, host, receive_buffer=receive_buffer, reuse_port=reuse_port
    )
    await serve_quic_sockets(
        handler,
        sockets,
        configuration=configuration,
        retry_threshold=retry_threshold,
        max_connections=max_connections,
        max_handshakes=max_handshakes,
        max_streams=max_streams,
        send_buffer=send_buffer,
        datagram_queue=datagram_queue,
        reset_code=reset_code,
        reset_key=reset_key,
        rate_limit=rate_limit,
        access=access,
        queue_size=queue_size,
        task_status=task_status,
    )
