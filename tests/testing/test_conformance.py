"""One behavioural contract, run against real loopback sockets and the
VirtualNetwork, so that the virtual sockets cannot drift from the kernel."""

import errno
import socket

import pytest
import trio
import trio.testing

from trioudp.testing import VirtualNetwork

from ..conftest import requires_ipv6

AF_INET, AF_INET6, SOCK_DGRAM = socket.AF_INET, socket.AF_INET6, socket.SOCK_DGRAM


@pytest.fixture(params=["kernel", "virtual"])
async def network(request):
    if request.param == "kernel":
        yield None
    else:
        net = VirtualNetwork(seed=0)
        with net.install():
            yield net


async def udp(family=AF_INET, host=None):
    sock = trio.socket.socket(family, SOCK_DGRAM)
    await sock.bind((host or ("127.0.0.1" if family == AF_INET else "::1"), 0))
    return sock


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


async def test_rcvbuf_is_doubled_and_bounds_the_queue(network):
    with await udp() as a, await udp() as b:
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert b.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 8192
        for _ in range(50):
            await a.sendto(b"x" * 1000, b.getsockname())
        received = 0
        while b.is_readable():  # loopback delivery is done when sendto returns
            await b.recv(2000)
            received += 1
        assert 1 <= received < 50


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
