"""QUICConnection: streams, datagrams, timers on Trio's clock, and how a
connection ends (structured concurrency)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import trioudp
import trioudp.quic

from .conftest import open_fds
from .quic_support import ALPN, client_config, connect, echo, quic_server, server_config

pytestmark = pytest.mark.virtual_network(latency=0.01)


async def read_all(stream: trioudp.quic.QUICStream) -> bytes:
    return b"".join([data async for data in stream])


def server_tasks() -> list[str]:
    """The names of the tasks of trioudp's servers and connections alive."""

    def walk(task: trio.lowlevel.Task):
        yield task.name
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                yield from walk(child)

    return [
        name
        for name in walk(trio.lowlevel.current_root_task())
        if "trioudp" in name and "VirtualNetwork" not in name
    ]


async def test_a_stream_echoes_a_megabyte_and_the_connection_knows_its_peer(
    virtual_network,
):
    payload = bytes(range(256)) * 4096
    async with quic_server() as server, connect(server) as connection:
        assert connection.alpn_protocol == ALPN
        assert connection.is_client
        assert connection.peer_address == ("127.0.0.1", server.port)
        async with await connection.open_stream() as stream:
            received = bytearray()

            async def send() -> None:
                await stream.send_all(payload)
                await stream.send_eof()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                async for data in stream:
                    received += data
        assert received == payload


async def test_each_connection_gets_its_own_handler_task(virtual_network):
    seen = []

    async def handler(connection: trioudp.quic.QUICConnection) -> None:
        seen.append((trio.lowlevel.current_task(), connection.peer_address))
        await echo(connection)

    async with quic_server(handler) as server:
        async with connect(server), connect(server):
            while len(seen) < 2:  # noqa: ASYNC110 (handlers start after the handshake)
                await trio.sleep(0.01)
        assert len({task for task, _ in seen}) == 2
        assert len({peer for _, peer in seen}) == 2
        assert server.stats.established == 2


async def test_the_idle_timeout_runs_on_trios_clock(virtual_network):
    ended = []

    async def handler(connection: trioudp.quic.QUICConnection) -> None:
        with pytest.raises(trioudp.quic.ConnectionClosed) as closed:
            await connection.accept_stream()
        ended.append((trio.current_time(), closed.value))

    configuration = server_config(idle_timeout=5.0)
    async with quic_server(handler, configuration=configuration) as server:
        async with connect(server, configuration=client_config(idle_timeout=5.0)) as c:
            start = trio.current_time()
            with pytest.raises(trioudp.quic.ConnectionClosed) as closed:
                await c.accept_stream()
            assert closed.value.reason == "Idle timeout"
            assert not closed.value.by_peer
            # The idle timeout is at least three probe timeouts, and these
            # are short on a 20 ms round trip: 5 s it is.
            assert 5.0 <= trio.current_time() - start < 5.1
        while not ended:  # noqa: ASYNC110
            await trio.sleep(0.1)
        assert 5.0 <= ended[0][0] - start < 5.1


async def test_cancelling_a_streams_task_resets_the_stream(virtual_network):
    outcomes = []

    async def handler(connection: trioudp.quic.QUICConnection) -> None:
        stream = await connection.accept_stream()
        try:
            while True:
                await stream.receive_some()
        except trioudp.quic.StreamReset as exc:
            outcomes.append(("receive", exc.error_code))
        try:
            while True:
                await stream.send_all(b"x" * 1000)
        except trioudp.quic.SendingStopped as exc:
            outcomes.append(("send", exc.error_code))

    async with quic_server(handler) as server, connect(server, reset_code=77) as c:
        with trio.move_on_after(1):
            async with await c.open_stream() as stream:
                await stream.send_all(b"hello")
                await trio.sleep_forever()
        while len(outcomes) < 2:  # noqa: ASYNC110
            await trio.sleep(0.01)
    assert outcomes == [("receive", 77), ("send", 77)]


async def test_a_send_all_cancelled_part_way_resets_the_stream(virtual_network):
    resets = []

    async def handler(connection: trioudp.quic.QUICConnection) -> None:
        stream = await connection.accept_stream()
        await stream.receive_some(1)
        await trio.sleep(10)  # read nothing more: the client's send_all waits
        with pytest.raises(trioudp.quic.StreamReset) as reset:
            await read_all(stream)
        resets.append(reset.value.error_code)

    settings = {"max_stream_data": 10_000}
    async with (
        quic_server(handler, configuration=server_config(**settings)) as server,
        connect(server, send_buffer=10_000, reset_code=5) as connection,
    ):
        stream = await connection.open_stream()
        await stream.send_all(b"!")
        with trio.move_on_after(1) as scope:
            await stream.send_all(b"x" * 100_000)
        assert scope.cancelled_caught
        with pytest.raises(trio.BrokenResourceError, match="cancelled part-way"):
            await stream.send_all(b"more")
        while not resets:  # noqa: ASYNC110
            await trio.sleep(0.1)
    assert resets == [5]


