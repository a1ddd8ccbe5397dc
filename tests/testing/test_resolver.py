"""Name lookups answered from the network's hosts, as trio and glibc would."""

import socket

import pytest
import trio


async def test_names_resolve_through_the_virtual_resolver(virtual_network):
    virtual_network.add_host(["10.0.0.9", "fd00::9"], names=["db.test"])
    infos = await trio.socket.getaddrinfo("db.test", 53, type=socket.SOCK_DGRAM)
    assert [info[4][0] for info in infos] == ["10.0.0.9", "fd00::9"]
    v6 = await trio.socket.getaddrinfo("DB.test", 53, family=socket.AF_INET6)
    assert v6[0][4] == ("fd00::9", 53, 0, 0)
    with pytest.raises(socket.gaierror):
        await trio.socket.getaddrinfo("unknown.test", 53)
    assert await trio.socket.getnameinfo(("10.0.0.9", 53), 0) == ("db.test", "domain")
    numeric = socket.NI_NUMERICSERV | socket.NI_NUMERICHOST
    assert await trio.socket.getnameinfo(("10.0.0.9", 53), numeric) == (
        "10.0.0.9",
        "53",
    )
    localhost = await trio.socket.getaddrinfo("localhost", 1, family=socket.AF_INET)
    assert localhost[0][4] == ("127.0.0.1", 1)


async def test_dual_stack_socket_reaches_an_ipv4_only_name(virtual_network):
    """trio resolves names for an IPv6 socket with AI_V4MAPPED."""
    virtual_network.add_address(virtual_network.localhost, "10.0.0.5")
    virtual_network.add_host("10.0.0.6", names=["four.test"])
    virtual_network.add_host(["10.0.0.7", "fd00::7"], names=["both.test"])
    dual = trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    await dual.connect(("four.test", 53))
    assert dual.getpeername() == ("::ffff:10.0.0.6", 53, 0, 0)
    await dual.connect(("both.test", 53))
    assert dual.getpeername() == ("fd00::7", 53, 0, 0)  # IPv6 first
    six = trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    six.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    with pytest.raises(socket.gaierror):
        await six.connect(("four.test", 53))
    dual.close()
    six.close()
