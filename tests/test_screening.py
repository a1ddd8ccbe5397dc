"""trioudp._screening: forged sources, and broadcast or multicast a socket
did not ask for, are reported as stand-in peers; the destination reaches the
handler (the namespace scenarios in test_faults.py send forgeries over real
links)."""

import functools
import socket
import sys

import pytest
import trio
import trio.testing

import trioudp
from trioudp import (
    open_udp_socket,
)
from trioudp._interfaces import HostAddresses
from trioudp._screening import (
    BROADCAST_DESTINATION,
    FORGED_SOURCE,
    MULTICAST_DESTINATION,
    Screen,
)


@pytest.mark.skipif(
    not hasattr(socket, "CMSG_SPACE"), reason="needs recvmsg control data"
)
async def test_a_loopback_source_without_its_interface_is_not_trusted():
    """A screened socket asked for each datagram's interface; when that
    control message is missing (crowded out: MSG_CTRUNC), a loopback source
    is counted as forged, never trusted (fail closed)."""
    async with open_udp_socket("0.0.0.0", 0) as sock, open_udp_socket() as peer:
        sock._inbox.screen_sources()
        recvfrom_screened = sock._inbox.screened_recvfrom
        screen = recvfrom_screened.__self__
        await peer.send_to(b"real", ("127.0.0.1", sock.local_address[1]))
        await trio.lowlevel.wait_readable(sock.trio_socket)
        assert recvfrom_screened(100) == (
            b"real",
            ("127.0.0.1", peer.local_address[1]),
        )

        class Crowded:
            def recvmsg(self, bufsize, ancbufsize):
                return b"exit", [], socket.MSG_CTRUNC, ("127.0.0.1", 4000)

        real, screen.fast = screen.fast, Crowded()
        try:
            assert recvfrom_screened(100) == (b"exit", FORGED_SOURCE)
        finally:
            screen.fast = real


# ---- judging control data: what each datagram is, by rule -------------------

TABLE = HostAddresses.of(
    [
        (1, "127.0.0.1", 8, None),
        (2, "10.9.0.1", 24, "10.9.0.255"),
        (2, "fd00:9::1", 64, None),
    ],
    ephemeral=(32768, 60999),
)


class Book:
    """An AddressBook that never reads again."""

    table = TABLE
    due = float("inf")

    def current(self):
        return self.table


def pktinfo4(index, spec, addr):
    data = index.to_bytes(4, sys.byteorder)
    data += socket.inet_aton(spec) + socket.inet_aton(addr)
    return (socket.IPPROTO_IP, 8, data)


def pktinfo6(addr, index):
    raw = socket.inet_pton(socket.AF_INET6, addr) + index.to_bytes(4, sys.byteorder)
    return (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, raw)


BOOK = Book()


def screen(family=socket.AF_INET, host="0.0.0.0", book=BOOK, **settings):
    return Screen(
        None, "test", family=family, host=host, local_port=53, loopback=1,
        book=book, **settings,
    )  # fmt: skip


def judge4(source, addr, *, spec=None, index=2, port=40000, **settings):
    """The verdict of an IPv4 socket on 0.0.0.0:53 (destination included)."""
    control = [pktinfo4(index, spec or addr, addr)]
    return screen(**settings).judge(control, 0, (source, port))


@pytest.mark.parametrize(
    ("source", "port", "verdict"),
    [
        ("10.9.0.7", 40000, "peer"),  # a neighbour
        ("0.0.0.0", 40000, "forged"),
        ("127.0.0.1", 40000, "forged"),  # loopback over eth
        ("240.0.0.1", 40000, "forged"),  # class E
        ("224.0.0.9", 40000, "forged"),  # multicast
        ("255.255.255.255", 40000, "forged"),
        ("10.9.0.255", 40000, "forged"),  # the subnet's broadcast
        ("10.9.0.1", 4000, "forged"),  # this host, from a service's port
        ("10.9.0.1", 53, "forged"),  # this host, from this very socket
        ("10.9.0.1", 40000, "peer"),  # this host's own client
    ],
)
def test_sources_no_real_peer_has_are_forged(source, port, verdict):
    peer, destination = judge4(source, "10.9.0.1", port=port)
    assert destination == "10.9.0.1"
    assert peer == (FORGED_SOURCE if verdict == "forged" else (source, port))


