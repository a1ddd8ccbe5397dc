"""Routes, links and interfaces, alike on real sockets and virtual ones: the
source a reply leaves from, unreachable networks and neighbours, the MTU,
the TTL and TOS a datagram carries, broadcast from a loopback address, and
SO_BINDTODEVICE. Tests that take ``two_hosts`` or ``lan`` build their real
side in network namespaces of their own (see ``conftest.py``)."""

import errno
import socket
import sys

import pytest
import trio

from .conftest import IP_PKTINFO, udp

AF_INET, AF_INET6, SOCK_DGRAM = socket.AF_INET, socket.AF_INET6, socket.SOCK_DGRAM
SOL_SOCKET, IPPROTO_IP = socket.SOL_SOCKET, socket.IPPROTO_IP
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_MTU = getattr(socket, "IP_MTU", 14)
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
IP_PMTUDISC_WANT, IP_PMTUDISC_DO = 1, 2
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


def socket_on(two_hosts, host, family=AF_INET):
    """An unbound UDP socket on host ``"a"`` or ``"b"``."""
    if host == "a":
        return trio.socket.socket(family, SOCK_DGRAM)
    with two_hosts.on_b():
        return trio.socket.socket(family, SOCK_DGRAM)


# ---- the source of a reply -----------------------------------------------------


async def test_a_wildcard_server_answers_from_the_address_asked(two_hosts):
    with socket_on(two_hosts, "b") as server, socket_on(two_hosts, "a") as client:
        await server.bind(("0.0.0.0", 0))  # serve_udp's default
        port = server.getsockname()[1]
        await client.connect((two_hosts.b, port))
        assert client.getsockname()[0] == two_hosts.a  # the route's source
        await client.send(b"ping")
        data, peer = await server.recvfrom(100)
        assert (data, peer) == (b"ping", client.getsockname())
        await server.sendto(b"pong", peer)
        # From the address it was sent to: a connected client takes it.
        assert await client.recvfrom(100) == (b"pong", (two_hosts.b, port))


# ---- unreachable -----------------------------------------------------------------


async def test_no_route_is_enetunreach(two_hosts):
    # Neither host has an IPv6 address but ::1: no route for any other.
    with socket_on(two_hosts, "a", AF_INET6) as six:
        for call in (
            six.sendto(b"x", ("fd00:77::1", 9)),
            six.connect(("fd00:77::1", 9)),
        ):
            with pytest.raises(OSError) as info:
                await call
            assert info.value.errno == errno.ENETUNREACH


async def test_an_address_no_host_has_is_silence(two_hosts):
    # By the default route, on the link or beyond it: the datagram waits for
    # ARP and is dropped. Linux tells the sender only under IP_RECVERR, even
    # a connected one once ARP gives up (0.2 s here): host unreachable is no
    # hard error, unlike port unreachable.
    with socket_on(two_hosts, "a") as sock:
        for address in ("10.9.0.77", "10.77.0.1"):
            await sock.connect((address, 9))
            assert await sock.send(b"anyone?") == 7
            assert sock.getsockopt(SOL_SOCKET, socket.SO_ERROR) == 0
            assert await sock.send(b"again?") == 6
        with trio.move_on_after(0.5) as waited:
            await sock.recv(100)  # an error would end the wait
        assert waited.cancelled_caught
        assert sock.getsockopt(SOL_SOCKET, socket.SO_ERROR) == 0


# ---- MTU ---------------------------------------------------------------------


