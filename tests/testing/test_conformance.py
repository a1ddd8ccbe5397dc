"""One behavioural contract, run against real loopback sockets and the
VirtualNetwork, so that the virtual sockets cannot drift from the kernel.

Tests that take ``network`` run on real loopback sockets and on the virtual
network; tests that take ``lan`` (see ``conftest.py``) run in a network
namespace of their own and on the virtual network: multicast, broadcast and
anything that names a non-loopback address.
"""

import errno
import socket
import struct

import pytest
import trio
import trio.testing

from ..conftest import requires_ipv6
from .conftest import sysctl, udp

AF_INET, AF_INET6, SOCK_DGRAM = socket.AF_INET, socket.AF_INET6, socket.SOCK_DGRAM
SOL_SOCKET, IPPROTO_IP, IPPROTO_IPV6 = (
    socket.SOL_SOCKET,
    socket.IPPROTO_IP,
    socket.IPPROTO_IPV6,
)
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = socket.IPV6_RECVPKTINFO
IPV6_PKTINFO = socket.IPV6_PKTINFO
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_PROTOCOL = getattr(socket, "SO_PROTOCOL", 38)
SO_DOMAIN = getattr(socket, "SO_DOMAIN", 39)
ANC = socket.CMSG_SPACE(64) * 4


async def test_bind_picks_an_ephemeral_port(network):
    with await udp() as sock:
        host, port = sock.getsockname()
        assert host == "127.0.0.1"
        assert 1024 <= port <= 65535


async def test_unbound_socket_reports_the_wildcard(network):
    with trio.socket.socket(AF_INET, SOCK_DGRAM) as sock:
        assert sock.getsockname() == ("0.0.0.0", 0)
        with pytest.raises(OSError) as info:
            sock.getpeername()
        assert info.value.errno == errno.ENOTCONN


async def test_sendto_recvfrom_round_trip(network):
    with await udp() as a, await udp() as b:
        assert await a.sendto(b"hello", b.getsockname()) == 5
        data, peer = await b.recvfrom(100)
        assert (data, peer) == (b"hello", a.getsockname())


async def test_first_send_binds_an_unbound_socket(network):
    with trio.socket.socket(AF_INET, SOCK_DGRAM) as a, await udp() as b:
        await a.sendto(b"x", b.getsockname())
        _, peer = await b.recvfrom(10)
        assert a.getsockname()[1] == peer[1] != 0


async def test_zero_length_datagram(network):
    with await udp() as a, await udp() as b:
        await a.sendto(b"", b.getsockname())
        assert await b.recv(10) == b""


async def test_short_buffers_truncate_and_recvmsg_says_so(network):
    with await udp() as a, await udp() as b:
        await a.sendto(b"0123456789", b.getsockname())
        await a.sendto(b"0123456789", b.getsockname())
        assert await b.recv(4) == b"0123"
        data, _, flags, _ = await b.recvmsg(4)
        assert data == b"0123"
        assert flags & socket.MSG_TRUNC


async def test_into_variants(network):
    with await udp() as a, await udp() as b:
        for _ in range(3):
            await a.sendto(b"abcdef", b.getsockname())
        buffer = bytearray(10)
        assert await b.recv_into(buffer) == 6
        assert buffer[:6] == b"abcdef"
        count, peer = await b.recvfrom_into(buffer)
        assert (count, peer) == (6, a.getsockname())
        first, second = bytearray(2), bytearray(2)
        count, _, flags, _ = await b.recvmsg_into([first, second])
        assert (count, bytes(first + second)) == (4, b"abcd")
        assert flags & socket.MSG_TRUNC


async def test_peek_leaves_the_datagram(network):
    with await udp() as a, await udp() as b:
        await a.sendto(b"peek", b.getsockname())
        assert await b.recv(10, socket.MSG_PEEK) == b"peek"
        assert await b.recv(10) == b"peek"


async def test_connect_filters_other_sources(network):
    with await udp() as a, await udp() as b, await udp() as stranger:
        await a.connect(b.getsockname())
        assert a.getpeername() == b.getsockname()
        await stranger.sendto(b"stranger", a.getsockname())
        await b.sendto(b"peer", a.getsockname())
        assert await a.recv(20) == b"peer"
        await a.send(b"via send")
        assert await b.recv(20) == b"via send"


async def test_connected_socket_gets_econnrefused_from_a_closed_port(network):
    with await udp() as gone:
        address = gone.getsockname()
    with await udp() as a:
        await a.connect(address)
        await a.send(b"anyone?")
        with pytest.raises(ConnectionRefusedError):
            await a.recv(10)


async def test_unconnected_socket_hears_no_icmp(network):
    with await udp() as gone:
        address = gone.getsockname()
    with await udp() as a:
        await a.sendto(b"anyone?", address)
        await a.sendto(b"me", a.getsockname())
        assert await a.recv(10) == b"me"


async def test_send_without_destination(network):
    with await udp() as a:
        with pytest.raises(OSError) as info:
            await a.send(b"x")
        assert info.value.errno == errno.EDESTADDRREQ


async def test_address_in_use(network):
    with await udp() as a, trio.socket.socket(AF_INET, SOCK_DGRAM) as b:
        with pytest.raises(OSError) as info:
            await b.bind(a.getsockname())
        assert info.value.errno == errno.EADDRINUSE