def test_this_hosts_own_sources_over_loopback_are_real():
    peer, _ = judge4("10.9.0.1", "10.9.0.1", index=1, port=4000)
    assert peer == ("10.9.0.1", 4000)


def test_without_a_table_only_what_pktinfo_shows_is_judged():
    """A virtual socket has no host table here: own and broadcast sources
    pass; the rest of the rules hold."""
    assert judge4("10.9.0.1", "10.9.0.1", port=4000, book=None)[0] != FORGED_SOURCE
    assert judge4("10.9.0.255", "10.9.0.1", book=None)[0] != FORGED_SOURCE
    assert judge4("240.0.0.1", "10.9.0.1", book=None)[0] == FORGED_SOURCE


def test_a_datagram_to_loopback_from_another_interface_is_forged():
    """route_localnet=1: a neighbour's 10.9.0.7 -> 127.0.0.1 over eth."""
    assert judge4("10.9.0.7", "127.0.0.1") == (FORGED_SOURCE, "127.0.0.1")
    assert judge4("127.0.0.1", "127.0.0.1", index=1)[0] == ("127.0.0.1", 40000)


@pytest.mark.parametrize(
    ("broadcast", "source", "verdict"),
    [
        (False, "10.9.0.7", BROADCAST_DESTINATION),
        (True, "10.9.0.7", ("10.9.0.7", 40000)),
        (True, "198.51.100.7", BROADCAST_DESTINATION),  # not on the link
    ],
)
@pytest.mark.parametrize("addr", ["10.9.0.255", "255.255.255.255"])
def test_broadcasts_are_answered_only_when_asked_for_and_on_link(
    broadcast, source, verdict, addr
):
    """Linux names the interface's address as ipi_spec_dst for a
    broadcast, the destination itself for a unicast."""
    result = judge4(source, addr, spec="10.9.0.1", broadcast=lambda: broadcast)
    assert result == (verdict, addr)


def test_a_broadcast_is_known_without_ip_pktinfo_by_its_address():
    """A dual-stack socket whose IPv4 datagrams come with IPV6_PKTINFO only."""
    control = [pktinfo6("::ffff:10.9.0.255", 2)]
    peer = ("::ffff:10.9.0.7", 40000, 0, 0)
    judged = screen(socket.AF_INET6, "::").judge(control, 0, peer)
    assert judged == (BROADCAST_DESTINATION, "::ffff:10.9.0.255")


@pytest.mark.parametrize(
    ("groups", "routed", "source", "answered"),
    [
        ((), False, "10.9.0.7", False),  # a group it did not join
        ((("239.1.2.3", 0),), False, "10.9.0.7", True),
        ((("239.1.2.3", 0),), False, "198.51.100.7", False),  # off-link
        ((("239.1.2.3", 0),), True, "198.51.100.7", True),  # routed=True
    ],
)
def test_multicast_is_answered_for_joined_groups_from_on_link(
    groups, routed, source, answered
):
    result = judge4(
        source, "239.1.2.3", spec="10.9.0.1", groups=groups, routed=lambda: routed
    )
    peer = (source, 40000) if answered else MULTICAST_DESTINATION
    assert result == (peer, "239.1.2.3")


@pytest.mark.parametrize(
    ("groups", "source", "answered"),
    [
        ((), "fe80::7", False),  # ff02::1 and the like: never joined
        ((("ff02::1", 2),), "fe80::7", True),  # link-local: on the link
        ((("ff02::1", 2),), "2001:db8::7", False),
    ],
)
def test_ipv6_multicast_is_judged_as_ipv4(groups, source, answered):
    control = [pktinfo6("ff02::1", 2)]
    peer = (source, 40000, 0, 2)
    judged = screen(socket.AF_INET6, "::", groups=groups).judge(control, 0, peer)
    assert judged == (peer if answered else MULTICAST_DESTINATION, "ff02::1")


def test_ipv4_mapped_sources_of_ipv6_packets_and_of_ipv4_ones():
    dual = screen(socket.AF_INET6, "::")
    ipv6 = [pktinfo6("fd00:9::1", 2)]
    mapped = ("::ffff:10.9.0.7", 40000, 0, 0)
    assert dual.judge(ipv6, 0, mapped)[0] == FORGED_SOURCE
    ipv4 = [pktinfo6("::ffff:10.9.0.1", 2), pktinfo4(2, "10.9.0.1", "10.9.0.1")]
    assert dual.judge(ipv4, 0, mapped) == (mapped, "::ffff:10.9.0.1")
    assert dual.judge(ipv4, 0, ("::ffff:10.9.0.255", 4, 0, 0))[0] == FORGED_SOURCE


