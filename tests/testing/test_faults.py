"""Faults between hosts: partitions, holds released at a chosen moment, and
per-link policies."""

import pytest
import trio

from trioudp.testing import VirtualNetwork

from .conftest import pair


async def test_partition_and_heal(virtual_network):
    virtual_network.add_host("10.0.0.1")
    virtual_network.add_host("10.0.0.2")
    a, b = await pair(a_host="10.0.0.1", b_host="10.0.0.2")
    virtual_network.partition("10.0.0.1", "10.0.0.2")
    await a.sendto(b"lost", b.getsockname())
    virtual_network.heal()
    await a.sendto(b"found", b.getsockname())
    assert await b.recv(10) == b"found"
    assert virtual_network.stats.dropped == {"partition": 1}


async def test_hold_and_release_at_a_chosen_moment(autojump_clock):
    net = VirtualNetwork(latency=0.1)
    with net.install():
        a, b = await pair()
        net.hold()
        await a.sendto(b"held", b.getsockname())
        await trio.sleep(5)
        assert not b.is_readable()
        assert net.held == 1
        net.release()
        released_at = trio.current_time()
        assert await b.recv(10) == b"held"
        assert trio.current_time() - released_at == pytest.approx(0.1)
    assert [e.kind for e in net.trace] == ["send", "hold", "release", "deliver"]


async def test_per_link_policy_overrides_the_default(autojump_clock):
    net = VirtualNetwork(latency=0.01)
    with net.install():
        net.add_host("10.0.0.1")
        net.add_host("10.0.0.2")
        net.set_link("10.0.0.1", "10.0.0.2", latency=0.5)
        assert net.link("10.0.0.2", "10.0.0.1").latency == 0.5
        a, b = await pair(a_host="10.0.0.1", b_host="10.0.0.2")
        start = trio.current_time()
        await a.sendto(b"slow", b.getsockname())
        await b.recv(10)
        assert trio.current_time() - start == 0.5


async def test_a_one_way_partition_blocks_one_direction(virtual_network):
    net = virtual_network
    net.add_host("10.0.0.1", name="one")
    net.add_host("10.0.0.2", name="two")
    a, b = await pair(a_host="10.0.0.1", b_host="10.0.0.2")
    assert net.stats.dropped["partition"] == 0
    net.partition("10.0.0.1", "10.0.0.2", one_way=True)
    await a.sendto(b"a to b", b.getsockname())
    await b.sendto(b"b to a", a.getsockname())
    assert await a.recv(10) == b"b to a"
    assert not b.is_readable()
    assert net.stats.dropped["partition"] == 1
    net.heal("10.0.0.2", "10.0.0.1", one_way=True)  # the other direction
    await a.sendto(b"still cut", b.getsockname())
    net.heal("10.0.0.1", "10.0.0.2", one_way=True)
    await a.sendto(b"healed", b.getsockname())
    assert await b.recv(10) == b"healed"
    assert net.stats.dropped == {"partition": 2}
    notes = [str(e).split(" ", 1)[1].strip() for e in net.trace if not e.packet]
    assert notes == [
        "partition one > two",
        "heal      two > one",
        "heal      one > two",
    ]


async def test_partition_both_ways_and_heal_everything(virtual_network):
    net = virtual_network
    net.add_host("10.0.0.1", name="one")
    net.add_host("10.0.0.2", name="two")
    a, b = await pair(a_host="10.0.0.1", b_host="10.0.0.2")
    net.partition("10.0.0.1", "10.0.0.2")
    await a.sendto(b"x", b.getsockname())
    await b.sendto(b"y", a.getsockname())
    net.heal()
    await b.sendto(b"z", a.getsockname())
    assert await a.recv(10) == b"z"
    assert net.stats.dropped == {"partition": 2}
    assert [(e.kind, e.reason) for e in net.trace if not e.packet] == [
        ("partition", "one <> two"),
        ("heal", "all"),
    ]


async def test_a_drop_reason_reads_zero_until_it_happens_and_typos_raise(
    virtual_network,
):
    stats = virtual_network.stats
    for reason in ("partition", "host_down", "link_down", "queue", "rule", "loss"):
        assert stats.dropped[reason] == 0
    assert stats.dropped == {}
    with pytest.raises(KeyError, match="'partiton' is not a reason"):
        stats.dropped["partiton"]


async def test_held_datagrams_meet_the_faults_of_the_moment_they_are_released(
    autojump_clock,
):
    net = VirtualNetwork()
    with net.install():
        net.add_host("10.0.0.1")
        net.add_host("10.0.0.2")
        a, b = await pair(a_host="10.0.0.1", b_host="10.0.0.2")
        net.hold()
        await a.sendto(b"held", b.getsockname())
        net.partition("10.0.0.1", "10.0.0.2", one_way=True)
        net.release()
        await trio.sleep(1)
        assert not b.is_readable()
    assert net.stats.dropped == {"partition": 1}
