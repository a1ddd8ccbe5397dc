"""Multicast and broadcast: the option values (pure), the socket methods on
loopback (no group is joined on the host's network), and real exchanges inside
a network namespace the test creates."""

import json
import socket
import struct
import subprocess
import sys

import pytest
import trio

import trioudp
from trioudp._multicast import (
    Multicast,
    interface_index,
    joined_index,
    membership_request,
    outgoing_interface,
)

from .conftest import ROOT, needs, netns_missing, requires_ipv6

LO = socket.if_nametoindex("lo")


def test_ipv4_membership_by_address_is_an_ip_mreq():
    value = membership_request(socket.AF_INET, "239.1.2.3", "192.0.2.7")
    assert value == socket.inet_aton("239.1.2.3") + socket.inet_aton("192.0.2.7")


def test_ipv4_membership_by_name_or_index_is_an_ip_mreqn():
    expected = socket.inet_aton("239.1.2.3") + bytes(4) + struct.pack("@i", LO)
    assert membership_request(socket.AF_INET, "239.1.2.3", "lo") == expected
    assert membership_request(socket.AF_INET, "239.1.2.3", LO) == expected
    assert membership_request(socket.AF_INET, "239.1.2.3") == (
        socket.inet_aton("239.1.2.3") + bytes(4)
    )


def test_ipv6_membership_is_an_ipv6_mreq():
    value = membership_request(socket.AF_INET6, "ff15::1", "lo")
    assert value == socket.inet_pton(socket.AF_INET6, "ff15::1") + struct.pack("@I", LO)
    with pytest.raises(ValueError, match="interface name or index"):
        membership_request(socket.AF_INET6, "ff15::1", "::1")
    with pytest.raises(ValueError, match="interface name or index"):
        membership_request(socket.AF_INET6, "ff15::1", "127.0.0.1")


@pytest.mark.parametrize(
    ("family", "group", "reason"),
    [
        (socket.AF_INET, "192.0.2.1", "not a multicast address"),
        (socket.AF_INET, "example.test", "numeric"),
        (socket.AF_INET, "ff15::1", "IPv4 socket cannot join"),
        (socket.AF_INET6, "239.1.2.3", "IPv6 socket cannot join"),
    ],
)
def test_bad_groups_are_refused_by_name(family, group, reason):
    with pytest.raises(trioudp.InvalidAddress, match=reason):
        membership_request(family, group)


def test_interfaces_by_name_index_or_address():
    assert interface_index("lo") == LO
    assert interface_index(None) == 0
    assert joined_index("127.0.0.1") == 0
    assert joined_index("lo") == LO
    with pytest.raises(ValueError, match="no network interface is named"):
        interface_index("no-such-if0")
    with pytest.raises(ValueError, match=">= 0"):
        interface_index(-1)
    assert outgoing_interface(socket.AF_INET, "127.0.0.1") == socket.inet_aton(
        "127.0.0.1"
    )
    assert outgoing_interface(socket.AF_INET, "lo") == bytes(8) + struct.pack("@i", LO)
    assert outgoing_interface(socket.AF_INET6, "lo") == LO


def test_multicast_settings_are_checked_and_split_by_family():
    both = Multicast(groups=["239.1.2.3", "ff15::1"], interface="127.0.0.1", ttl=0)
    assert both.for_family(socket.AF_INET).groups == ("239.1.2.3",)
    six = both.for_family(socket.AF_INET6)
    assert six.groups == ("ff15::1",)
    assert six.interface is None  # an IPv4 address names no IPv6 interface
    assert Multicast(groups="239.1.2.3").groups == ("239.1.2.3",)
    with pytest.raises(ValueError, match="ttl must be an int in 0..255"):
        Multicast(ttl=256)
    with pytest.raises(trioudp.InvalidAddress):
        Multicast(groups=["10.0.0.1"])


def option(sock, level, name):
    return sock.trio_socket.getsockopt(level, name)