def test_control_data_cut_short_trusts_no_loopback_source():
    control = [pktinfo4(1, "127.0.0.1", "127.0.0.1")]
    judged = screen().judge(control, socket.MSG_CTRUNC, ("127.0.0.1", 40000))
    assert judged[0] == FORGED_SOURCE


# ---- real sockets on loopback ------------------------------------------------


async def served(nursery, host, port=0, **settings):
    return await nursery.start(
        functools.partial(
            trioudp.serve_udp, trioudp.Responder(record), port, host=host, **settings
        )
    )


SEEN = []


def record(datagram):
    SEEN.append(datagram.destination)
    return datagram.data


@pytest.mark.parametrize(
    ("host", "to", "destination"),
    [
        ("127.0.0.1", "127.0.0.1", "127.0.0.1"),
        ("0.0.0.0", "127.0.0.1", "127.0.0.1"),
        ("::", "127.0.0.1", "::ffff:127.0.0.1"),
        ("::", "::1", "::1"),
    ],
)
async def test_the_destination_reaches_the_handler(nursery, host, to, destination):
    SEEN.clear()
    server = await served(nursery, host)
    family = socket.AF_INET6 if ":" in to else socket.AF_INET
    async with trioudp.open_udp_socket(to, 0, family=family) as client:
        await client.send_to(b"where?", (to, server.port))
        assert (await client.receive()).data == b"where?"
    assert [destination] == SEEN


async def test_a_broadcast_on_loopback_is_answered_only_when_asked_for(nursery):
    """127.255.255.255 is lo's broadcast address: a server on 0.0.0.0 drops
    it (counted) unless it asked for broadcasts."""
    SEEN.clear()
    quiet = await served(nursery, "0.0.0.0")
    asked = await served(nursery, "0.0.0.0", broadcast=True)
    async with trioudp.open_udp_socket("127.0.0.1", 0, broadcast=True) as client:
        await client.send_to(b"anyone?", ("127.255.255.255", quiet.port))
        # Taken after the broadcast, from the same queue: it was judged.
        await client.send_to(b"you?", ("127.0.0.1", quiet.port))
        assert (await client.receive()).data == b"you?"
        await client.send_to(b"anyone?", ("127.255.255.255", asked.port))
        reply = await client.receive()
        assert (reply.data, reply.peer[1]) == (b"anyone?", asked.port)
    stats = quiet.stats
    assert (stats.received, stats.handled, stats.dropped_broadcast) == (2, 1, 1)
    assert stats.accounted == stats.received
    assert SEEN == ["127.0.0.1", "127.255.255.255"]


@pytest.mark.skipif(sys.platform != "linux", reason="Linux options")
async def test_sockets_receive_only_the_groups_they_join(nursery):
    for family, level, option in (
        (socket.AF_INET, socket.IPPROTO_IP, 49),  # IP_MULTICAST_ALL
        (socket.AF_INET6, socket.IPPROTO_IPV6, 29),  # IPV6_MULTICAST_ALL
    ):
        async with trioudp.open_udp_socket(family=family) as sock:
            assert sock.trio_socket.getsockopt(level, option) == 0


@pytest.mark.skipif(sys.platform != "linux", reason="SO_BINDTODEVICE is Linux's")
async def test_a_server_on_loopback_receives_only_from_the_loopback_interface(
    nursery,
):
    """So that a neighbour's 127.0.0.2 -> 127.0.0.1 (route_localnet=1, see
    test_faults) never reaches it, at no cost per datagram."""
    server = await served(nursery, "127.0.0.1")
    fast = server.sockets[0]._fast
    device = fast.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16)
    assert device.rstrip(b"\0") == b"lo"
    assert server.sockets[0]._inbox.screened_recvfrom == fast.recvfrom


# ---- the virtual network -----------------------------------------------------


