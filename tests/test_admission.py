"""trioudp._admission: which datagrams reach the handler (rate limits, access
lists, port 0), and the amplification guard, exact on the virtual network."""

import functools

import trio
import trio.testing

import trioudp
from trioudp import (
    AccessList,
    RateLimit,
)

from . import helpers
from .helpers import client_socket

#: Servers here answer on port 53 of every address of their host.
start = functools.partial(helpers.start, port=53, host="0.0.0.0")


async def test_rate_limit_drops_exactly_what_the_settings_imply(
    virtual_network, autojump_clock, nursery
):
    virtual_network.add_host("192.0.2.1")
    virtual_network.add_host("192.0.2.2")
    virtual_network.add_host("198.51.100.1")
    with virtual_network.on_host("192.0.2.1"):
        server = await start(nursery, rate_limit=RateLimit(rate=10, burst=5))
    async with client_socket("192.0.2.2") as a, client_socket("198.51.100.1") as b:
        for _ in range(8):
            await a.send_to(b"x", ("192.0.2.1", 53))
        await b.send_to(b"y", ("192.0.2.1", 53))
        await trio.testing.wait_all_tasks_blocked()
        assert (server.stats.handled, server.stats.dropped_rate_limited) == (6, 3)
        await trio.sleep(0.5)  # five tokens come back
        for _ in range(6):
            await a.send_to(b"x", ("192.0.2.1", 53))
        await trio.testing.wait_all_tasks_blocked()
    stats = server.stats
    assert (stats.handled, stats.dropped_rate_limited) == (11, 4)
    assert stats.accounted == stats.received == 15


async def test_rate_limit_log_only_counts_but_drops_nothing(
    virtual_network, nursery, caplog
):
    server = await start(
        nursery, host="127.0.0.1", rate_limit=RateLimit(rate=1, burst=1, log_only=True)
    )
    async with client_socket("127.0.0.1") as a:
        for _ in range(4):
            await a.send_to(b"x", ("127.0.0.1", 53))
        await trio.testing.wait_all_tasks_blocked()
    stats = server.stats
    assert (stats.handled, stats.dropped_rate_limited, stats.rate_limited_logged) == (
        4,
        0,
        3,
    )
    assert "rate limit exceeded by 127.0.0.1" in caplog.text


async def test_access_list_refuses_before_the_handler(virtual_network, nursery):
    virtual_network.add_host("10.0.0.1")
    virtual_network.add_host("10.6.6.6")
    seen = []

    async def record(datagram):
        seen.append(datagram.peer[0])

    with virtual_network.on_host("10.0.0.1"):
        server = await start(
            nursery,
            record,
            access=AccessList(allow=["10.0.0.0/8"], deny=["10.6.0.0/16"]),
        )
    async with client_socket("10.6.6.6") as bad:
        await bad.send_to(b"x", ("10.0.0.1", 53))
    async with client_socket("10.0.0.1") as good:
        await good.send_to(b"x", ("10.0.0.1", 53))
    await trio.testing.wait_all_tasks_blocked()
    assert seen == ["10.0.0.1"]
    assert server.stats.dropped_denied == 1


async def test_source_port_zero_is_never_answered(virtual_network, nursery):
    server = await start(nursery, host="127.0.0.1")
    spoofed = trioudp.Datagram(
        data=b"x",
        peer=("192.0.2.1", 0),
        local=("127.0.0.1", 53),
        received_at=0.0,
        origin=server.sockets[0]._outbox,
    )
    assert not server._admission.admit(spoofed)
    assert server.stats.dropped_port_zero == 1


async def test_amplification_guard_withholds_big_replies_until_validated(
    virtual_network, nursery
):
    async def amplify(datagram):
        if datagram.data == b"token":
            datagram.validate_peer()
        await datagram.reply(b"x" * 100)

    server = await start(nursery, amplify, host="127.0.0.1", amplification_factor=3)
    async with client_socket("127.0.0.1") as a:
        await a.send_to(b"a" * 40, ("127.0.0.1", 53))  # 120 bytes allowed: one reply
        await a.send_to(b"b", ("127.0.0.1", 53))  # 8 more bytes of credit: not enough
        await trio.testing.wait_all_tasks_blocked()
        assert server.stats.replied == 1
        assert server.stats.dropped_amplification == 1
        await a.send_to(b"token", ("127.0.0.1", 53))
        await a.send_to(b"c", ("127.0.0.1", 53))
        await trio.testing.wait_all_tasks_blocked()
    stats = server.stats
    assert (stats.replied, stats.dropped_amplification, stats.handled) == (3, 1, 4)


async def test_amplification_guard_counts_bytes_not_items(nursery):
    """A reply given as a memoryview of 8-byte items, or a 2-D memoryview,
    counts its bytes: a 400-byte request can draw at most 1200 bytes (it
    drew 8x that when the guard counted len(), the items)."""
    await guard_counts_bytes(nursery)


async def test_amplification_guard_counts_bytes_on_the_virtual_network(
    virtual_network, nursery
):
    await guard_counts_bytes(nursery)


