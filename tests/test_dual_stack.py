"""IPv4, IPv6 and dual-stack servers over real loopback: who is served, and
in which form a peer is reported (``Datagram.peer``)."""

import functools
import socket

import pytest
import trio

import trioudp

from .conftest import requires_ipv6

pytestmark = requires_ipv6


def v6only(sock):
    return sock.trio_socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)


async def test_only_an_explicit_wildcard_is_dual_stack():
    async with trioudp.open_udp_socket("::", 0) as both:
        assert v6only(both) == 0
    async with trioudp.open_udp_socket("::", 0, dual_stack=False) as six:
        assert v6only(six) == 1
    async with trioudp.open_udp_socket("::1", 0) as loopback:
        assert v6only(loopback) == 1
    async with trioudp.open_udp_socket(None, 0, family=socket.AF_INET6) as wildcard:
        assert v6only(wildcard) == 1


async def test_dual_stack_socket_reports_ipv4_peers_mapped_and_replies():
    async with (
        trioudp.open_udp_socket("::", 0) as server,
        trioudp.open_udp_socket("127.0.0.1", 0) as four,
    ):
        port = server.local_address[1]
        await four.send_to(b"over IPv4", ("127.0.0.1", port))
        with trio.fail_after(10):
            datagram = await server.receive()
        assert datagram.peer == ("::ffff:127.0.0.1", four.local_address[1], 0, 0)
        await datagram.reply(b"back")
        await server.send_to(b"by address", ("127.0.0.1", four.local_address[1]))
        with trio.fail_after(10):
            assert (await four.receive()).data == b"back"
            reply = await four.receive()
        assert (reply.data, reply.peer) == (b"by address", ("127.0.0.1", port))


async def serve_recording(nursery, host, **options):
    peers = []

    async def handler(datagram):
        peers.append(datagram.peer)
        await datagram.reply(datagram.data)

    server = await nursery.start(
        functools.partial(trioudp.serve_udp, handler, 0, host=host, **options)
    )
    return server, peers


async def request(host, port, data=b"hi"):
    with trio.fail_after(10):
        async with trioudp.open_udp_client(host, port) as client:
            return (await client.request(data)).data


@pytest.mark.parametrize(
    ("host", "ipv4_peer", "ipv6_served"),
    [
        ("::", "::ffff:127.0.0.1", True),
        (None, "127.0.0.1", True),
        ("0.0.0.0", "127.0.0.1", False),
        ("127.0.0.1", "127.0.0.1", False),
    ],
)
async def test_who_each_server_serves(nursery, host, ipv4_peer, ipv6_served):
    server, peers = await serve_recording(nursery, host)
    assert await request("127.0.0.1", server.port) == b"hi"
    assert peers[0][0] == ipv4_peer
    if ipv6_served:
        assert await request("::1", server.port) == b"hi"
        assert peers[1][:1] == ("::1",)
        assert len(peers[1]) == 4
    server.begin_shutdown(0)


async def test_ipv6_only_server_does_not_serve_ipv4(nursery):
    server, _ = await serve_recording(nursery, "::1")
    assert await request("::1", server.port) == b"hi"
    with pytest.raises(trioudp.PeerUnreachable):
        await request("127.0.0.1", server.port)  # nothing listens on IPv4
    server.begin_shutdown(0)


async def test_access_lists_and_rate_limits_judge_mapped_peers_as_ipv4(nursery):
    # The public behaviour today: on a dual-stack socket an IPv4 client is
    # judged by its IPv4 address (deny 127.0.0.0/8 refuses it), and its rate
    # limit bucket is its IPv4 /24, apart from IPv6 clients'.
    denied, _ = await serve_recording(
        nursery, "::", access=trioudp.AccessList(deny=["127.0.0.0/8"])
    )
    limited, _ = await serve_recording(
        nursery, "::", rate_limit=trioudp.RateLimit(rate=0.001, burst=1)
    )
    async with (
        trioudp.open_udp_socket("127.0.0.1", 0) as four,
        trioudp.open_udp_socket("::1", 0) as six,
    ):
        for port in (denied.port, limited.port, limited.port):
            await four.send_to(b"from IPv4", ("127.0.0.1", port))
        assert await request("::1", denied.port) == b"hi"  # after those: in order
        with trio.fail_after(10):
            assert (await four.receive()).data == b"from IPv4"  # limited's first
        await six.send_to(b"from IPv6", ("::1", limited.port))
        with trio.fail_after(10):
            assert (await six.receive()).data == b"from IPv6"  # its own bucket
    assert denied.stats.dropped_denied == 1
    assert limited.stats.dropped_rate_limited == 1
    denied.begin_shutdown(0)
    limited.begin_shutdown(0)


@pytest.mark.parametrize(
    ("host", "ipv4_peer", "ipv6_served"),
    [
        ("::", ("::ffff:127.0.0.1", 0, 0), True),
        (None, ("127.0.0.1",), True),
        ("127.0.0.1", ("127.0.0.1",), False),
    ],
)
async def test_the_same_forms_on_the_virtual_network(
    virtual_network, nursery, host, ipv4_peer, ipv6_served
):
    server, peers = await serve_recording(nursery, host)
    assert await request("127.0.0.1", server.port) == b"hi"
    ip, _port, *scope = peers[0]
    assert (ip, *scope) == ipv4_peer
    if ipv6_served:
        assert await request("::1", server.port) == b"hi"
        assert peers[1][0] == "::1"
    server.begin_shutdown(0)
