"""A protocol layer on a connection's events (``receive_event``,
``transmit``): it sees what the peer sent before it asked, in order; flow
control holds while it does not take events; streams and events do not mix;
the connection's end is raised after the events received."""

from __future__ import annotations

import pytest
import trio
from aioquic.quic import events

import trioudp.quic

from .quic_support import client_config, connect, quic_server, server_config

pytestmark = pytest.mark.virtual_network(latency=0.005)

WINDOW = 32_768


async def read_all(stream: trioudp.quic.QUICStream) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def test_a_layer_sees_what_the_peer_sent_before_it_asked(virtual_network):
    streams: dict[int, bytes] = {}
    ended: list[int] = []
    datagrams: list[bytes] = []

    async def layer(connection: trioudp.quic.QUICConnection) -> None:
        await trio.sleep(1)  # the client has sent everything by now
        while len(ended) < 2 or not datagrams:
            event = await connection.receive_event()
            if isinstance(event, events.StreamDataReceived):
                streams[event.stream_id] = (
                    streams.get(event.stream_id, b"") + event.data
                )
                if event.end_stream:
                    ended.append(event.stream_id)
            elif isinstance(event, events.DatagramFrameReceived):
                datagrams.append(event.data)
        await trio.sleep_forever()

    async with (
        quic_server(
            layer, configuration=server_config(max_datagram_frame_size=1200)
        ) as server,
        connect(
            server, configuration=client_config(max_datagram_frame_size=1200)
        ) as connection,
    ):
        first = await connection.open_stream()
        await first.send_all(b"one")
        await first.send_eof()
        await connection.send_datagram(b"datagram")
        second = await connection.open_stream(unidirectional=True)
        await second.send_all(b"two")
        await second.aclose()
        await trio.sleep(2)
    assert streams == {first.stream_id: b"one", second.stream_id: b"two"}
    assert list(streams) == [first.stream_id, second.stream_id]  # in order
    assert ended == [first.stream_id, second.stream_id]
    assert datagrams == [b"datagram"]


async def test_a_layer_answers_on_the_engine_and_transmits(virtual_network):
    async def shout(connection: trioudp.quic.QUICConnection) -> None:
        received: dict[int, bytearray] = {}
        while True:
            event = await connection.receive_event()
            if isinstance(event, events.StreamDataReceived):
                received.setdefault(event.stream_id, bytearray()).extend(event.data)
                if event.end_stream:
                    data = bytes(received.pop(event.stream_id)).upper()
                    connection.engine.send_stream_data(
                        event.stream_id, data, end_stream=True
                    )
                    connection.transmit()

    async with quic_server(shout) as server, connect(server) as connection:
        for text in (b"hello", b"x" * 100_000):
            async with await connection.open_stream() as stream:
                await stream.send_all(text)
                await stream.send_eof()
                assert await read_all(stream) == text.upper()


async def test_a_layer_gives_credit_only_as_it_takes_events(virtual_network):
    """Small windows: a megabyte flows only because taking events grants
    credit; a layer that stops taking them holds at most max_data."""
    taken = 0
    stop_at = 300_000
    layers: list[trioudp.quic.QUICConnection] = []

    async def layer(connection: trioudp.quic.QUICConnection) -> None:
        nonlocal taken
        layers.append(connection)
        while taken < stop_at:
            event = await connection.receive_event()
            if isinstance(event, events.StreamDataReceived):
                taken += len(event.data)
        await trio.sleep_forever()  # takes nothing more

    settings = {"max_stream_data": WINDOW, "max_data": 2 * WINDOW}
    async with (
        quic_server(layer, configuration=server_config(**settings)) as server,
        connect(server, send_buffer=WINDOW) as connection,
        await connection.open_stream() as stream,
    ):
        with trio.move_on_after(30) as blocked:
            await stream.send_all(b"x" * 1_000_000)
        assert blocked.cancelled_caught  # the layer stopped taking
        assert stop_at <= taken < stop_at + 2 * WINDOW
        assert layers[0]._held.bytes_held <= 2 * WINDOW


async def test_streams_and_events_do_not_mix(virtual_network):
    outcomes: list[str] = []

    async def layer(connection: trioudp.quic.QUICConnection) -> None:
        await connection.receive_event()
        with pytest.raises(trioudp.quic.QUICError, match="protocol layer"):
            await connection.accept_stream()
        with pytest.raises(trioudp.quic.QUICError, match="protocol layer"):
            await connection.open_stream()
        outcomes.append("layer")

    async def streams(connection: trioudp.quic.QUICConnection) -> None:
        await connection.accept_stream()
        with pytest.raises(trioudp.quic.QUICError, match="uses streams"):
            await connection.receive_event()
        outcomes.append("streams")

    for handler in (layer, streams):
        async with quic_server(handler) as server, connect(server) as connection:
            stream = await connection.open_stream()
            await stream.send_all(b"x")
            await trio.sleep(1)
    assert outcomes == ["layer", "streams"]


async def test_datagrams_beyond_the_queue_are_dropped_for_a_layer(virtual_network):
    layers: list[trioudp.quic.QUICConnection] = []

    async def layer(connection: trioudp.quic.QUICConnection) -> None:
        layers.append(connection)
        await connection.receive_event()
        await trio.sleep_forever()

    datagrams = {"max_datagram_frame_size": 1200}
    async with (
        quic_server(
            layer, configuration=server_config(**datagrams), datagram_queue=4
        ) as server,
        connect(server, configuration=client_config(**datagrams)) as connection,
    ):
        for number in range(11):
            await connection.send_datagram(b"%d" % number)
            await trio.sleep(0.1)
        # One taken, four waiting, six dropped.
        assert (len(layers[0]._held), layers[0].datagrams_dropped) == (4, 6)


async def test_the_end_is_raised_after_the_events_received(virtual_network):
    got: list[object] = []
    done = trio.Event()

    async def layer(connection: trioudp.quic.QUICConnection) -> None:
        try:
            await trio.sleep(2)  # the client has sent and closed by now
            while True:
                got.append(type(await connection.receive_event()))
        except trioudp.quic.ConnectionClosed as closed:
            got.append((closed.error_code, closed.by_peer))
        finally:
            done.set()

    async with quic_server(layer) as server:
        async with connect(server) as connection:
            stream = await connection.open_stream()
            await stream.send_all(b"last words")
            await trio.sleep(0.5)
            await connection.aclose(7, "bye")
        with trio.fail_after(10):
            await done.wait()
    assert got == [events.StreamDataReceived, (7, True)]
