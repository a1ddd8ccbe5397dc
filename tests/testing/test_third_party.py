"""Other people's Trio UDP code runs unmodified on the virtual network:
anyio's UDP sockets on its Trio backend and trio's DTLSEndpoint (dnspython's
Trio backend: tests/testing/test_network.py)."""

import socket

import anyio
import pytest
import trio
import trustme
from anyio.abc import SocketAttribute
from OpenSSL import SSL

from trioudp.testing import VirtualNetwork


@pytest.fixture(params=["kernel", "virtual"])
async def network(request):
    if request.param == "kernel":
        yield None
    else:
        net = VirtualNetwork(seed=0)
        with net.install():
            yield net


async def test_anyio_udp_sockets_and_their_extra_attributes(network):
    async with (
        await anyio.create_udp_socket(local_host="127.0.0.1") as server,
        await anyio.create_connected_udp_socket(
            "127.0.0.1", server.extra(SocketAttribute.local_port)
        ) as client,
    ):
        assert server.extra(SocketAttribute.family) == socket.AF_INET
        host, port = client.extra(SocketAttribute.local_address)
        assert host == "127.0.0.1"
        assert client.extra(SocketAttribute.local_port) == port
        assert client.extra(SocketAttribute.remote_address) == (
            "127.0.0.1",
            server.extra(SocketAttribute.local_port),
        )
        assert client.extra(SocketAttribute.raw_socket).family == socket.AF_INET
        await client.send(b"ping")
        data, peer = await server.receive()
        assert (data, peer) == (b"ping", (host, port))
        await server.sendto(b"pong", *peer)
        assert await client.receive() == b"pong"
    with pytest.raises(anyio.ClosedResourceError):
        await client.receive()


async def test_anyio_reports_a_refused_datagram_as_broken(network):
    async with await anyio.create_udp_socket(local_host="127.0.0.1") as gone:
        port = gone.extra(SocketAttribute.local_port)
    async with await anyio.create_connected_udp_socket("127.0.0.1", port) as client:
        await client.send(b"anyone?")
        with pytest.raises(anyio.BrokenResourceError) as info:
            await client.receive()
        assert isinstance(info.value.__cause__, ConnectionRefusedError)


async def test_trio_dtls_handshake_and_data_through_loss(autojump_clock):
    ca = trustme.CA()
    server_ctx = SSL.Context(SSL.DTLS_METHOD)
    ca.issue_cert("dtls.test").configure_cert(server_ctx)
    client_ctx = SSL.Context(SSL.DTLS_METHOD)
    ca.configure_trust(client_ctx)
    net = VirtualNetwork(seed=5, latency=0.02, loss=0.2)
    with net.install():
        server_sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await server_sock.bind(("127.0.0.1", 0))

        async def shout(channel: trio.DTLSChannel) -> None:
            async for data in channel:
                await channel.send(data.upper())

        with (
            trio.DTLSEndpoint(server_sock) as server,
            trio.DTLSEndpoint(
                trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            ) as client,
        ):
            async with trio.open_nursery() as nursery:
                await nursery.start(server.serve, server_ctx, shout)
                channel = client.connect(server_sock.getsockname(), client_ctx)
                with trio.fail_after(60):
                    await channel.do_handshake()
                    replies = []
                    for word in (b"one", b"two", b"three"):
                        while True:  # DTLS does not resend data: we do
                            await channel.send(word)
                            with trio.move_on_after(0.5):
                                replies.append(await channel.receive())
                                break
                assert replies == [b"ONE", b"TWO", b"THREE"]
                nursery.cancel_scope.cancel()
    assert net.stats.dropped["loss"] > 0
