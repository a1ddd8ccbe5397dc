"""Other people's Trio UDP code runs unmodified on the virtual network:
anyio's UDP sockets on its Trio backend, trio's DTLSEndpoint and dnspython's
Trio backend."""

import functools
import socket

import anyio
import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.message
import dns.rrset
import pytest
import trio
import trustme
from anyio.abc import SocketAttribute
from OpenSSL import SSL

import trioudp
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


def dns_responder(answers):
    async def handler(datagram):
        query = dns.message.from_wire(datagram.data)
        response = dns.message.make_response(query)
        name = query.question[0].name
        response.answer.append(
            dns.rrset.from_text(name, 60, "IN", "A", answers[name.to_text()])
        )
        await datagram.reply(response.to_wire())

    return handler


async def test_dnspython_trio_backend_retries_through_20_percent_loss(autojump_clock):
    import time

    net = VirtualNetwork(seed=20, latency=0.02, loss=0.2)
    backend = dns.asyncbackend.get_backend("trio")
    wall = time.monotonic()
    with net.install():
        net.add_host("10.53.0.1", names=["ns.test"])
        async with trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(
                    trioudp.serve_udp,
                    dns_responder({"www.example.": "192.0.2.80"}),
                    53,
                    host="10.53.0.1",
                )
            )
            start = trio.current_time()
            answers = []
            tries = 0
            while len(answers) < 20:
                tries += 1
                query = dns.message.make_query("www.example.", "A")
                try:
                    response = await dns.asyncquery.udp(
                        query, "10.53.0.1", timeout=0.5, backend=backend
                    )
                except dns.exception.Timeout:
                    continue
                answers.append(response.answer[0][0].address)
            nursery.cancel_scope.cancel()
    assert answers == ["192.0.2.80"] * 20
    assert tries > 20  # some queries were lost and retried
    assert net.stats.dropped["loss"] > 0
    assert trio.current_time() - start > 1.0  # seconds of virtual time...
    assert time.monotonic() - wall < 1.0  # ...in well under a second
