"""trioudp._serve: serve_udp and serve_udp_sockets start like serve_tcp, and
refuse bad settings before anything runs, leaving nothing open."""

import functools
import math
import socket

import pytest
import trio
import trio.testing

import trioudp
from trioudp import (
    serve_udp,
    serve_udp_sockets,
)
from trioudp._open import bind_udp_socket

from .conftest import open_fds, requires_ipv6
from .helpers import (
    assert_port_free,
    echo,
    free_port,
    start,
)


async def test_serve_udp_starts_like_serve_tcp_and_echoes(nursery):
    server = await start(nursery, echo)
    assert isinstance(server, trioudp.UDPServer)
    assert server.addresses == [("127.0.0.1", server.port)]
    assert server.sockets[0].is_fast
    async with trioudp.open_udp_client("127.0.0.1", server.port) as client:
        for i in range(10):
            assert (await client.request(b"%d" % i)).data == b"%d" % i
    stats = server.stats
    assert (stats.received, stats.handled, stats.replied) == (10, 10, 10)
    await server.shutdown()
    assert server.sockets[0].closed


@requires_ipv6
async def test_host_none_serves_ipv4_and_ipv6_on_one_port(nursery):
    server = await nursery.start(serve_udp, echo, 0)
    families = sorted(len(address) for address in server.addresses)
    assert families == [2, 4]
    assert {address[1] for address in server.addresses} == {server.port}
    for host in ("127.0.0.1", "::1"):
        async with trioudp.open_udp_client(host, server.port) as client:
            assert (await client.request(b"x")).data == b"x"


async def test_serve_udp_sockets_serves_your_own_socket(virtual_network, nursery):
    sock = await trioudp._open.bind_udp_socket("127.0.0.1", 0)
    server = await nursery.start(serve_udp_sockets, echo, [sock])
    assert server.sockets == (sock,)
    async with trioudp.open_udp_client("127.0.0.1", server.port) as client:
        assert (await client.request(b"mine")).data == b"mine"


async def test_serve_udp_sockets_needs_a_socket():
    with pytest.raises(ValueError, match="at least one socket"):
        await serve_udp_sockets(echo, [])


async def test_bind_failure_raises_before_started(nursery):
    server = await start(nursery, echo)
    with pytest.raises(trioudp.BindError):
        await nursery.start(
            functools.partial(serve_udp, echo, server.port, host="127.0.0.1")
        )


async def test_serve_udp_sockets_closes_the_sockets_it_refuses(virtual_network):
    sock = await trioudp._open.bind_udp_socket("127.0.0.1", 0)
    with pytest.raises(ValueError, match="max_in_flight"):
        await serve_udp_sockets(echo, [sock], max_in_flight=0)
    assert sock.closed


#: serve_udp's settings that are open_udp_sockets' (serve_udp_sockets lacks them).
SOCKET_SETTINGS = {
    "host",
    "max_datagram_size",
    "receive_buffer",
    "multicast",
    "broadcast",
}


BAD_SERVER_SETTINGS = [
    ({"host": 127}, TypeError, "host must be a str or None, not int 127"),
    ({"max_datagram_size": 1.5}, TypeError, "max_datagram_size must be an int, not float 1.5"),
    ({"max_datagram_size": True}, TypeError, "max_datagram_size must be an int"),
    ({"max_datagram_size": 10**6}, ValueError, "max_datagram_size must be in 0..65507, not 1000000"),
    ({"receive_buffer": 0}, ValueError, "receive_buffer must be >= 1, not 0"),
    ({"receive_buffer": "1M"}, TypeError, "receive_buffer must be an int, not str '1M'"),
    ({"multicast": {"groups": ["239.1.2.3"]}}, TypeError, "multicast must be a Multicast or None, not dict"),
    ({"broadcast": 1}, TypeError, "broadcast must be True or False, not 1"),
    ({"max_in_flight": 1.5}, ValueError, "max_in_flight must be an int >= 1, not 1.5"),
    ({"overflow": "drop_random"}, ValueError, "'drop_random' is not a valid Overflow"),
    ({"rate_limit": {"rate": 10, "burst": 5}}, TypeError, "rate_limit must be a RateLimit or None, not dict"),
    ({"access": ["10.0.0.0/8"]}, TypeError, r"access must be an AccessList or None, not list \['10.0.0.0/8'\]"),
    ({"amplification_factor": "3"}, TypeError, "amplification_factor must be a number, not '3'"),
    ({"amplification_factor": True}, TypeError, "amplification_factor must be a number"),
    ({"amplification_factor": 0.5}, ValueError, "amplification_factor must be a finite number >= 1, not 0.5"),
    ({"amplification_factor": math.inf}, ValueError, "amplification_factor must be a finite number >= 1, not inf"),
    ({"max_in_flight": 0}, ValueError, "max_in_flight must be an int >= 1"),
    ({"queue_size": -1}, ValueError, "queue_size must be an int >= 0"),
    ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1"),
    ({"batch_time": -0.001}, ValueError, "batch_time must be >= 0 seconds"),
    ({"batch_time": "2ms"}, TypeError, "batch_time must be a number, not '2ms'"),
    ({"handler_nursery": "n"}, TypeError, "handler_nursery must be a Nursery or None, not str 'n'"),
    ({"handler_timeout": 0}, ValueError, "handler_timeout must be a positive"),
    ({"handler_timeout": -1}, ValueError, "handler_timeout must be a positive"),
    ({"handler_timeout": "5"}, TypeError, "handler_timeout must be a number, not '5'"),
    ({"handler_timeout": 10**400}, ValueError, "handler_timeout is too large"),
    ({"handler_timeout": math.nan}, ValueError, "handler_timeout must be a number, not nan"),
]  # fmt: skip


@pytest.mark.parametrize(("settings", "error", "fragment"), BAD_SERVER_SETTINGS)
async def test_a_refused_serve_udp_leaves_no_socket_bound_and_no_descriptor_open(
    settings, error, fragment
):
    port = free_port()
    before = open_fds()
    with pytest.raises(error, match=fragment) as refused, trio.fail_after(2):
        await serve_udp(echo, port, **{"host": "127.0.0.1", **settings})
    # While the exception (and the frames its traceback holds) lives:
    assert refused.value is not None
    assert open_fds() == before
    assert_port_free(port)


@pytest.mark.parametrize(
    ("settings", "error", "fragment"),
    [
        (settings, error, fragment)
        for settings, error, fragment in BAD_SERVER_SETTINGS
        if not SOCKET_SETTINGS & settings.keys()
    ],
)
async def test_a_refused_serve_udp_sockets_closes_the_sockets_it_was_given(
    settings, error, fragment
):
    before = open_fds()
    sock = await bind_udp_socket("127.0.0.1", 0)
    port = sock.local_address[1]
    with pytest.raises(error, match=fragment) as refused, trio.fail_after(2):
        await trioudp.serve_udp_sockets(echo, [sock], **settings)
    assert refused.value is not None
    assert sock.closed
    assert open_fds() == before
    assert_port_free(port)


async def test_serve_udp_sockets_refuses_what_is_not_a_udp_socket_and_closes_it():
    before = open_fds()
    raw = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await raw.bind(("127.0.0.1", 0))
    port = raw.getsockname()[1]
    with pytest.raises(
        TypeError, match=r"trioudp.UDPSocket objects .* not _SocketType"
    ):
        with trio.fail_after(2):
            await trioudp.serve_udp_sockets(echo, [raw])
    assert open_fds() == before
    assert_port_free(port)