async def test_the_destination_and_broadcasts_on_the_virtual_network(
    virtual_network, autojump_clock, nursery
):
    """The same rules where the network is simulated: its sockets report
    IP_PKTINFO as Linux does."""
    SEEN.clear()
    net = virtual_network
    net.add_host("10.0.0.1/24")
    net.add_host("10.0.0.2/24")
    with net.on_host("10.0.0.1"):
        quiet = await nursery.start(
            functools.partial(trioudp.serve_udp, trioudp.Responder(record), 53)
        )
        asked = await nursery.start(
            functools.partial(
                trioudp.serve_udp, trioudp.Responder(record), 54, broadcast=True
            )
        )
    async with trioudp.open_udp_socket("10.0.0.2", 0, broadcast=True) as client:
        for port in (53, 54):
            await client.send_to(b"anyone?", ("10.0.0.255", port))
            await client.send_to(b"you?", ("10.0.0.1", port))
        answers = [(await client.receive()).data for _ in range(3)]
        await trio.sleep(1)
        assert not client.trio_socket.is_readable()
    assert sorted(answers) == [b"anyone?", b"you?", b"you?"]
    assert quiet.stats.dropped_broadcast == 1
    assert asked.stats.dropped_broadcast == 0
    assert sorted(SEEN) == ["10.0.0.1", "10.0.0.1", "10.0.0.255"]


async def test_multicast_on_the_virtual_network(
    virtual_network, autojump_clock, nursery
):
    """A server answers the group it joined, from on the link; one that
    joined none hears no group (IP_MULTICAST_ALL off)."""
    SEEN.clear()
    net = virtual_network
    net.add_host("10.0.0.1/24")
    net.add_host("10.0.0.2/24")
    with net.on_host("10.0.0.1"):
        member = await served(
            nursery,
            "0.0.0.0",
            5353,
            reuse_port=True,
            multicast=trioudp.Multicast(groups=["239.7.7.7"]),
        )
        bystander = await served(nursery, "0.0.0.0", 5353, reuse_port=True)
    async with trioudp.open_udp_socket("10.0.0.2", 0) as client:
        await client.send_to(b"members?", ("239.7.7.7", 5353))
        assert (await client.receive()).data == b"members?"
        await trio.sleep(1)
        assert not client.trio_socket.is_readable()
    assert SEEN == ["239.7.7.7"]
    assert member.stats.handled == 1
    assert bystander.stats.received == 0


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="needs SO_REUSEPORT")
@pytest.mark.parametrize("opened_by", ["trioudp", "user"])
async def test_servers_sharing_a_loopback_port_all_get_datagrams(nursery, opened_by):
    """Linux takes a socket bound to a device after its address out of its
    SO_REUSEPORT group (it got nothing: a worker of two answered nothing).
    trioudp binds the device before the address; a socket of the user's,
    already bound, is screened per datagram instead."""

    async def user_socket(port):
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        await sock.bind(("127.0.0.1", port))
        return trioudp.UDPSocket(sock)

    servers = []
    port = 0
    for _ in range(2):
        if opened_by == "trioudp":
            server = await served(nursery, "127.0.0.1", port=port, reuse_port=True)
        else:
            sock = await user_socket(port)
            server = await nursery.start(
                trioudp.serve_udp_sockets, trioudp.Responder(record), [sock]
            )
        port = server.port
        servers.append(server)
    for _ in range(64):
        async with trioudp.open_udp_socket("127.0.0.1", 0) as client:
            await client.send_to(b"x", ("127.0.0.1", port))
            await client.receive()
    assert all(server.stats.handled > 0 for server in servers)
    assert sum(server.stats.handled for server in servers) == 64


@pytest.mark.parametrize(("index", "forged"), [(1, False), (3, True), (None, True)])
def test_a_loopback_socket_not_bound_to_lo_checks_each_datagrams_interface(
    index, forged
):
    """Where the socket cannot be bound to lo (a user's socket in a
    SO_REUSEPORT group, Linux before 5.7), each datagram's IP_PKTINFO says
    whether it came over lo; one that did not, or says nothing, is forged."""
    control = [] if index is None else [pktinfo4(index, "127.0.0.1", "127.0.0.1")]

    class Twin:
        def recvmsg(self, bufsize, ancbufsize):
            return b"exit", control, 0, ("127.0.0.2", 4000)

    loopback = Screen(
        Twin(), "test", family=socket.AF_INET, host="127.0.0.1", local_port=53,
        loopback=1, book=None,
    )  # fmt: skip
    peer = FORGED_SOURCE if forged else ("127.0.0.2", 4000)
    assert loopback.receive(100) == (b"exit", peer)
