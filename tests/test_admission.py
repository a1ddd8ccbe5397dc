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