async def test_socket_options_reach_the_kernel():
    async with trioudp.open_udp_socket("127.0.0.1", 0) as sock:
        assert option(sock, socket.SOL_SOCKET, socket.SO_BROADCAST) == 0
        sock.set_broadcast(True)
        assert option(sock, socket.SOL_SOCKET, socket.SO_BROADCAST) == 1
        sock.set_multicast_ttl(7)
        assert option(sock, socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 7
        sock.set_multicast_loopback(False)
        assert option(sock, socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP) == 0
        sock.set_multicast_interface("127.0.0.1")
        raw = sock.trio_socket.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, 4)
        assert raw == socket.inet_aton("127.0.0.1")
        with pytest.raises(ValueError, match="0..255"):
            sock.set_multicast_ttl(256)
        with pytest.raises(trioudp.InvalidAddress):
            sock.join_group("ff15::1")
    with pytest.raises(trio.ClosedResourceError):
        sock.set_broadcast(True)


@requires_ipv6
async def test_ipv6_socket_options_reach_the_kernel():
    settings = Multicast(interface="lo", ttl=3, loopback=False)
    async with trioudp.open_udp_socket("::1", 0, multicast=settings) as sock:
        assert option(sock, socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS) == 3
        assert option(sock, socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP) == 0
        assert option(sock, socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF) == LO


async def test_open_and_serve_options_set_broadcast(nursery):
    async with trioudp.open_udp_socket("127.0.0.1", 0, broadcast=True) as sock:
        assert option(sock, socket.SOL_SOCKET, socket.SO_BROADCAST) == 1

    async def handler(datagram):
        pass

    server = await nursery.start(
        lambda task_status: trioudp.serve_udp(
            handler,
            0,
            host="127.0.0.1",
            broadcast=True,
            multicast=Multicast(ttl=4),
            task_status=task_status,
        )
    )
    (sock,) = server.sockets
    assert option(sock, socket.SOL_SOCKET, socket.SO_BROADCAST) == 1
    assert option(sock, socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 4
    server.begin_shutdown(0)


def veth_missing() -> str | None:
    """Why a namespace with a veth pair cannot be made here (None if it can)."""
    missing = netns_missing()
    if missing is not None:
        return missing
    veth = ["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"]
    probe = subprocess.run(["unshare", "-n", *veth], capture_output=True, check=False)
    if probe.returncode:
        return f"cannot make a veth pair: {probe.stderr.decode().strip()}"
    return None


@needs(veth_missing())
async def test_real_multicast_and_broadcast_inside_a_network_namespace():
    with trio.fail_after(90):
        done = await trio.run_process(
            ["unshare", "-n", sys.executable, "tests/netns/multicast_exchange.py"],
            cwd=ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()
    results = json.loads(done.stdout)
    v1 = 2  # `ip link add v0 type veth peer name v1` makes v1 first
    for family, group, sender in (
        ("ipv4", "239.1.2.3", "10.7.0.1"),
        ("ipv6", "ff15::7", "fe80::"),
    ):
        exchange = results[family]
        assert exchange["groups"] == [[group, v1]]
        assert exchange["received"] == f"hello {family}"
        assert exchange["from"].startswith(sender)
        assert exchange["reply"] == "ack"
        assert exchange["ttl_option"] == [0, 1]
        assert exchange["groups_after_leave"] == []
        assert exchange["rejoined"] == "joined again"
        assert exchange["loopback"] == "loopback on"
        assert results[f"served_{family}"] == "served ping"
        assert results[f"listen_{family}"].startswith(f"('{sender}")
        assert results[f"listen_{family}"].endswith(" 12 bytes: to the group")
    code, out, port = results["broadcast"]
    assert (code, out) == (0, f"Received anyone there? from ('127.0.0.1', {port})\n")
    # A server that did not ask for broadcasts drops them, counted.
    assert results["unanswered"] == [1, 1]
    code, err = results["without"]
    assert code == 1
    assert "Permission denied" in err
