"""Hosts: their addresses (with prefixes), who owns loopback, lookups by
address or name, and the routes they send by."""

import errno
import socket

import pytest
import trio

import trioudp
from trioudp.testing import VirtualNetwork


@pytest.mark.parametrize(
    ("addresses", "error", "fragment"),
    [
        ("db.test", ValueError, "numeric IPs"),
        ("10.0.0.3/x", ValueError, "numeric IPs"),
        ("127.0.0.1", ValueError, "belongs to"),  # localhost's own
        ("127.0.0.2", ValueError, "belongs to"),  # all of 127/8 is localhost's
        ([], ValueError, "at least one address"),
    ],
)
def test_host_addresses_are_numeric_and_owned_once(addresses, error, fragment):
    with pytest.raises(error, match=fragment):
        VirtualNetwork().add_host(addresses)


def test_addresses_with_prefixes_and_loopback_ownership():
    net = VirtualNetwork()
    host = net.add_host(["10.0.0.2/24", "fd00::2/64"], name="db")
    assert host.addresses == ("10.0.0.2", "fd00::2")
    net.add_address(host, "10.0.1.2")
    assert net.host("10.0.1.2") is host
    assert net.host("127.3.4.5") is net.localhost
    with pytest.raises(KeyError, match="no host"):
        net.host("10.9.9.9")


# ---- routes: the source a host sends from, and where it cannot send -----------


async def test_a_wildcard_server_on_a_host_answers_a_client_on_localhost(
    autojump_clock,
):
    # The test body lives on localhost, which has no eth0 here: it reaches
    # other hosts from 127.0.0.1 (a kept difference). The server's reply to
    # 127.0.0.1 leaves by its eth0, from its eth0 address, so the connected
    # client takes it (it used to leave from 127.0.0.1 and be filtered).
    net = VirtualNetwork(seed=1, latency=0.01)
    server_host = net.add_host("10.0.0.2", names=["echo.test"])

    async def echo(datagram):
        await datagram.reply(datagram.data)

    with net.install():
        async with trio.open_nursery() as nursery:
            with net.on_host(server_host):
                server = await nursery.start(trioudp.serve_udp, echo, 7)
            async with trioudp.open_udp_client("echo.test", 7) as client:
                reply = await client.request(b"ping")
            assert (reply.data, reply.peer) == (b"ping", ("10.0.0.2", 7))
            await server.shutdown()
    replies = [e for e in net.trace if e.kind == "send" and e.src[1] == 7]
    assert [(e.src, e.dst[0]) for e in replies] == [(("10.0.0.2", 7), "127.0.0.1")]


async def test_unreachable_addresses():
    net = VirtualNetwork()
    net.add_address(net.localhost, "10.0.0.1/24")
    six_only = net.add_host("fd00::6", name="six-only")
    with net.install():
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # An address no host has, on its subnet or beyond: sent by eth0,
        # then lost, as behind a default route.
        await sock.sendto(b"nobody", ("10.0.0.99", 9))
        await sock.sendto(b"nobody either", ("10.1.0.1", 9))
        # A host with no address of the family has no route.
        with net.on_host(six_only):
            four = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with pytest.raises(OSError) as info:
            await four.connect(("10.0.0.1", 9))
        assert info.value.errno == errno.ENETUNREACH
    assert net.stats.dropped == {"host_unreachable": 2}


async def test_localhost_without_eth0_reaches_other_hosts_only():
    net = VirtualNetwork()
    net.add_host("10.0.0.2")
    with net.install():
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sock.connect(("10.0.0.2", 9))
        assert sock.getsockname()[0] == "127.0.0.1"  # kept: Linux says ENETUNREACH
        with pytest.raises(OSError) as info:
            await sock.connect(("10.0.0.3", 9))  # no host has it, no subnet
        assert info.value.errno == errno.ENETUNREACH