async def guard_counts_bytes(nursery):
    import array

    drawn = []

    async def wide(datagram):
        for reply in (
            memoryview(array.array("Q", bytes(1200))),  # 150 items, 1200 bytes
            memoryview(bytes(800)).cast("B", (20, 40)),  # 20 rows, 800 bytes
            memoryview(array.array("Q", bytes(8))),
        ):
            before = server.stats.replied
            await datagram.reply(reply)
            if server.stats.replied > before:
                drawn.append(reply.nbytes)

    server = await start(
        nursery, wide, port=0, host="127.0.0.1", amplification_factor=3
    )
    async with client_socket("127.0.0.1") as client:
        await client.send_to(b"q" * 400, ("127.0.0.1", server.port))
        with trio.fail_after(5):
            assert len((await client.receive()).data) == 1200
        await trio.testing.wait_all_tasks_blocked()
    assert drawn == [1200]
    assert server.stats.dropped_amplification == 2
    assert server.stats.handled == 1


def test_screenings_stand_ins_are_counted_by_reason():
    """Screening reports a datagram it refuses with a stand-in peer of port
    0 (``_screening``); admission counts each under its own reason."""
    from trioudp._admission import Admission
    from trioudp._screening import (
        BROADCAST_DESTINATION,
        FORGED_SOURCE,
        MULTICAST_DESTINATION,
    )

    admission = Admission(rate_limit=None, access=None, guarded=False)
    for peer in (
        FORGED_SOURCE,
        ("::", 4000, 0, 0),
        BROADCAST_DESTINATION,
        MULTICAST_DESTINATION,
        MULTICAST_DESTINATION,
        ("192.0.2.1", 0),
        ("192.0.2.1", 4000),
    ):
        datagram = trioudp.Datagram(
            data=b"", peer=peer, local=("0.0.0.0", 53), received_at=0.0
        )
        admission.admit(datagram)
    counts = {
        name: getattr(admission, f"dropped_{name}")
        for name in ("forged", "broadcast", "multicast", "port_zero")
    }
    assert counts == {"forged": 2, "broadcast": 1, "multicast": 2, "port_zero": 1}


# ---- the loop guard -------------------------------------------------------------


async def echo_services(net, nursery, **settings):
    """Two echo services on port 7, on 192.0.2.1 and 192.0.2.2, a
    millisecond apart."""
    net.configure(latency=0.001)
    servers = []
    for address in ("192.0.2.1", "192.0.2.2"):
        net.add_host(address)
        with net.on_host(address):
            servers.append(
                await helpers.start(nursery, port=7, host=address, **settings)
            )
    return servers


async def test_a_loop_between_two_echo_services_ends_by_default(
    virtual_network, autojump_clock, nursery
):
    """One datagram from one echo service's port to the other's (what a
    neighbour forges on a LAN, see test_faults) starts a loop; each service
    holds the other to a budget of 16 replies, so it ends after 32."""
    a, b = await echo_services(virtual_network, nursery)
    await a.sockets[0].send_to(b"ping", ("192.0.2.2", 7))
    await trio.sleep(60)
    replied = a.stats.replied + b.stats.replied
    assert replied == 32
    assert a.stats.dropped_loop + b.stats.dropped_loop == 1
    # 2 replies a second refill the budget: what a slow loop may still do.
    for server in (a, b):
        assert server.stats.accounted == server.stats.received


async def test_without_the_loop_guard_the_loop_goes_on(
    virtual_network, autojump_clock, nursery
):
    a, b = await echo_services(virtual_network, nursery, loop_guard=None)
    await a.sockets[0].send_to(b"ping", ("192.0.2.2", 7))
    await trio.sleep(1)
    assert a.stats.replied + b.stats.replied >= 999
    nursery.cancel_scope.cancel()


async def test_a_validated_peer_is_not_held_to_the_loop_budget(
    virtual_network, autojump_clock, nursery
):
    """A peer from a service's port (an NTP client on 123, a SIP proxy on
    5060) that the handler validated gets every reply."""
    virtual_network.add_host("192.0.2.1")
    virtual_network.add_host("192.0.2.9")

    async def validating(datagram):
        if datagram.data == b"token":
            datagram.validate_peer()
        await datagram.reply(datagram.data)

    guard = trioudp.LoopGuard(burst=2, rate=1)
    with virtual_network.on_host("192.0.2.1"):
        plain = await start(nursery, loop_guard=guard)
        trusting = await helpers.start(
            nursery, validating, port=54, host="0.0.0.0", loop_guard=guard
        )
    async with trioudp.open_udp_socket("192.0.2.9", 123) as peer:
        for server, first in ((plain, b"x"), (trusting, b"token")):
            await peer.send_to(first, ("192.0.2.1", server.port))
            for _ in range(4):
                await peer.send_to(b"x", ("192.0.2.1", server.port))
        await trio.sleep(0.1)
    assert (plain.stats.replied, plain.stats.dropped_loop) == (2, 3)
    assert (trusting.stats.replied, trusting.stats.dropped_loop) == (5, 0)
