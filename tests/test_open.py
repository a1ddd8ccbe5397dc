"""trioudp._open: open_udp_socket(s) check every argument before a socket
exists, bind, and leave nothing open when they refuse."""

import errno
import socket

import pytest
import trio
import trio.testing

import trioudp
from trioudp import (
    BindError,
    InvalidAddress,
    open_udp_socket,
)

from .conftest import open_fds
from .helpers import (
    start,
)


async def test_port_in_use_is_a_bind_error_naming_host_port_and_cause():
    async with open_udp_socket("127.0.0.1", 0) as a:
        port = a.local_address[1]
        with pytest.raises(BindError) as info:
            async with open_udp_socket("127.0.0.1", port):
                pass  # pragma: no cover
    error = info.value
    assert error.errno == errno.EADDRINUSE
    assert (error.host, error.port) == ("127.0.0.1", port)
    assert f"port {port}" in str(error)
    assert "in use" in str(error)


async def test_address_not_on_this_host_is_a_bind_error():
    # 192.0.2.0/24 is TEST-NET-1: never assigned to a host. Binding sends nothing.
    with pytest.raises(BindError) as info:
        async with open_udp_socket("192.0.2.1", 0):
            pass  # pragma: no cover
    assert info.value.errno == errno.EADDRNOTAVAIL
    assert "does not belong to this host" in str(info.value)


async def test_bad_family_and_port_arguments():
    with pytest.raises(ValueError, match="family must be"):
        async with open_udp_socket("127.0.0.1", 0, family=socket.AF_UNIX):
            pass  # pragma: no cover
    with pytest.raises(InvalidAddress, match="port must be"):
        async with open_udp_socket("127.0.0.1", -1):
            pass  # pragma: no cover


async def test_reuse_port_lets_two_sockets_share_a_port():
    async with open_udp_socket("127.0.0.1", 0, reuse_port=True) as a:
        port = a.local_address[1]
        async with open_udp_socket("127.0.0.1", port, reuse_port=True) as b:
            assert b.local_address[1] == port


async def test_open_close_cycles_leave_no_file_descriptor():
    before = open_fds()
    for _ in range(10_000):
        async with open_udp_socket("127.0.0.1", 0) as sock:
            await sock.send_to(b"x", sock.local_address)
    assert open_fds() == before


async def test_cancelled_open_leaves_no_file_descriptor():
    before = open_fds()
    with trio.CancelScope() as scope:
        scope.cancel()
        async with open_udp_socket("127.0.0.1", 0):
            await trio.sleep_forever()  # pragma: no cover
    assert open_fds() == before


async def test_unknown_names_are_invalid_addresses(virtual_network):
    async with open_udp_socket("127.0.0.1", 0) as a:
        with pytest.raises(InvalidAddress, match="cannot resolve 'nowhere.test'"):
            await a.send_to(b"x", ("nowhere.test", 9))
    with pytest.raises(InvalidAddress, match="cannot resolve"):
        async with open_udp_socket("nowhere.test", 0):
            pass  # pragma: no cover


async def test_binding_by_name_uses_the_resolver(virtual_network):
    virtual_network.add_host("10.0.0.7", names=["seven.test"])
    async with open_udp_socket("seven.test", 0) as a:
        assert a.local_address[0] == "10.0.0.7"


async def test_receive_buffer_is_requested_and_a_shortfall_logged(
    virtual_network, nursery, caplog
):
    server = await start(nursery, host="127.0.0.1", receive_buffer=4_000_000)
    granted = server.sockets[0].trio_socket.getsockopt(
        socket.SOL_SOCKET,
        socket.SO_RCVBUF,
    )
    assert granted == 425_984
    assert (
        "asked for a 4000000-byte UDP receive buffer, the kernel granted 425984"
        in caplog.text
    )


@pytest.mark.parametrize(
    ("settings", "error", "fragment"),
    [
        ({"max_datagram_size": 10**6}, ValueError, "max_datagram_size must be in 0..65507"),
        ({"max_datagram_size": 1.5}, TypeError, "max_datagram_size must be an int"),
        ({"host": "::1", "max_datagram_size": 65_528}, ValueError, "must be in 0..65527"),
        ({"receive_buffer": -1}, ValueError, "receive_buffer must be >= 1"),
        ({"reuse_port": "yes"}, TypeError, "reuse_port must be True or False, not 'yes'"),
        ({"dual_stack": "no"}, TypeError, "dual_stack must be True or False, not 'no'"),
        ({"multicast": "239.1.2.3"}, TypeError, "multicast must be a Multicast or None"),
        ({"host": b"127.0.0.1"}, TypeError, "host must be a str or None, not bytes"),
        ({"port": "53"}, trioudp.InvalidAddress, "port must be in 0..65535, not '53'"),
    ],
)  # fmt: skip
async def test_a_refused_open_udp_socket_leaves_no_descriptor_open(
    settings, error, fragment
):
    before = open_fds()
    settings = {"host": "127.0.0.1", "port": 0, **settings}
    for _ in range(3):
        with pytest.raises(error, match=fragment) as refused:
            async with trioudp.open_udp_socket(**settings):
                pass  # pragma: no cover
        assert refused.value is not None
        assert open_fds() == before
    if not {"reuse_port", "dual_stack"} & settings.keys():
        with pytest.raises(error, match=fragment):
            await trioudp.open_udp_sockets(**settings)
        assert open_fds() == before
