"""trioudp._socket: UDPSocket sends, receives and closes as Trio's resources do."""

import contextlib
import socket

import pytest
import trio
import trio.testing

import trioudp
from trioudp import (
    DatagramTooLarge,
    InvalidAddress,
    UDPSocket,
    open_udp_socket,
)

from .conftest import requires_ipv6
from .helpers import (
    client_socket,
)


async def test_round_trip_on_loopback():
    async with (
        open_udp_socket("127.0.0.1", 0) as a,
        open_udp_socket("127.0.0.1", 0) as b,
    ):
        assert a.is_fast
        assert a.local_address[0] == "127.0.0.1"
        assert a.local_address[1] > 0
        await a.send_to(b"hello", b.local_address)
        datagram = await b.receive()
        assert datagram.data == b"hello"
        assert datagram.peer == a.local_address
        assert datagram.local == b.local_address
        assert datagram.received_at <= trio.current_time()
        assert (a.stats.sent, b.stats.received) == (1, 1)


@requires_ipv6
async def test_round_trip_on_ipv6_loopback():
    async with open_udp_socket("::1", 0) as a, open_udp_socket("::1", 0) as b:
        assert a.family == socket.AF_INET6
        await a.send_to(b"six", ("::1", b.local_address[1]))
        datagram = await b.receive()
        assert datagram.data == b"six"
        assert datagram.peer[:2] == a.local_address[:2]


async def test_zero_length_datagram_is_a_datagram():
    async with (
        open_udp_socket("127.0.0.1", 0) as a,
        open_udp_socket("127.0.0.1", 0) as b,
    ):
        await a.send_to(b"", b.local_address)
        assert (await b.receive()).data == b""


async def test_largest_ipv4_datagram_fits_and_one_more_byte_does_not():
    async with (
        open_udp_socket("127.0.0.1", 0) as a,
        open_udp_socket("127.0.0.1", 0) as b,
    ):
        await a.send_to(b"x" * 65_507, b.local_address)
        assert len((await b.receive()).data) == 65_507
        with pytest.raises(DatagramTooLarge) as info:
            await a.send_to(b"x" * 65_508, b.local_address)
        assert info.value.limit == 65_507
        assert a.stats.sent == 1


@requires_ipv6
async def test_ipv6_payload_limit():
    async with open_udp_socket("::1", 0) as a:
        with pytest.raises(DatagramTooLarge) as info:
            await a.send_to(b"x" * 65_528, ("::1", 9))
        assert info.value.limit == 65_527


async def test_non_bytes_payload_is_a_type_error_naming_the_type():
    async with open_udp_socket("127.0.0.1", 0) as a:
        with pytest.raises(TypeError, match="not str"):
            await a.send_to("hello", ("127.0.0.1", 9))
        with pytest.raises(TypeError, match="not list"):
            await a.send_to([1, 2], ("127.0.0.1", 9))


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("127.0.0.1:9", "tuple"),
        (("127.0.0.1", 99999), "port must be"),
        (("::1", 9), "IPv4 socket"),
    ],
)
async def test_malformed_addresses_are_rejected_before_sending(address, fragment):
    async with open_udp_socket("127.0.0.1", 0) as a:
        with pytest.raises(InvalidAddress, match=fragment):
            await a.send_to(b"x", address)
        assert a.stats.sent == 0


async def test_wrapping_a_tcp_socket_is_refused():
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock, pytest.raises(ValueError, match="SOCK_DGRAM"):
        UDPSocket(sock)


async def test_max_datagram_size_is_checked():
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock, pytest.raises(ValueError, match="max_datagram_size must be in 0..65507"):
        UDPSocket(sock, max_datagram_size=70_000)


