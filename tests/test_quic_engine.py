"""The engine's policies: receive credit follows reading, the peer's streams
are capped, stateless reset tokens are derived; and what a peer that breaks
the limits gets."""

from __future__ import annotations

import inspect

import pytest
import trio
from aioquic.quic.connection import QuicConnection

import trioudp.quic
from trioudp.quic._engine import Engine, reset_token

from .quic_support import client_config, connect, quic_server, server_config

on_virtual_network = pytest.mark.virtual_network(latency=0.005)

WINDOW = 32_768


def test_the_methods_the_engine_replaces_are_aiaquics_own():
    """A rename in aioquic would leave aioquic's policy in place, silently."""
    for name in (
        "_write_connection_limits",
        "_write_stream_limits",
        "_replenish_connection_ids",
    ):
        theirs = inspect.signature(getattr(QuicConnection, name))
        ours = inspect.signature(getattr(Engine, name))
        assert list(theirs.parameters) == list(ours.parameters), name


async def open_streams(connection: trioudp.quic.QUICConnection, count: int) -> None:
    for _ in range(count):
        stream = await connection.open_stream()
        await stream.send_all(b"x")
        await trio.sleep(0.01)


def held(connection: trioudp.quic.QUICConnection) -> int:
    """Bytes a connection holds for its application, unread."""
    return sum(stream._buffered for stream in connection._streams.values())


@on_virtual_network
async def test_a_peer_that_never_reads_holds_the_writer_back_and_memory_bounded(
    virtual_network,
):
    servers: list[trioudp.quic.QUICConnection] = []
    streams: list[trioudp.quic.QUICStream] = []

    async def handler(connection: trioudp.quic.QUICConnection) -> None:
        servers.append(connection)
        streams.append(await connection.accept_stream())
        await trio.sleep_forever()

    payload = bytes(range(256)) * 40_000  # 10 MB
    settings = {"max_stream_data": WINDOW, "max_data": 4 * WINDOW}
    async with (
        quic_server(handler, configuration=server_config(**settings)) as server,
        connect(server, send_buffer=WINDOW) as connection,
    ):
        stream = await connection.open_stream()
        sent = trio.Event()

        async def send() -> None:
            await stream.send_all(payload)
            await stream.send_eof()
            sent.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            await trio.sleep(30)
            assert not sent.is_set()
            assert held(servers[0]) <= WINDOW
            assert connection.engine.send_buffered(stream.stream_id) <= WINDOW
            received = bytearray()
            async for data in streams[0]:
                received += data
                assert held(servers[0]) <= WINDOW
        assert sent.is_set()
        assert received == payload


@on_virtual_network
async def test_a_connections_unread_bytes_are_bounded_by_max_data(virtual_network):
    servers: list[trioudp.quic.QUICConnection] = []

    async def handler(connection: trioudp.quic.QUICConnection) -> None:
        servers.append(connection)
        await trio.sleep_forever()  # accepts nothing, reads nothing

    settings = {"max_stream_data": WINDOW, "max_data": 2 * WINDOW}
    async with (
        quic_server(handler, configuration=server_config(**settings)) as server,
        connect(server) as connection,
        trio.open_nursery() as nursery,
    ):
        for _ in range(10):
            stream = await connection.open_stream()
            nursery.start_soon(stream.send_all, b"x" * (4 * WINDOW))
        await trio.sleep(30)
        assert 0 < held(servers[0]) <= 2 * WINDOW
        nursery.cancel_scope.cancel()


@on_virtual_network
async def test_a_peer_sending_past_its_credit_is_closed_with_a_flow_control_error(
    virtual_network,
):
    settings = {"max_stream_data": WINDOW, "max_data": 4 * WINDOW}
    async with (
        quic_server(configuration=server_config(**settings)) as server,
        connect(server) as connection,
    ):
        stream = await connection.open_stream()
        await stream.send_all(b"x")
        # A broken peer: it believes it may send without limit.
        aioquic_stream = connection.engine._streams[stream.stream_id]
        aioquic_stream.max_stream_data_remote = 1 << 40
        connection.engine._remote_max_data = 1 << 40
        with pytest.raises(trioudp.quic.ConnectionClosed) as closed:
            await stream.send_all(b"x" * 100 * WINDOW)
    assert (closed.value.error_code, closed.value.by_peer) == (0x3, True)