async def test_wildcard_and_specific_binds_conflict(network):
    with trio.socket.socket(AF_INET, SOCK_DGRAM) as wild:
        await wild.bind(("0.0.0.0", 0))
        port = wild.getsockname()[1]
        with trio.socket.socket(AF_INET, SOCK_DGRAM) as specific:
            with pytest.raises(OSError) as info:
                await specific.bind(("127.0.0.1", port))
            assert info.value.errno == errno.EADDRINUSE


async def test_reuseport_shares_a_port(network):
    with (
        trio.socket.socket(AF_INET, SOCK_DGRAM) as a,
        trio.socket.socket(AF_INET, SOCK_DGRAM) as b,
    ):
        a.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        await a.bind(("127.0.0.1", 0))
        await b.bind(a.getsockname())
        assert a.getsockname() == b.getsockname()
        assert b.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1


async def test_address_nobody_owns(network):
    with trio.socket.socket(AF_INET, SOCK_DGRAM) as sock:
        with pytest.raises(OSError) as info:
            await sock.bind(("192.0.2.1", 0))
        assert info.value.errno == errno.EADDRNOTAVAIL


async def test_bind_twice_is_einval(network):
    with await udp() as sock:
        with pytest.raises(OSError) as info:
            await sock.bind(("127.0.0.1", 0))
        assert info.value.errno == errno.EINVAL


async def drain(sock):
    """What is queued now (loopback delivery is done when sendto returns)."""
    received = []
    while sock.is_readable():
        received.append(await sock.recv(70_000))
    return received


async def test_rcvbuf_is_doubled_and_bounds_the_queue(network):
    with await udp() as a, await udp() as b:
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert b.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 8192
        for _ in range(50):
            await a.sendto(b"x" * 1000, b.getsockname())
        # Linux charges 2304 bytes per 1000-byte datagram: three fit in 8192.
        assert len(await drain(b)) == 3


async def test_rcvbuf_charges_empty_datagrams_too(network):
    with await udp() as a, await udp() as b:
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 0)
        assert b.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2304
        for _ in range(100):
            await a.sendto(b"", b.getsockname())
        assert len(await drain(b)) == 2  # 832 bytes each


async def test_rcvbuf_limits_follow_rmem_max(network):
    with trio.socket.socket(AF_INET, SOCK_DGRAM) as sock:
        most = sysctl("rmem_max", 212_992) * 2
        sock.setsockopt(SOL_SOCKET, socket.SO_RCVBUF, 10**9)
        assert sock.getsockopt(SOL_SOCKET, socket.SO_RCVBUF) == most
        sock.setsockopt(SOL_SOCKET, socket.SO_RCVBUF, -5)  # unsigned: the most
        assert sock.getsockopt(SOL_SOCKET, socket.SO_RCVBUF) == most
        sock.setsockopt(SOL_SOCKET, socket.SO_SNDBUF, 0)
        assert sock.getsockopt(SOL_SOCKET, socket.SO_SNDBUF) == 4608