async def test_oversize_datagrams_are_dropped_and_counted_never_truncated():
    async with (
        open_udp_socket("127.0.0.1", 0, max_datagram_size=100) as b,
        open_udp_socket("127.0.0.1", 0) as a,
    ):
        await a.send_to(b"x" * 101, b.local_address)
        await a.send_to(b"y" * 100, b.local_address)
        datagram = await b.receive()
        assert datagram.data == b"y" * 100
        assert b.stats.dropped_oversize == 1
        assert b.stats.received == 1


async def test_receive_is_cancellable_and_a_checkpoint():
    async with open_udp_socket("127.0.0.1", 0) as a:
        with trio.CancelScope() as scope:
            scope.cancel()
            await a.receive()
        assert scope.cancelled_caught
        await a.send_to(b"x", a.local_address)
        with trio.testing.assert_checkpoints():
            await a.receive()
        with trio.testing.assert_checkpoints():
            await a.send_to(b"x", a.local_address)


async def test_closing_wakes_a_waiting_receiver():
    async with open_udp_socket("127.0.0.1", 0) as a:
        async with trio.open_nursery() as nursery:

            async def close_soon():
                await trio.testing.wait_all_tasks_blocked()
                a.close()

            nursery.start_soon(close_soon)
            with pytest.raises(trio.ClosedResourceError):
                await a.receive()
        with pytest.raises(trio.ClosedResourceError):
            await a.send_to(b"x", ("127.0.0.1", 9))
        with pytest.raises(trio.ClosedResourceError):
            _ = a.local_address


async def test_async_iteration_ends_when_the_socket_closes():
    async with open_udp_socket("127.0.0.1", 0) as a:
        for i in range(3):
            await a.send_to(b"%d" % i, a.local_address)
        seen = []
        async for datagram in a:
            seen.append(datagram.data)
            if len(seen) == 3:
                a.close()
        assert seen == [b"0", b"1", b"2"]


async def test_connected_socket_send_and_peer():
    async with (
        open_udp_socket("127.0.0.1", 0) as server,
        open_udp_socket("127.0.0.1", 0) as client,
    ):
        assert client.peer_address is None
        await client.connect(server.local_address)
        assert client.peer_address == server.local_address
        await client.send(b"hi")
        assert (await server.receive()).data == b"hi"


async def test_connected_socket_reports_icmp_refusal():
    async with open_udp_socket("127.0.0.1", 0) as gone:
        port = gone.local_address[1]
    async with open_udp_socket("127.0.0.1", 0) as client:
        await client.connect(("127.0.0.1", port))
        await client.send(b"anyone?")
        with pytest.raises(ConnectionRefusedError):
            await client.receive()


async def test_virtual_sockets_take_the_plain_path(virtual_network):
    async with open_udp_socket("127.0.0.1", 0) as a:
        assert not a.is_fast
        await a.send_to(b"v", ("localhost", a.local_address[1]))
        assert (await a.receive()).data == b"v"


def test_public_socket_api_is_exported():
    assert trioudp.UDPSocket is UDPSocket


async def test_send_larger_than_the_limit_is_refused_before_the_kernel(virtual_network):
    async with client_socket("127.0.0.1") as a:
        with pytest.raises(trioudp.DatagramTooLarge):
            await a.send_to(b"x" * 70_000, ("127.0.0.1", 53))
    assert virtual_network.stats.sent == 0


async def test_a_socket_is_a_trio_async_resource():
    """Trio's resource protocol: aclose is a checkpoint, and closes even when
    cancelled; aclose_forcefully and AsyncExitStack close it too."""
    sock = trioudp.UDPSocket(trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    assert isinstance(sock, trio.abc.AsyncResource)
    with trio.testing.assert_checkpoints():
        await sock.aclose()
    assert sock.closed
    await sock.aclose()  # idempotent
    forced = trioudp.UDPSocket(trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    with trio.CancelScope() as scope:
        scope.cancel()
        await trio.aclose_forcefully(forced)
    assert forced.closed
    async with contextlib.AsyncExitStack() as stack:
        held = await stack.enter_async_context(
            trioudp.UDPSocket(trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        )
        assert not held.closed
    assert held.closed