async def test_closing_the_connection_ends_every_wait_on_both_sides(virtual_network):
    peer_errors = []

    async def handler(connection: trioudp.quic.QUICConnection) -> None:
        stream = await connection.accept_stream()
        assert await stream.receive_some() == b"hi"

        async def wait(function) -> None:
            with pytest.raises(trioudp.quic.ConnectionClosed) as closed:
                await function()
            peer_errors.append(closed.value)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait, stream.receive_some)
            nursery.start_soon(wait, connection.accept_stream)
            nursery.start_soon(wait, connection.receive_datagram)

    local_errors = []
    async with quic_server(handler) as server, connect(server) as connection:
        stream = await connection.open_stream()
        await stream.send_all(b"hi")

        async def wait(function) -> None:
            with pytest.raises(trio.ClosedResourceError) as closed:
                await function()
            local_errors.append(closed.value)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait, stream.receive_some)
            nursery.start_soon(wait, connection.accept_stream)
            nursery.start_soon(wait, connection.receive_datagram)
            await trio.sleep(1)
            await connection.aclose(0x42, "bye")
        with pytest.raises(trio.ClosedResourceError):
            await connection.open_stream()
        while len(peer_errors) < 3:  # noqa: ASYNC110
            await trio.sleep(0.01)
    assert len(local_errors) == 3
    assert {
        (e.error_code, e.reason, e.application, e.by_peer) for e in peer_errors
    } == {(0x42, "bye", True, True)}


async def test_a_handler_that_raises_is_counted_and_its_connection_closed(
    virtual_network, caplog
):
    async def handler(connection: trioudp.quic.QUICConnection) -> None:
        raise RuntimeError("boom")

    async with quic_server(handler) as server, connect(server) as connection:
        with pytest.raises(trioudp.quic.ConnectionClosed) as closed:
            await connection.accept_stream()
        assert (closed.value.error_code, closed.value.application) == (0x1, False)
        assert server.stats.handler_errors == 1
    assert "QUIC handler failed" in caplog.text


async def test_shutdown_gives_handlers_their_grace_then_closes_and_leaves_nothing(
    virtual_network,
):
    finished = []

    async def handler(connection: trioudp.quic.QUICConnection) -> None:
        stream = await connection.accept_stream()
        if await stream.receive_some() == b"quick":
            await stream.send_all(b"done")
            await stream.aclose()
            finished.append("quick")
            return
        await trio.sleep_forever()

    async with (
        trio.open_nursery() as nursery,
        quic_server(handler) as server,
        connect(server) as quick,
        connect(server) as slow,
    ):
        streams = []
        for connection, text in ((quick, b"quick"), (slow, b"slow")):
            streams.append(await connection.open_stream())
            await streams[-1].send_all(text)
        assert await streams[0].receive_some() == b"done"
        start = trio.current_time()
        nursery.start_soon(server.shutdown, 3.0)
        with pytest.raises(trioudp.quic.ConnectionClosed) as closed:
            await slow.accept_stream()
        assert closed.value.by_peer
        assert trio.current_time() - start == pytest.approx(3.0, abs=0.05)
    assert finished == ["quick"]
    assert server.stats.connections == 0
    assert server_tasks() == []


@pytest.mark.virtual_network(autojump=False)
async def test_a_server_on_real_sockets_leaves_no_descriptor_open():
    before = open_fds()
    async with (
        quic_server() as server,
        connect(server) as connection,
        await connection.open_stream() as stream,
    ):
        await stream.send_all(b"ping")
        await stream.send_eof()
        assert await stream.receive_some() == b"ping"
    assert open_fds() == before


async def test_datagrams_echo_and_size_is_checked(virtual_network):
    settings = {"max_datagram_frame_size": 1200}
    async with (
        quic_server(configuration=server_config(**settings)) as server,
        connect(server, configuration=client_config(**settings)) as connection,
    ):
        await connection.send_datagram(b"ping")
        assert await connection.receive_datagram() == b"ping"
        with pytest.raises(trioudp.DatagramTooLarge) as too_large:
            await connection.send_datagram(b"x" * 1200)
        limit = too_large.value.limit
        await connection.send_datagram(b"y" * limit)
        assert await connection.receive_datagram() == b"y" * limit


async def test_datagrams_need_both_ends_to_enable_them(virtual_network):
    async with quic_server() as server, connect(server) as connection:
        with pytest.raises(trioudp.quic.QUICError, match="max_datagram_frame_size"):
            await connection.send_datagram(b"ping")


async def test_received_datagrams_beyond_the_queue_are_dropped_and_counted(
    virtual_network,
):
    settings = {"max_datagram_frame_size": 1200}

    async def handler(connection: trioudp.quic.QUICConnection) -> None:
        for i in range(10):
            await connection.send_datagram(b"%d" % i)
        await trio.sleep_forever()

    async with (
        quic_server(handler, configuration=server_config(**settings)) as server,
        connect(
            server, configuration=client_config(**settings), datagram_queue=4
        ) as connection,
    ):
        await trio.sleep(1)
        received = [connection.receive_datagram, connection.receive_datagram]
        assert [await receive() for receive in received] == [b"6", b"7"]
        assert connection.datagrams_dropped == 6


async def test_open_stream_waits_for_the_peers_stream_limit(virtual_network):
    async def handler(connection: trioudp.quic.QUICConnection) -> None:
        streams = [await connection.accept_stream() for _ in range(3)]
        await trio.sleep(5)
        for stream in streams:
            await stream.aclose()
        await trio.sleep_forever()

    async with quic_server(handler, max_streams=3) as server, connect(server) as c:
        opened = []
        for _ in range(3):
            stream = await c.open_stream()
            await stream.send_all(b"x")
            await stream.aclose()
            opened.append(trio.current_time())
        fourth = await c.open_stream()
        assert trio.current_time() - opened[0] >= 5.0
        await fourth.aclose()


async def test_operations_are_checkpoints(virtual_network):
    async with quic_server() as server, connect(server) as connection:
        with trio.testing.assert_checkpoints():
            stream = await connection.open_stream()
        with trio.testing.assert_checkpoints():
            await stream.send_all(b"x")
        with trio.testing.assert_checkpoints():
            await stream.aclose()
