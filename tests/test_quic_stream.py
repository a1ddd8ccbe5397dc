"""QUICStream: trio's own conformance checks for half-closeable streams, and
what is particular to QUIC streams."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from .quic_support import client_config, connect, quic_server, server_config

if TYPE_CHECKING:
    import trioudp.quic

WINDOW = 4096


def stream_pairs(nursery: trio.Nursery, *, clogged: bool):
    """A maker of (client stream, server stream) pairs for trio's checks.

    Windows and send buffers are ``WINDOW`` bytes: a clogged pair has sent a
    window the peer has not read, and a window more that flow control holds
    back, so ``send_all`` waits until the peer reads.
    """
    accepted, incoming = trio.open_memory_channel(0)

    async def handler(connection: trioudp.quic.QUICConnection) -> None:
        while True:
            stream = await connection.accept_stream()
            await stream.receive_some(1)  # the byte that announced it
            await accepted.send(stream)

    state = {}

    async def make():
        if "client" not in state:
            settings = {"max_stream_data": WINDOW, "max_data": 64 * WINDOW}
            server = await nursery.start(_serve, handler, server_config(**settings))
            state["client"] = await nursery.start(
                _client, server, client_config(**settings)
            )
        connection = state["client"]
        stream = await connection.open_stream()
        await stream.send_all(b"!")
        peer = await incoming.receive()
        if clogged:
            await peer.send_all(b"!")
            assert await stream.receive_some(1) == b"!"
            # Each side's window has WINDOW - 1 bytes left: fill it and a
            # send buffer more, in both directions (trio checks both).
            async with trio.open_nursery() as fill:
                for end in (stream, peer):
                    fill.start_soon(end.send_all, b"c" * (2 * WINDOW - 1))
            for end in (stream, peer):
                # Acknowledgements of the first window (nothing signals them).
                while end._engine.send_buffered(end.stream_id) > WINDOW:  # noqa: ASYNC110
                    await trio.sleep(0.01)
        return stream, peer

    return make


async def _serve(handler, configuration, task_status):
    async with quic_server(
        handler, configuration=configuration, send_buffer=WINDOW
    ) as server:
        task_status.started(server)
        await trio.sleep_forever()


async def _client(server, configuration, task_status):
    async with connect(
        server, configuration=configuration, send_buffer=WINDOW
    ) as connection:
        task_status.started(connection)
        await trio.sleep_forever()


@pytest.mark.virtual_network
async def test_quic_streams_pass_trios_half_closeable_stream_checks(virtual_network):
    async with trio.open_nursery() as nursery:
        await trio.testing.check_half_closeable_stream(
            stream_pairs(nursery, clogged=False), stream_pairs(nursery, clogged=True)
        )
        nursery.cancel_scope.cancel()


async def test_quic_streams_pass_trios_checks_on_real_loopback_sockets():
    async with trio.open_nursery() as nursery:
        await trio.testing.check_half_closeable_stream(
            stream_pairs(nursery, clogged=False), None
        )
        nursery.cancel_scope.cancel()
