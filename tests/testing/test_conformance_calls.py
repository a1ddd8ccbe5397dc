"""What the socket calls take and raise, alike on real sockets and virtual
ones: the forms of an address, service names, name lookups, and one waiting
receiver per socket (see ``test_conformance.py`` for the fixtures' idea)."""

import errno
import socket

import pytest
import trio
import trio.testing

from .conftest import udp

AF_INET, AF_INET6, SOCK_DGRAM = socket.AF_INET, socket.AF_INET6, socket.SOCK_DGRAM

#: (family, address given to sendto, what trio's real socket does): "ok" or
#: the exception type (with its errno for an OSError). Measured on Linux 6.x
#: with trio 0.35; every case sends to loopback only.
ADDRESSES = [
    (AF_INET, ("127.0.0.1", 5, 0), ValueError),  # a 3-tuple: ValueError
    (AF_INET, ("127.0.0.1",), ValueError),
    (AF_INET, "127.0.0.1", ValueError),
    (AF_INET, ["127.0.0.1", 5], ValueError),
    (AF_INET, ("127.0.0.1", "5"), "ok"),
    (AF_INET, ("127.0.0.1", "domain"), "ok"),  # a service name
    (AF_INET, ("127.0.0.1", "no-such-service"), socket.gaierror),
    (AF_INET, ("127.0.0.1", 70000), OverflowError),
    (AF_INET, ("127.0.0.1", -1), OverflowError),
    (AF_INET, (5, 5), TypeError),
    (AF_INET, (b"127.0.0.1", 5), "ok"),
    (AF_INET, ("", 5), "ok"),
    (AF_INET, ("127.0.0.1", None), (OSError, errno.EINVAL)),  # port 0
    (AF_INET, ("127.0.0.1", 5.0), OSError),
    (AF_INET6, ("::1", 5, 0), "ok"),
    (AF_INET6, ("::1", 5, 0, 0, 0), ValueError),
    (AF_INET6, ("::1",), ValueError),
    (AF_INET6, ("::1", "domain"), "ok"),
    (AF_INET6, ("127.0.0.1", 5), "ok"),  # dual-stack: mapped
]


@pytest.mark.parametrize(("family", "address", "outcome"), ADDRESSES)
async def test_address_forms(network, family, address, outcome):
    with trio.socket.socket(family, SOCK_DGRAM) as sock:
        if outcome == "ok":
            assert await sock.sendto(b"x", address) == 1
            return
        kind, code = outcome if isinstance(outcome, tuple) else (outcome, None)
        with pytest.raises(kind) as info:
            await sock.sendto(b"x", address)
        assert type(info.value) is kind
        if code is not None:
            assert info.value.errno == code


async def test_a_service_name_is_a_port(network):
    with await udp() as server, await udp() as client:
        domain = socket.getservbyname("domain", "udp")
        # Binding the service's real port would need root and a free port 53:
        # connect, and read the port back instead.
        await client.connect(("127.0.0.1", "domain"))
        assert client.getpeername() == ("127.0.0.1", domain)
        host, port = server.getsockname()
        await client.connect((host, str(port)))
        await client.send(b"by a numeric string")
        assert await server.recv(100) == b"by a numeric string"


async def test_getaddrinfo_answers_every_socket_type_as_glibc(network):
    stream, dgram, raw = socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_RAW
    entries = await trio.socket.getaddrinfo("127.0.0.1", 53)
    assert [(kind, proto) for _, kind, proto, _, _ in entries] == [
        (stream, socket.IPPROTO_TCP),
        (dgram, socket.IPPROTO_UDP),
        (raw, 0),
    ]
    assert {entry[4] for entry in entries} == {("127.0.0.1", 53)}
    # A service name: only the types that know it ("domain": TCP and UDP).
    named = await trio.socket.getaddrinfo("127.0.0.1", "domain")
    assert [(kind, sockaddr) for _, kind, _, _, sockaddr in named] == [
        (stream, ("127.0.0.1", 53)),
        (dgram, ("127.0.0.1", 53)),
    ]
    only_udp = await trio.socket.getaddrinfo("127.0.0.1", 53, proto=socket.IPPROTO_UDP)
    assert [entry[1] for entry in only_udp] == [dgram]
    passive = await trio.socket.getaddrinfo(
        None, 53, type=dgram, flags=socket.AI_PASSIVE
    )
    assert [entry[4][0] for entry in passive] == ["0.0.0.0", "::"]
    with pytest.raises(socket.gaierror) as info:
        await trio.socket.getaddrinfo("127.0.0.1", "no-such-service")
    assert info.value.errno == socket.EAI_SERVICE
    with pytest.raises(socket.gaierror) as info:
        await trio.socket.getaddrinfo("127.0.0.1", 53, type=dgram, proto=6)
    assert info.value.errno == socket.EAI_SOCKTYPE


async def test_getnameinfo_names_the_service(network):
    numeric = socket.NI_NUMERICHOST
    here = ("127.0.0.1", 514)
    assert await trio.socket.getnameinfo(here, numeric) == ("127.0.0.1", "shell")
    udp_name = await trio.socket.getnameinfo(here, numeric | socket.NI_DGRAM)
    assert udp_name == ("127.0.0.1", "syslog")
    plain = await trio.socket.getnameinfo(here, numeric | socket.NI_NUMERICSERV)
    assert plain == ("127.0.0.1", "514")
    nameless = await trio.socket.getnameinfo(("127.0.0.1", 61_000), numeric)
    assert nameless == ("127.0.0.1", "61000")


async def test_a_second_task_waiting_to_receive_is_busy(network):
    with await udp() as sock, await udp() as peer:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sock.recv, 10)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await sock.recv(10)
            with pytest.raises(trio.BusyResourceError):
                await sock.recvfrom(10)
            # A datagram already queued is taken without waiting: no error.
            await peer.sendto(b"one", sock.getsockname())
            await trio.testing.wait_all_tasks_blocked()
            await peer.sendto(b"two", sock.getsockname())
            assert await sock.recv(10) == b"two"
        # The first receiver got "one" and left: a new one may wait.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sock.recv, 10)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
