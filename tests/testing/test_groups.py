"""Interfaces, multicast and broadcast between hosts of a VirtualNetwork:
what a single network namespace cannot show (the conformance suite covers
one host against the kernel)."""

import errno
import socket
import struct

import pytest
import trio

from trioudp.testing import VirtualNetwork

from .conftest import bound, ifindex_of_next

GROUP = "239.7.7.7"


async def on_hosts(net, hosts, port):
    """A listener on ``port`` on each of ``hosts``."""
    receivers = []
    for host in hosts:
        with net.on_host(host):
            receivers.append(await bound("0.0.0.0", port))
    return receivers


async def broadcaster(net, host):
    with net.on_host(host):
        sender = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    return sender


def lan(net, count=3, prefix="10.0.0"):
    return [net.add_host(f"{prefix}.{n}/24", name=f"h{n}") for n in range(1, count + 1)]


async def test_multicast_reaches_members_on_other_hosts_unless_ttl_0():
    net = VirtualNetwork(seed=1)
    with net.install():
        one, two, three = lan(net)
        with net.on_host(two):
            member = await bound("0.0.0.0")
        port = member.getsockname()[1]
        member.setsockopt(
            socket.IPPROTO_IP,
            socket.IP_ADD_MEMBERSHIP,
            socket.inet_aton(GROUP) + socket.inet_aton("0.0.0.0"),
        )
        with net.on_host(three):
            bystander = await bound("0.0.0.0", port)  # on the port, not a member
        with net.on_host(one):
            sender = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sender.sendto(b"hops", (GROUP, port))
        assert await ifindex_of_next(member) == (b"hops", "10.0.0.1", 2)
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
        await sender.sendto(b"stays home", (GROUP, port))
        assert not member.is_readable()
        assert not bystander.is_readable()
        member.setsockopt(
            socket.IPPROTO_IP,
            socket.IP_DROP_MEMBERSHIP,
            socket.inet_aton(GROUP) + socket.inet_aton("10.0.0.2"),
        )
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        await sender.sendto(b"left", (GROUP, port))
        assert not member.is_readable()
    drops = net.stats.dropped
    assert drops["no_receiver"] >= 2
    for sock in (member, bystander, sender):
        sock.close()


async def test_ipv6_multicast_between_hosts():
    net = VirtualNetwork(seed=1)
    with net.install():
        a = net.add_host("fd00::1")
        b = net.add_host("fd00::2")
        with net.on_host(b):
            member = await bound("::", family=socket.AF_INET6)
        member.setsockopt(
            socket.IPPROTO_IPV6,
            socket.IPV6_JOIN_GROUP,
            socket.inet_pton(socket.AF_INET6, "ff15::7") + struct.pack("@I", 0),
        )
        with net.on_host(a):
            sender = trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        await sender.sendto(b"six", ("ff15::7", member.getsockname()[1]))
        data, peer = await member.recvfrom(10)
        assert (data, peer[0]) == (b"six", "fd00::1")
        member.close()
        sender.close()


async def test_subnet_broadcast_reaches_its_subnet_and_limited_broadcast_all():
    net = VirtualNetwork(seed=1)
    with net.install():
        one, two = lan(net, 2)
        other = net.add_host("10.1.0.9/24", name="other")
        receivers = await on_hosts(net, (two, other), 5353)
        sender = await broadcaster(net, one)
        await sender.sendto(b"subnet", ("10.0.0.255", 5353))
        await sender.sendto(b"everyone", ("255.255.255.255", 5353))
        near, far = receivers
        assert [(await near.recvfrom(20))[0] for _ in range(2)] == [
            b"subnet",
            b"everyone",
        ]
        assert await far.recv(20) == b"everyone"
        assert not far.is_readable()
        for sock in (*receivers, sender):
            sock.close()


async def test_partitions_and_latency_apply_to_group_copies(autojump_clock):
    net = VirtualNetwork(seed=1, latency=0.25)
    with net.install():
        one, two, three = lan(net)
        receivers = await on_hosts(net, (two, three), 9999)
        sender = await broadcaster(net, one)
        net.partition(one, three)
        start = trio.current_time()
        await sender.sendto(b"hi", ("10.0.0.255", 9999))
        assert await receivers[0].recv(10) == b"hi"
        assert trio.current_time() - start == 0.25
        assert not receivers[1].is_readable()
        # The sender's own host hears it too, with nobody on the port there.
        assert net.stats.dropped == {"partition": 1, "no_receiver": 1}
        assert [(e.kind, e.reason) for e in net.trace] == [
            ("partition", "h1 <> h3"),
            ("send", None),
            ("drop", "partition"),
            ("drop", "no_receiver"),
            ("deliver", None),
        ]
        for sock in (*receivers, sender):
            sock.close()


async def test_a_loopback_only_host_uses_lo(virtual_network):
    """``localhost`` has no eth0: multicast goes through lo, and the limited
    broadcast has no route (as in a network namespace with only lo)."""
    sock = await bound("0.0.0.0")
    sock.setsockopt(
        socket.IPPROTO_IP,
        socket.IP_ADD_MEMBERSHIP,
        socket.inet_aton(GROUP) + socket.inet_aton("0.0.0.0"),
    )
    await sock.sendto(b"self", (GROUP, sock.getsockname()[1]))
    assert await ifindex_of_next(sock) == (b"self", "127.0.0.1", 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    with pytest.raises(OSError) as info:
        await sock.sendto(b"x", ("255.255.255.255", 9))
    assert info.value.errno == errno.ENETUNREACH
    sock.close()


async def test_closing_a_member_leaves_its_groups(virtual_network):
    virtual_network.add_address(virtual_network.localhost, "10.0.0.1/24")
    member = await bound("0.0.0.0")
    port = member.getsockname()[1]
    member.setsockopt(
        socket.IPPROTO_IP,
        socket.IP_ADD_MEMBERSHIP,
        socket.inet_aton(GROUP) + socket.inet_aton("10.0.0.1"),
    )
    bystander = await bound("0.0.0.0", port)
    member.close()
    await bystander.sendto(b"nobody", (GROUP, port))
    assert not bystander.is_readable()
    assert virtual_network.stats.dropped == {"no_receiver": 1}
    bystander.close()
