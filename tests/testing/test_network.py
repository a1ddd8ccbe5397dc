"""VirtualNetwork itself: installing it, the sockets it makes, where they live,
and unmodified trio.socket code running on it."""

import socket

import pytest
import trio

import trioudp
from trioudp.testing import VirtualNetwork

from .conftest import drain, pair


async def test_install_swaps_and_restores_the_socket_factory():
    net = VirtualNetwork()
    with net.install():
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        assert isinstance(sock, trioudp.testing.VirtualSocket)
        with pytest.raises(RuntimeError, match="installed already"), net.install():
            pass  # pragma: no cover
    real = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with real:
        assert not isinstance(real, trioudp.testing.VirtualSocket)
    sock.close()


async def test_non_udp_sockets_are_refused_clearly(virtual_network):
    with pytest.raises(OSError, match="only makes UDP"):
        trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(OSError, match="AF_INET and AF_INET6"):
        trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)


async def test_on_host_sets_the_home_of_new_sockets(virtual_network):
    virtual_network.add_host("10.0.0.5")
    with virtual_network.on_host("10.0.0.5"):
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.bind(("0.0.0.0", 0))
        b = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await b.bind(("127.0.0.1", 0))
        await sock.sendto(b"from five", ("127.0.0.1", b.getsockname()[1]))
        await sock.sendto(b"x", ("10.0.0.5", sock.getsockname()[1]))
        assert await sock.recv(10) == b"x"
        _, peer = await b.recvfrom(20)
        # 127.0.0.1 is localhost's, reached over eth0: the source is eth0's.
        assert peer[0] == "10.0.0.5"


async def test_an_unmodified_raw_trio_socket_echo_pair(virtual_network):
    async def raw_echo_server(task_status=trio.TASK_STATUS_IGNORED):
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            await sock.bind(("127.0.0.1", 7))
            task_status.started()
            while True:
                data, address = await sock.recvfrom(2048)
                await sock.sendto(data, address)

    async with trio.open_nursery() as nursery:
        await nursery.start(raw_echo_server)
        client = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with client:
            for word in (b"alpha", b"beta", b"gamma"):
                await client.sendto(word, ("localhost", 7))
                assert await client.recv(2048) == word
        nursery.cancel_scope.cancel()
    assert virtual_network.stats.delivered == 6


async def test_settings_change_while_running(autojump_clock):
    net = VirtualNetwork()
    with net.install():
        a, b = await pair()
        await a.sendto(b"1", b.getsockname())
        net.configure(latency=2.0)
        await a.sendto(b"2", b.getsockname())
        start = trio.current_time()
        assert await drain(b, 2) == [b"1", b"2"]
        assert trio.current_time() - start == 2.0
        with pytest.raises(ValueError, match="loss must be a probability"):
            net.configure(loss=2)
