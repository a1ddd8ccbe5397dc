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