async def test_options_read_back(network):
    with trio.socket.socket(AF_INET, SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 1
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == SOCK_DGRAM
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        assert (sock.family, sock.type) == (AF_INET, SOCK_DGRAM)


async def test_oversize_send_is_emsgsize(network):
    with await udp() as a:
        with pytest.raises(OSError) as info:
            await a.sendto(b"x" * 65_508, a.getsockname())
        assert info.value.errno == errno.EMSGSIZE


async def test_close_wakes_a_receiver_and_later_calls_fail(network):
    sock = await udp()
    async with trio.open_nursery() as nursery:

        async def close_soon():
            await trio.testing.wait_all_tasks_blocked()
            sock.close()

        nursery.start_soon(close_soon)
        with pytest.raises(trio.ClosedResourceError):
            await sock.recv(10)
    with pytest.raises(OSError) as info:
        await sock.recv(10)
    assert info.value.errno == errno.EBADF


async def test_a_cancelled_task_on_a_closed_socket_sees_cancelled_not_ebadf(network):
    """Trio checks for cancellation before it asks the kernel: a task
    cancelled while its socket was closed under it unwinds with Cancelled
    (what a crash of its host does), whatever the call."""
    sock = await udp()
    peer = sock.getsockname()
    sock.close()
    calls = {
        "recv": lambda: sock.recv(10),
        "recvfrom": lambda: sock.recvfrom(10),
        "recvmsg": lambda: sock.recvmsg(10),
        "sendto": lambda: sock.sendto(b"x", peer),
        "send": lambda: sock.send(b"x"),
        "sendmsg": lambda: sock.sendmsg([b"x"], [], 0, peer),
    }
    for name, call in calls.items():
        with trio.CancelScope() as scope:
            scope.cancel()
            await call()
        assert scope.cancelled_caught, name
        with pytest.raises(OSError) as info:
            await call()
        assert info.value.errno == errno.EBADF, name


async def test_receive_is_cancellable(network):
    with await udp() as sock:
        with trio.CancelScope() as scope:
            scope.cancel()
            await sock.recv(10)
        assert scope.cancelled_caught


@requires_ipv6
async def test_ipv6_round_trip_with_four_tuples(network):
    with await udp(AF_INET6) as a, await udp(AF_INET6) as b:
        assert len(b.getsockname()) == 4
        await a.sendto(b"six", b.getsockname())
        data, peer = await b.recvfrom(10)
        assert data == b"six"
        assert peer == a.getsockname()


@requires_ipv6
async def test_dual_stack_socket_sees_ipv4_as_mapped(network):
    with trio.socket.socket(AF_INET6, SOCK_DGRAM) as dual, await udp() as v4:
        dual.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        await dual.bind(("::", 0))
        port = dual.getsockname()[1]
        await v4.sendto(b"mapped", ("127.0.0.1", port))
        data, peer = await dual.recvfrom(10)
        assert data == b"mapped"
        assert peer[0] == "::ffff:127.0.0.1"
        assert peer[1] == v4.getsockname()[1]
        await dual.sendto(b"back", peer)
        assert await v4.recv(10) == b"back"


@requires_ipv6
async def test_v6only_socket_ignores_ipv4(network):
    with trio.socket.socket(AF_INET6, SOCK_DGRAM) as six, await udp() as v4:
        six.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        assert six.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        await six.bind(("::", 0))
        port = six.getsockname()[1]
        await v4.connect(("127.0.0.1", port))
        await v4.send(b"nobody")
        with pytest.raises(ConnectionRefusedError):
            await v4.recv(10)


# ---- binding and delivery ---------------------------------------------------


async def test_reuseaddr_and_reuseport_do_not_mix(network):
    with (
        trio.socket.socket(AF_INET, SOCK_DGRAM) as a,
        trio.socket.socket(AF_INET, SOCK_DGRAM) as b,
    ):
        a.setsockopt(SOL_SOCKET, socket.SO_REUSEADDR, 1)
        b.setsockopt(SOL_SOCKET, socket.SO_REUSEPORT, 1)
        await a.bind(("127.0.0.1", 0))
        with pytest.raises(OSError) as info:
            await b.bind(a.getsockname())
        assert info.value.errno == errno.EADDRINUSE


async def test_reuseaddr_on_one_socket_only_is_not_enough(network):
    with await udp() as a, trio.socket.socket(AF_INET, SOCK_DGRAM) as b:
        b.setsockopt(SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with pytest.raises(OSError) as info:
            await b.bind(a.getsockname())
        assert info.value.errno == errno.EADDRINUSE


async def reusing(host="127.0.0.1", port=0, family=AF_INET):
    """A socket bound with SO_REUSEADDR."""
    sock = trio.socket.socket(family, SOCK_DGRAM)
    sock.setsockopt(SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await sock.bind((host, port))
    return sock


async def test_reuseaddr_sockets_share_and_the_last_gets_everything(network):
    with await reusing() as first, await udp() as sender:
        last = await reusing(port=first.getsockname()[1])
        for n in range(5):
            await sender.sendto(b"%d" % n, first.getsockname())
        assert await drain(first) == []
        assert await drain(last) == [b"0", b"1", b"2", b"3", b"4"]
        last.close()


async def test_reuseaddr_specific_bind_beats_the_wildcard(network):
    with await reusing() as specific, await udp() as sender:
        port = specific.getsockname()[1]
        wild = await reusing("0.0.0.0", port)  # bound last, still not chosen
        await sender.sendto(b"x", ("127.0.0.1", port))
        assert await drain(specific) == [b"x"]
        assert await drain(wild) == []
        wild.close()


async def test_the_whole_of_127_is_local(network):
    with (
        trio.socket.socket(AF_INET, SOCK_DGRAM) as two,
        trio.socket.socket(AF_INET, SOCK_DGRAM) as client,
        trio.socket.socket(AF_INET, SOCK_DGRAM) as wild,
    ):
        await two.bind(("127.0.0.2", 0))
        assert two.getsockname()[0] == "127.0.0.2"
        await client.sendto(b"hi", two.getsockname())
        data, peer = await two.recvfrom(10)
        assert (data, peer[0]) == (b"hi", "127.0.0.1")
        await two.sendto(b"back", peer)
        _, peer = await client.recvfrom(10)
        assert peer == two.getsockname()
        await wild.bind(("0.0.0.0", 0))
        await client.sendto(b"any", ("127.55.6.7", wild.getsockname()[1]))
        assert await wild.recv(10) == b"any"
        await wild.connect(("127.5.6.7", 9))
        assert wild.getsockname()[0] == "127.0.0.1"


async def test_wildcard_bind_conflicts_with_a_127_address(network):
    with (
        trio.socket.socket(AF_INET, SOCK_DGRAM) as two,
        trio.socket.socket(AF_INET, SOCK_DGRAM) as wild,
    ):
        await two.bind(("127.0.0.2", 0))
        with pytest.raises(OSError) as info:
            await wild.bind(("0.0.0.0", two.getsockname()[1]))
        assert info.value.errno == errno.EADDRINUSE


async def test_connect_again_keeps_a_pending_refusal(network):
    with await udp() as gone:
        address = gone.getsockname()
    with await udp() as a, await udp() as other:
        await a.connect(address)
        await a.send(b"anyone?")  # refused before send returns, on loopback
        await a.connect(other.getsockname())
        assert a.getsockopt(SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED
        assert a.getsockopt(SOL_SOCKET, socket.SO_ERROR) == 0


async def test_sendto_port_zero_is_einval(network):
    with await udp() as a:
        with pytest.raises(OSError) as info:
            await a.sendto(b"x", ("127.0.0.1", 0))
        assert info.value.errno == errno.EINVAL


async def test_broadcast_needs_so_broadcast(network):
    with await udp() as a:
        with pytest.raises(PermissionError) as info:
            await a.sendto(b"x", ("127.255.255.255", 9))
        assert info.value.errno == errno.EACCES


# ---- receiving -------------------------------------------------------------


async def test_recvmsg_flags_are_plain_ints(network):
    with await udp() as a, await udp() as b:
        await a.sendto(b"0123456789", b.getsockname())
        await a.sendto(b"01", b.getsockname())
        _, ancdata, flags, _ = await b.recvmsg(4)
        assert type(flags) is int
        assert flags == socket.MSG_TRUNC
        assert ancdata == []
        _, _, flags, _ = await b.recvmsg(4)
        assert type(flags) is int
        assert flags == 0


async def test_msg_trunc_reports_the_real_length(network):
    with await udp() as a, await udp() as b:
        for _ in range(5):
            await a.sendto(b"0123456789", b.getsockname())
        data = await b.recv(4, socket.MSG_TRUNC)
        assert (len(data), data[:4]) == (10, b"0123")
        data, _ = await b.recvfrom(4, socket.MSG_TRUNC)
        assert (len(data), data[:4]) == (10, b"0123")
        buffer = bytearray(4)
        assert await b.recv_into(buffer, 0, socket.MSG_TRUNC) == 10
        assert buffer == b"0123"
        count, _, flags, _ = await b.recvmsg_into([bytearray(4)], 0, socket.MSG_TRUNC)
        assert (count, flags) == (10, socket.MSG_TRUNC)
        data, _, flags, _ = await b.recvmsg(4, 0, socket.MSG_TRUNC)
        assert (data, flags) == (b"0123", socket.MSG_TRUNC)


async def test_recv_zero_takes_nothing_but_recvfrom_zero_does(network):
    with await udp() as a, await udp() as b:
        assert await b.recv(0) == b""  # returns at once, even with nothing queued
        assert await b.recv_into(bytearray(0)) == 0
        await a.sendto(b"first", b.getsockname())
        await a.sendto(b"second", b.getsockname())
        assert await b.recv(0) == b""
        assert await b.recvfrom(0) == (b"", a.getsockname())
        assert await b.recv(10) == b"second"


async def test_msg_dontwait_is_accepted(network):
    with await udp() as a, await udp() as b:
        await a.sendto(b"x", socket.MSG_DONTWAIT, b.getsockname())
        assert await b.recv(10, socket.MSG_DONTWAIT) == b"x"
        returned = []

        async def receive():
            returned.append(await b.recv(10, socket.MSG_DONTWAIT))

        async with trio.open_nursery() as nursery:
            # Trio waits on an empty queue, with MSG_DONTWAIT or without.
            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            assert returned == []
            nursery.cancel_scope.cancel()


async def test_into_variants_check_nbytes_against_the_buffer(network):
    with await udp() as b:
        with pytest.raises(ValueError, match="buffer too small"):
            await b.recv_into(bytearray(4), 10)
        with pytest.raises(ValueError, match="greater than the length"):
            await b.recvfrom_into(bytearray(4), 10)
        with pytest.raises(ValueError, match="negative"):
            await b.recv_into(bytearray(4), -1)
        with pytest.raises(ValueError, match="negative"):
            await b.recv(-1)
        with pytest.raises(ValueError, match="negative"):
            await b.recvfrom(-1)
        with pytest.raises(ValueError, match="ancillary"):
            await b.recvmsg(10, -1)


# ---- ancillary data --------------------------------------------------------


async def test_ip_pktinfo_on_loopback(network):
    with await udp() as a, await udp() as b:
        b.setsockopt(IPPROTO_IP, IP_PKTINFO, 1)
        assert b.getsockopt(IPPROTO_IP, IP_PKTINFO) == 1
        await a.sendto(b"x", b.getsockname())
        data, ancdata, flags, peer = await b.recvmsg(10, ANC)
        assert (data, flags, peer) == (b"x", 0, a.getsockname())
        [(level, kind, info)] = ancdata
        assert (level, kind) == (IPPROTO_IP, IP_PKTINFO)
        ifindex, spec_dst, addr = struct.unpack("@i4s4s", info)
        assert ifindex == 1  # lo
        assert socket.inet_ntoa(spec_dst) == socket.inet_ntoa(addr) == "127.0.0.1"


async def test_ancillary_data_too_big_for_the_buffer_is_cut(network):
    with await udp() as a, await udp() as b:
        b.setsockopt(IPPROTO_IP, IP_PKTINFO, 1)
        await a.sendto(b"x", b.getsockname())
        _, ancdata, flags, _ = await b.recvmsg(10, 4)
        assert ancdata == []
        assert flags & socket.MSG_CTRUNC


@requires_ipv6
async def test_ipv6_recvpktinfo_on_loopback(network):
    with await udp(AF_INET6) as a, await udp(AF_INET6) as b:
        b.setsockopt(IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        await a.sendto(b"x", b.getsockname())
        _, [(level, kind, info)], _, _ = await b.recvmsg(10, ANC)
        assert (level, kind) == (IPPROTO_IPV6, IPV6_PKTINFO)
        addr, ifindex = struct.unpack("@16sI", info)
        assert (socket.inet_ntop(AF_INET6, addr), ifindex) == ("::1", 1)


@requires_ipv6
async def test_ipv6_recvpktinfo_maps_ipv4_on_a_dual_stack_socket(network):
    with trio.socket.socket(AF_INET6, SOCK_DGRAM) as dual, await udp() as v4:
        await dual.bind(("::", 0))
        dual.setsockopt(IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        dual.setsockopt(IPPROTO_IP, IP_PKTINFO, 1)
        await v4.sendto(b"x", ("127.0.0.1", dual.getsockname()[1]))
        _, ancdata, _, _ = await dual.recvmsg(10, ANC)
        assert [(level, kind) for level, kind, _ in ancdata] == [
            (IPPROTO_IPV6, IPV6_PKTINFO),
            (IPPROTO_IP, IP_PKTINFO),
        ]
        addr, ifindex = struct.unpack("@16sI", ancdata[0][2])
        assert (socket.inet_ntop(AF_INET6, addr), ifindex) == ("::ffff:127.0.0.1", 1)


async def test_so_timestampns_stamps_each_datagram(network):
    with await udp() as a, await udp() as b:
        b.setsockopt(SOL_SOCKET, SO_TIMESTAMPNS, 1)
        b.setsockopt(IPPROTO_IP, IP_PKTINFO, 1)
        await a.sendto(b"1", b.getsockname())
        await a.sendto(b"2", b.getsockname())
        stamps = []
        for _ in range(2):
            _, ancdata, _, _ = await b.recvmsg(10, ANC)
            # Timestamps come first, as Linux puts them.
            assert [(level, kind) for level, kind, _ in ancdata] == [
                (SOL_SOCKET, SO_TIMESTAMPNS),
                (IPPROTO_IP, IP_PKTINFO),
            ]
            seconds, nanoseconds = struct.unpack("@qq", ancdata[0][2])
            assert seconds > 0
            assert 0 <= nanoseconds < 10**9
            stamps.append((seconds, nanoseconds))
        assert stamps[0] <= stamps[1]


async def test_sendmsg_with_ip_pktinfo_picks_the_source(network):
    with trio.socket.socket(AF_INET, SOCK_DGRAM) as a, await udp() as b:
        await a.bind(("0.0.0.0", 0))
        info = struct.pack(
            "@i4s4s", 0, socket.inet_aton("127.0.0.2"), socket.inet_aton("0.0.0.0")
        )
        sent = await a.sendmsg(
            [b"from", b" two"], [(IPPROTO_IP, IP_PKTINFO, info)], 0, b.getsockname()
        )
        assert sent == 8
        data, peer = await b.recvfrom(10)
        assert (data, peer) == (b"from two", ("127.0.0.2", a.getsockname()[1]))
        await a.sendmsg(
            [b"ttl"],
            [(IPPROTO_IP, socket.IP_TTL, struct.pack("@i", 9))],
            0,
            b.getsockname(),
        )
        assert await b.recv(10) == b"ttl"


# ---- IPv6 and dual stack ---------------------------------------------------


@requires_ipv6
async def test_binding_an_ipv6_address_makes_the_socket_v6only(network):
    with trio.socket.socket(AF_INET6, SOCK_DGRAM) as six:
        assert six.getsockopt(IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        await six.bind(("::1", 0))
        assert six.getsockopt(IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        with pytest.raises(OSError) as info:
            six.setsockopt(IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        assert info.value.errno == errno.EINVAL
        with pytest.raises(socket.gaierror):
            await six.sendto(b"x", ("127.0.0.1", 9))
        with pytest.raises(OSError) as info:
            await six.sendto(b"x", ("::ffff:127.0.0.1", 9))
        assert info.value.errno == errno.ENETUNREACH


@requires_ipv6
async def test_dual_stack_socket_takes_ipv4_addresses(network):
    with (
        trio.socket.socket(AF_INET6, SOCK_DGRAM) as dual,
        trio.socket.socket(AF_INET6, SOCK_DGRAM) as bound4,
        await udp() as v4,
    ):
        await dual.bind(("::", 0))
        assert await dual.sendto(b"m", v4.getsockname()) == 1
        data, peer = await v4.recvfrom(10)
        assert (data, peer) == (b"m", ("127.0.0.1", dual.getsockname()[1]))
        await bound4.bind(("127.0.0.1", 0))
        host, port, _, _ = bound4.getsockname()
        assert host == "::ffff:127.0.0.1"
        await v4.sendto(b"to mapped", ("127.0.0.1", port))
        assert await bound4.recv(20) == b"to mapped"
        with pytest.raises(OSError) as info:
            await bound4.sendto(b"x", ("::1", 9))
        assert info.value.errno == errno.EAFNOSUPPORT


@requires_ipv6
async def test_v6only_socket_refuses_mapped_binds(network):
    with trio.socket.socket(AF_INET6, SOCK_DGRAM) as six:
        six.setsockopt(IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        with pytest.raises(OSError) as info:
            await six.bind(("::ffff:127.0.0.1", 0))
        assert info.value.errno == errno.EINVAL


@requires_ipv6
async def test_getsockname_of_a_dual_stack_socket_connected_to_ipv4(network):
    with trio.socket.socket(AF_INET6, SOCK_DGRAM) as dual, await udp() as v4:
        await dual.bind(("::", 0))
        await dual.connect(("::ffff:127.0.0.1", v4.getsockname()[1]))
        assert dual.getsockname() == ("::ffff:127.0.0.1", dual.getsockname()[1], 0, 0)
        assert dual.getpeername() == ("::ffff:127.0.0.1", v4.getsockname()[1], 0, 0)


async def test_ipv4_socket_takes_a_mapped_address(network):
    with await udp() as a, await udp() as b:
        await a.sendto(b"x", ("::ffff:127.0.0.1", b.getsockname()[1]))
        assert await b.recv(10) == b"x"


# ---- options, shutdown, descriptors ------------------------------------------


@pytest.mark.parametrize(
    "family",
    [AF_INET, pytest.param(AF_INET6, marks=requires_ipv6)],
    ids=["ipv4", "ipv6"],
)
async def test_common_options_and_their_defaults(network, family):
    with trio.socket.socket(family, SOCK_DGRAM) as sock:
        assert sock.getsockopt(SOL_SOCKET, SO_PROTOCOL) == socket.IPPROTO_UDP
        assert sock.getsockopt(SOL_SOCKET, SO_DOMAIN) == family
        assert sock.getsockopt(IPPROTO_IP, socket.IP_TTL) == 64
        assert sock.getsockopt(IPPROTO_IP, socket.IP_TOS) == 0
        assert sock.getsockopt(IPPROTO_IP, socket.IP_MULTICAST_TTL) == 1
        assert sock.getsockopt(IPPROTO_IP, socket.IP_MULTICAST_LOOP) == 1
        assert sock.getsockopt(SOL_SOCKET, socket.SO_RCVLOWAT) == 1
        assert sock.getsockopt(SOL_SOCKET, socket.SO_KEEPALIVE) == 0
        assert sock.getsockopt(IPPROTO_IP, socket.IP_TTL, 4) == b"@\0\0\0"
        assert sock.getsockopt(IPPROTO_IP, socket.IP_MULTICAST_TTL, 1) == b"\x01"
        sock.setsockopt(IPPROTO_IP, socket.IP_TTL, 9)
        assert sock.getsockopt(IPPROTO_IP, socket.IP_TTL) == 9
        sock.setsockopt(IPPROTO_IP, socket.IP_TTL, -1)  # back to the default
        assert sock.getsockopt(IPPROTO_IP, socket.IP_TTL) == 64
        sock.setsockopt(IPPROTO_IP, socket.IP_TOS, b"\x20")  # one byte will do
        assert sock.getsockopt(IPPROTO_IP, socket.IP_TOS) == 0x20
        sock.setsockopt(IPPROTO_IP, socket.IP_MULTICAST_TTL, b"\x05")
        assert sock.getsockopt(IPPROTO_IP, socket.IP_MULTICAST_TTL) == 5
        sock.setsockopt(SOL_SOCKET, socket.SO_REUSEADDR, b"\x01\0\0\0")
        assert sock.getsockopt(SOL_SOCKET, socket.SO_REUSEADDR) == 1
        for level, name, value in [
            (IPPROTO_IP, socket.IP_TTL, 0),
            (IPPROTO_IP, socket.IP_TTL, 256),
            (IPPROTO_IP, socket.IP_MULTICAST_TTL, 256),
            (SOL_SOCKET, socket.SO_REUSEADDR, b"\x01"),
        ]:
            with pytest.raises(OSError) as info:
                sock.setsockopt(level, name, value)
            assert info.value.errno == errno.EINVAL
        with pytest.raises(OSError) as info:
            sock.setsockopt(SOL_SOCKET, SO_PROTOCOL, 1)
        assert info.value.errno == errno.ENOPROTOOPT
        if family == AF_INET6:
            assert sock.getsockopt(IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS) == 64
            assert sock.getsockopt(IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS) == 1
            assert sock.getsockopt(IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP) == 1
            sock.setsockopt(IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, -1)
            with pytest.raises(OSError) as info:
                sock.setsockopt(IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, -2)
            assert info.value.errno == errno.EINVAL
        else:
            with pytest.raises(OSError) as info:
                sock.getsockopt(IPPROTO_IPV6, socket.IPV6_V6ONLY)
            assert info.value.errno == errno.EOPNOTSUPP


async def test_proto_is_what_socket_was_given(network):
    with (
        trio.socket.socket(AF_INET, SOCK_DGRAM) as plain,
        trio.socket.socket(AF_INET, SOCK_DGRAM, socket.IPPROTO_UDP) as udp_sock,
    ):
        assert (plain.proto, udp_sock.proto) == (0, socket.IPPROTO_UDP)


async def test_shutdown(network):
    with await udp() as a, await udp() as b, await udp() as unconnected:
        with pytest.raises(OSError) as info:
            unconnected.shutdown(socket.SHUT_WR)
        assert info.value.errno == errno.ENOTCONN
        with pytest.raises(BrokenPipeError):  # Linux shut it all the same
            await unconnected.sendto(b"x", b.getsockname())
        await a.connect(b.getsockname())
        with pytest.raises(OSError) as info:
            a.shutdown(7)
        assert info.value.errno == errno.EINVAL
        await b.sendto(b"queued", a.getsockname())
        a.shutdown(socket.SHUT_RD)
        assert await a.recv(10) == b"queued"
        await b.sendto(b"later", a.getsockname())
        assert await a.recv(10) == b"later"
        await a.send(b"still sends")
        assert await b.recv(20) == b"still sends"
        a.shutdown(socket.SHUT_WR)
        assert a.did_shutdown_SHUT_WR
        with pytest.raises(BrokenPipeError):
            await a.send(b"x")


async def test_fileno_is_minus_one_after_close(network):
    sock = await udp()
    assert sock.fileno() >= 0
    sock.close()
    assert sock.fileno() == -1


# ---- multicast and broadcast, in a namespace and on the virtual network --------

GROUP4, GROUP6 = "239.1.2.3", "ff15::1234"


def mreq(group, interface):
    return socket.inet_aton(group) + socket.inet_aton(interface)


def mreq6(group, ifindex):
    return socket.inet_pton(AF_INET6, group) + struct.pack("@I", ifindex)


async def listener(port=0, host="0.0.0.0", family=AF_INET):
    sock = await reusing(host, port, family)
    if family == AF_INET:
        sock.setsockopt(IPPROTO_IP, IP_PKTINFO, 1)
    else:
        sock.setsockopt(IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
    return sock


async def heard(sock, marker_from, *, marker=b"m-marker", to=None):
    """Every datagram queued before a marker sent now to ``sock``'s port
    (at ``to``, or on loopback): (payload, ancillary data) pairs. The marker
    proves what did not come; other markers (``m-...``) are skipped."""
    port = sock.getsockname()[1]
    local = "::1" if sock.family == AF_INET6 else "127.0.0.1"
    await marker_from.sendto(marker, to or (local, port))
    out = []
    with trio.fail_after(10):  # a safety net, not timing: markers come at once
        while True:
            data, ancdata, _, _ = await sock.recvmsg(100, ANC)
            if data == marker:
                return out
            if not data.startswith(b"m-"):
                out.append((data, ancdata))


def pktinfo4(ancdata):
    [info] = [data for level, kind, data in ancdata if kind == IP_PKTINFO]
    ifindex, spec_dst, addr = struct.unpack("@i4s4s", info)
    return ifindex, socket.inet_ntoa(spec_dst), socket.inet_ntoa(addr)


def pktinfo6(ancdata):
    [info] = [data for level, kind, data in ancdata if kind == IPV6_PKTINFO]
    addr, ifindex = struct.unpack("@16sI", info)
    return socket.inet_ntop(AF_INET6, addr), ifindex


async def test_pktinfo_names_the_interface_of_the_destination(lan):
    """Traffic inside a host names the interface that owns the address it
    went to: only datagrams to a loopback address say ``lo``."""
    with await listener(host="0.0.0.0") as rx, await udp() as tx:
        await tx.sendto(b"own", (lan.eth4, rx.getsockname()[1]))
        await tx.sendto(b"loopback", ("127.0.0.1", rx.getsockname()[1]))
        got = await heard(rx, tx)
        assert [(data, pktinfo4(ancdata)) for data, ancdata in got] == [
            (b"own", (lan.eth_index, lan.eth4, lan.eth4)),
            (b"loopback", (lan.lo_index, "127.0.0.1", "127.0.0.1")),
        ]


async def test_loopback_source_cannot_leave_the_host(lan):
    with await udp() as a:
        with pytest.raises(OSError) as info:
            await a.sendto(b"x", ("10.9.0.7", 9))
        assert info.value.errno == errno.EINVAL
        await a.sendto(b"own", (lan.eth4, 9))  # the host's own address: fine
        a.setsockopt(SOL_SOCKET, socket.SO_BROADCAST, 1)
        a.setsockopt(IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(lan.eth4))
        for group in (lan.broadcast, GROUP4):
            with pytest.raises(OSError) as info:
                await a.sendto(b"x", (group, 9))
            assert info.value.errno == errno.EINVAL
    with await udp(AF_INET6) as six:
        await six.sendto(b"x", ("fd00:9::7", 9))  # IPv6 lets it out


async def test_source_address_toward_an_own_address_is_that_address(lan):
    with (
        trio.socket.socket(AF_INET, SOCK_DGRAM) as four,
        trio.socket.socket(AF_INET6, SOCK_DGRAM) as six,
    ):
        await four.connect((lan.eth4, 9))
        assert four.getsockname()[0] == lan.eth4
        await six.connect((lan.eth6, 9))
        assert six.getsockname()[0] == lan.eth6


async def test_multicast_v4_on_lo(lan):
    with await listener() as rx, trio.socket.socket(AF_INET, SOCK_DGRAM) as tx:
        rx.setsockopt(IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq(GROUP4, "127.0.0.1"))
        tx.setsockopt(IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        assert tx.getsockopt(IPPROTO_IP, socket.IP_MULTICAST_IF, 4) == socket.inet_aton(
            "127.0.0.1"
        )
        port = rx.getsockname()[1]
        await tx.sendto(b"on lo", (GROUP4, port))
        tx.setsockopt(IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        await tx.sendto(b"loop off: lo loops anyway", (GROUP4, port))
        tx.setsockopt(IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
        await tx.sendto(b"ttl 0", (GROUP4, port))
        got = await heard(rx, tx)
        assert [data for data, _ in got] == [
            b"on lo",
            b"loop off: lo loops anyway",
            b"ttl 0",
        ]
        assert {pktinfo4(ancdata) for _, ancdata in got} == {
            (lan.lo_index, "127.0.0.1", GROUP4)
        }


async def test_multicast_v4_on_eth0_loop_and_ttl(lan):
    with await listener() as rx, trio.socket.socket(AF_INET, SOCK_DGRAM) as tx:
        rx.setsockopt(IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq(GROUP4, lan.eth4))
        tx.setsockopt(IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(lan.eth4))
        port = rx.getsockname()[1]
        await tx.sendto(b"looped", (GROUP4, port))
        tx.setsockopt(IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        await tx.sendto(b"not looped", (GROUP4, port))
        tx.setsockopt(IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        tx.setsockopt(IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
        await tx.sendto(b"ttl 0 stays on the host", (GROUP4, port))
        got = await heard(rx, tx)
        assert [data for data, _ in got] == [b"looped", b"ttl 0 stays on the host"]
        assert pktinfo4(got[0][1]) == (lan.eth_index, lan.eth4, GROUP4)


async def test_multicast_membership_is_the_hosts(lan):
    """Linux's IP_MULTICAST_ALL: a wildcard socket on the port hears a group
    that any socket of the host joined; one bound to another address never."""
    with (
        await listener() as joined,
        trio.socket.socket(AF_INET, SOCK_DGRAM) as tx,
    ):
        port = joined.getsockname()[1]
        joined.setsockopt(IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq(GROUP4, lan.eth4))
        tx.setsockopt(IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(lan.eth4))
        with (
            await listener(port) as bystander,
            await listener(port, "127.0.0.1") as specific,
            await listener(port, GROUP4) as on_group,
        ):
            await tx.sendto(b"all", (GROUP4, port))
            group = (GROUP4, port)
            assert [d for d, _ in await heard(bystander, tx, to=group)] == [b"all"]
            assert [d for d, _ in await heard(on_group, tx, to=group)] == [b"all"]
            assert await heard(specific, tx) == []
            assert [d for d, _ in await heard(joined, tx, to=group)] == [b"all"]
            joined.setsockopt(
                IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, mreq(GROUP4, lan.eth4)
            )
            await tx.sendto(b"nobody", (GROUP4, port))
            # Unicast to the wildcard sockets goes to the last bound of them.
            assert await heard(bystander, tx, to=(lan.eth4, port)) == []


async def test_multicast_membership_errors(lan):
    with await listener() as sock:
        sock.setsockopt(IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq(GROUP4, "127.0.0.1"))
        cases = [
            (socket.IP_ADD_MEMBERSHIP, mreq(GROUP4, "127.0.0.1"), errno.EADDRINUSE),
            (socket.IP_DROP_MEMBERSHIP, mreq(GROUP4, lan.eth4), errno.EADDRNOTAVAIL),
            (socket.IP_ADD_MEMBERSHIP, mreq("10.1.1.1", "127.0.0.1"), errno.EINVAL),
            (socket.IP_ADD_MEMBERSHIP, mreq(GROUP4, "10.1.1.1"), errno.ENODEV),
            (socket.IP_MULTICAST_IF, socket.inet_aton("10.1.1.1"), errno.EADDRNOTAVAIL),
        ]
        for name, value, code in cases:
            with pytest.raises(OSError) as info:
                sock.setsockopt(IPPROTO_IP, name, value)
            assert info.value.errno == code, name
        # ip_mreqn: by interface index.
        sock.setsockopt(
            IPPROTO_IP,
            socket.IP_ADD_MEMBERSHIP,
            mreq("239.9.9.9", "0.0.0.0") + struct.pack("@i", lan.lo_index),
        )


@requires_ipv6
async def test_multicast_v6_on_eth0(lan):
    with (
        await listener(family=AF_INET6, host="::") as rx,
        trio.socket.socket(AF_INET6, SOCK_DGRAM) as tx,
    ):
        rx.setsockopt(
            IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq6(GROUP6, lan.eth_index)
        )
        tx.setsockopt(IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, lan.eth_index)
        assert tx.getsockopt(IPPROTO_IPV6, socket.IPV6_MULTICAST_IF) == lan.eth_index
        port = rx.getsockname()[1]
        await tx.sendto(b"looped", (GROUP6, port))
        tx.setsockopt(IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        await tx.sendto(b"not looped", (GROUP6, port))
        tx.setsockopt(IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
        tx.setsockopt(IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 0)
        await tx.sendto(b"hops 0", (GROUP6, port))
        got = await heard(rx, tx)
        assert [data for data, _ in got] == [b"looped", b"hops 0"]
        assert pktinfo6(got[0][1]) == (GROUP6, lan.eth_index)
        for name, value, code in [
            (socket.IPV6_MULTICAST_LOOP, 2, errno.EINVAL),
            (socket.IPV6_MULTICAST_IF, 9, errno.ENODEV),
            (socket.IPV6_JOIN_GROUP, mreq6(GROUP6, 9), errno.ENODEV),
            (socket.IPV6_JOIN_GROUP, mreq6(GROUP6, lan.eth_index), errno.EADDRINUSE),
            (socket.IPV6_LEAVE_GROUP, mreq6("ff15::98", 1), errno.EADDRNOTAVAIL),
            (socket.IPV6_JOIN_GROUP, mreq6("fd00::1", 1), errno.EINVAL),
        ]:
            with pytest.raises(OSError) as info:
                (rx if name != socket.IPV6_MULTICAST_LOOP else tx).setsockopt(
                    IPPROTO_IPV6, name, value
                )
            assert info.value.errno == code, name
        with trio.socket.socket(AF_INET, SOCK_DGRAM) as v4:
            with pytest.raises(OSError) as info:
                v4.setsockopt(IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq6(GROUP6, 1))
            assert info.value.errno == errno.ENOPROTOOPT


async def test_broadcast(lan):
    with (
        await listener() as rx,
        await listener(host=lan.eth4) as specific,
        trio.socket.socket(AF_INET, SOCK_DGRAM) as tx,
    ):
        port = rx.getsockname()[1]
        with pytest.raises(PermissionError):
            await tx.sendto(b"x", (lan.broadcast, port))
        tx.setsockopt(SOL_SOCKET, socket.SO_BROADCAST, 1)
        await tx.sendto(b"subnet", (lan.broadcast, port))
        await tx.sendto(b"limited", ("255.255.255.255", port))
        await tx.sendto(b"loopback", ("127.255.255.255", port))
        got = await heard(rx, tx)
        assert [(data, pktinfo4(ancdata)) for data, ancdata in got] == [
            (b"subnet", (lan.eth_index, lan.eth4, lan.broadcast)),
            (b"limited", (lan.eth_index, lan.eth4, "255.255.255.255")),
            (b"loopback", (lan.lo_index, "127.0.0.1", "127.255.255.255")),
        ]
        await tx.sendto(b"x", (lan.broadcast, specific.getsockname()[1]))
        await tx.sendto(b"mark", specific.getsockname())
        assert await specific.recv(10) == b"mark"  # bound to one address: no broadcast