async def test_above_the_mtu_fragments_unless_dont_fragment(two_hosts):
    two_hosts.set_mtu(1280)
    with socket_on(two_hosts, "b") as server, socket_on(two_hosts, "a") as client:
        await server.bind((two_hosts.b, 0))
        with pytest.raises(OSError) as info:
            client.getsockopt(IPPROTO_IP, IP_MTU)
        assert info.value.errno == errno.ENOTCONN
        await client.connect(server.getsockname())
        assert client.getsockopt(IPPROTO_IP, IP_MTU) == 1280
        assert client.getsockopt(IPPROTO_IP, IP_MTU_DISCOVER) == IP_PMTUDISC_WANT
        await client.send(b"x" * 3000)  # in three fragments
        assert len(await server.recv(5000)) == 3000
        client.setsockopt(IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        with pytest.raises(OSError) as info:
            await client.send(b"x" * 1253)  # 1281 bytes with its headers
        assert info.value.errno == errno.EMSGSIZE
        await client.send(b"x" * 1252)
        assert len(await server.recv(5000)) == 1252


async def test_ip_mtu_of_a_loopback_peer(network):
    with await udp() as a, await udp() as b:
        await a.connect(b.getsockname())
        assert a.getsockopt(IPPROTO_IP, IP_MTU) == 65535


# ---- TTL and TOS ---------------------------------------------------------------


def ttl_tos(ancdata):
    found = {kind: data for level, kind, data in ancdata if level == IPPROTO_IP}
    return (
        int.from_bytes(found[socket.IP_TTL], sys.byteorder),
        found[socket.IP_TOS][0],
    )


async def listening_for_ttl_tos(host="127.0.0.1"):
    rx = await udp(host=host)
    rx.setsockopt(IPPROTO_IP, IP_RECVTTL, 1)
    rx.setsockopt(IPPROTO_IP, socket.IP_RECVTOS, 1)
    return rx


async def test_ttl_and_tos_arrive_as_the_sender_set_them(network):
    with await listening_for_ttl_tos() as rx, await udp() as tx:
        await tx.sendto(b"default", rx.getsockname())
        assert ttl_tos((await rx.recvmsg(10, 256))[1]) == (64, 0)
        tx.setsockopt(IPPROTO_IP, socket.IP_TTL, 7)
        tx.setsockopt(IPPROTO_IP, socket.IP_TOS, 0x10)
        await tx.sendto(b"set", rx.getsockname())
        data, ancdata, _, _ = await rx.recvmsg(10, 256)
        assert [kind for _, kind, _ in ancdata] == [socket.IP_TTL, socket.IP_TOS]
        assert (data, ttl_tos(ancdata)) == (b"set", (7, 0x10))
        per_datagram = [
            (IPPROTO_IP, socket.IP_TTL, (3).to_bytes(4, sys.byteorder)),
            (IPPROTO_IP, socket.IP_TOS, b"\x40"),
        ]
        await tx.sendmsg([b"asked"], per_datagram, 0, rx.getsockname())
        assert ttl_tos((await rx.recvmsg(10, 256))[1]) == (3, 0x40)


async def test_ttl_and_tos_cross_the_link_unchanged(two_hosts):
    with (
        await listening_for_ttl_tos(two_hosts.a) as rx,
        socket_on(two_hosts, "b") as tx,
    ):
        tx.setsockopt(IPPROTO_IP, socket.IP_TTL, 9)
        tx.setsockopt(IPPROTO_IP, socket.IP_TOS, 0x23)
        await tx.sendto(b"from b", rx.getsockname())
        data, ancdata, _, peer = await rx.recvmsg(10, 256)
        assert (data, peer[0], ttl_tos(ancdata)) == (b"from b", two_hosts.b, (9, 0x23))


# ---- broadcast -----------------------------------------------------------------


async def test_limited_broadcast_from_a_loopback_address_stays_on_lo(lan):
    with (
        trio.socket.socket(AF_INET, SOCK_DGRAM) as wildcard,
        trio.socket.socket(AF_INET, SOCK_DGRAM) as loopback,
        await udp() as tx,
    ):
        for sock in (wildcard, loopback):
            sock.setsockopt(SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await wildcard.bind(("0.0.0.0", 0))
        port = wildcard.getsockname()[1]
        await loopback.bind(("127.0.0.1", port))
        wildcard.setsockopt(IPPROTO_IP, IP_PKTINFO, 1)
        with pytest.raises(PermissionError):  # EACCES: no SO_BROADCAST
            await tx.sendto(b"x", ("255.255.255.255", port))
        tx.setsockopt(SOL_SOCKET, socket.SO_BROADCAST, 1)
        await tx.sendto(b"everyone", ("<broadcast>", port))
        data, ancdata, _, peer = await wildcard.recvmsg(20, 256)
        [(_, _, info)] = ancdata
        ifindex = int.from_bytes(info[:4], sys.byteorder)
        assert (data, peer, ifindex) == (b"everyone", tx.getsockname(), lan.lo_index)
        await tx.sendto(b"mark", loopback.getsockname())
        assert await loopback.recv(20) == b"mark"  # bound to one address: no broadcast


async def test_broadcast_name_from_a_wildcard_socket(lan):
    with (
        trio.socket.socket(AF_INET, SOCK_DGRAM) as rx,
        trio.socket.socket(AF_INET, SOCK_DGRAM) as tx,
    ):
        await rx.bind(("0.0.0.0", 0))
        tx.setsockopt(SOL_SOCKET, socket.SO_BROADCAST, 1)
        await tx.sendto(b"<broadcast>", ("<broadcast>", rx.getsockname()[1]))
        data, peer = await rx.recvfrom(20)
        assert (data, peer[0]) == (b"<broadcast>", lan.eth4)


# ---- SO_BINDTODEVICE -----------------------------------------------------------


async def test_bindtodevice_takes_interface_names(lan):
    with trio.socket.socket(AF_INET, SOCK_DGRAM) as sock:
        assert sock.getsockopt(SOL_SOCKET, SO_BINDTODEVICE) == 0
        assert sock.getsockopt(SOL_SOCKET, SO_BINDTODEVICE, 16) == b""
        for name, stored in ((b"lo", b"lo\0"), (b"eth0\0", b"eth0\0"), (b"", b"")):
            sock.setsockopt(SOL_SOCKET, SO_BINDTODEVICE, name)
            assert sock.getsockopt(SOL_SOCKET, SO_BINDTODEVICE, 16) == stored
        with pytest.raises(OSError) as info:
            sock.setsockopt(SOL_SOCKET, SO_BINDTODEVICE, b"eth9")
        assert info.value.errno == errno.ENODEV
        sock.setsockopt(SOL_SOCKET, SO_BINDTODEVICE, b"lo")
        for buflen in (None, 8):  # the name needs IFNAMSIZ bytes
            with pytest.raises(OSError) as info:
                sock.getsockopt(SOL_SOCKET, SO_BINDTODEVICE, *[buflen] * bool(buflen))
            assert info.value.errno == errno.EINVAL


async def bound_to_device(device, host="0.0.0.0"):
    sock = trio.socket.socket(AF_INET, SOCK_DGRAM)
    sock.setsockopt(SOL_SOCKET, SO_BINDTODEVICE, device)
    await sock.bind((host, 0))
    return sock


async def test_bindtodevice_takes_only_what_arrives_by_that_interface(lan):
    # A local datagram arrives by the interface that owns its destination.
    with (
        await bound_to_device(b"eth0") as eth,
        await bound_to_device(b"lo") as lo,
        trio.socket.socket(AF_INET, SOCK_DGRAM) as tx,
    ):
        for rx, wrong, right in (
            (eth, "127.0.0.1", lan.eth4),
            (lo, lan.eth4, "127.0.0.1"),
        ):
            port = rx.getsockname()[1]
            await tx.sendto(b"wrong way", (wrong, port))
            await tx.sendto(b"right way", (right, port))
            assert await rx.recv(20) == b"right way"


async def test_bindtodevice_sends_by_that_interface(lan):
    with await udp() as rx, await bound_to_device(b"eth0") as eth:
        # Out of eth0, a loopback address is lost; from one, it is EINVAL.
        await eth.sendto(b"lost", rx.getsockname())
        await rx.sendto(b"mark", rx.getsockname())
        assert await rx.recv(20) == b"mark"
        with await bound_to_device(b"eth0", "127.0.0.1") as pinned:
            with pytest.raises(OSError) as info:
                await pinned.sendto(b"x", rx.getsockname())
            assert info.value.errno == errno.EINVAL
            await pinned.sendto(b"own address", (lan.eth4, rx.getsockname()[1]))