@on_virtual_network
async def test_streams_the_application_has_not_taken_count_against_the_peer(
    virtual_network,
):
    servers: list[trioudp.quic.QUICConnection] = []

    async def handler(connection: trioudp.quic.QUICConnection) -> None:
        servers.append(connection)
        await trio.sleep_forever()  # accepts nothing

    async with (
        quic_server(handler, max_streams=8) as server,
        connect(server) as connection,
    ):
        opened = 0
        with trio.move_on_after(30):
            for _ in range(100):
                # Finished at once, so aioquic discards each (and 1.7 would
                # grant another): still held here until the handler takes it.
                stream = await connection.open_stream(unidirectional=True)
                await stream.send_all(b"x")
                await stream.aclose()
                opened += 1
        assert opened == 8
        assert len(servers[0]._incoming) == 8


@on_virtual_network
async def test_a_peer_opening_streams_past_the_limit_is_closed(virtual_network):
    async with quic_server(max_streams=8) as server, connect(server) as connection:
        connection.engine._remote_max_streams_bidi = 1000  # a broken peer
        with pytest.raises(trioudp.quic.ConnectionClosed) as closed:
            await open_streams(connection, 100)
    assert (closed.value.error_code, closed.value.by_peer) == (0x4, True)


@on_virtual_network
async def test_a_servers_reset_tokens_derive_from_its_key(virtual_network):
    key = bytes(range(32))
    async with quic_server(reset_key=key) as server, connect(server) as connection:
        await trio.sleep(1)  # NEW_CONNECTION_ID frames
        engine = connection.engine
        peer_cids = [engine._peer_cid, *engine._peer_cid_available]
        assert len(peer_cids) > 1
        for cid in peer_cids:
            assert cid.stateless_reset_token == reset_token(key, cid.cid)


def test_a_reset_token_depends_on_key_and_connection_id():
    assert reset_token(b"a" * 32, b"1" * 8) != reset_token(b"b" * 32, b"1" * 8)
    assert reset_token(b"a" * 32, b"1" * 8) != reset_token(b"a" * 32, b"2" * 8)
    assert len(reset_token(b"a" * 32, b"1" * 8)) == 16


def test_a_client_recognizes_only_its_peers_tokens():
    engine = Engine(configuration=client_config(), max_streams=8)
    engine._peer_cid.stateless_reset_token = b"t" * 16
    assert engine.is_stateless_reset(b"\x40" + bytes(24) + b"t" * 16)
    assert not engine.is_stateless_reset(b"\x40" + bytes(24) + b"u" * 16)
    assert not engine.is_stateless_reset(b"\xc0" + bytes(24) + b"t" * 16)  # long
    assert not engine.is_stateless_reset(b"\x40" + b"t" * 16)  # too short


def test_a_server_issues_only_the_connection_ids_it_is_given():
    """Every connection ID the server's engine issues (its first, carried in
    the handshake's transport parameters, and those of NEW_CONNECTION_ID)
    comes from ``connection_ids``, and the client accepts the handshake: the
    private attributes the engine sets are aioquic's own."""
    from aioquic.buffer import Buffer
    from aioquic.quic.packet import pull_quic_header

    issued: list[bytes] = []

    def connection_ids() -> bytes:
        issued.append(b"\x07" + bytes([len(issued)]) * 7)
        return issued[-1]

    server_address, client_address = ("127.0.0.1", 4433), ("127.0.0.1", 5000)
    client = Engine(configuration=client_config(), max_streams=8)
    client.connect(server_address, now=0.0)
    first = [data for data, _ in client.datagrams_to_send(now=0.0)]
    odcid = pull_quic_header(Buffer(data=first[0]), 8).destination_cid
    server = Engine(
        configuration=server_config(),
        max_streams=8,
        reset_key=b"k" * 32,
        original_destination_connection_id=odcid,
        connection_ids=connection_ids,
    )
    to_server, now = first, 0.0
    for _ in range(10):
        for data in to_server:
            server.receive_datagram(data, client_address, now=now)
        for data, _ in server.datagrams_to_send(now=now):
            client.receive_datagram(data, server_address, now=now)
        to_server = [data for data, _ in client.datagrams_to_send(now=now)]
        now += 0.01
    assert server.host_cid == issued[0]
    peer_cids = [client._peer_cid, *client._peer_cid_available]
    assert len(peer_cids) > 1
    assert {cid.cid for cid in peer_cids} <= set(issued)
    assert {cid.cid for cid in server._host_cids} <= set(issued)
    for cid in peer_cids:
        assert cid.stateless_reset_token == reset_token(b"k" * 32, cid.cid)
    events = []
    while (event := client.next_event()) is not None:
        events.append(type(event).__name__)
    assert "HandshakeCompleted" in events
    assert "ConnectionTerminated" not in events
