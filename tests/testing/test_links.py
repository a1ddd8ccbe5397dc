"""Link behaviour: latency, jitter, loss, duplication, reordering and MTU, exact
on the mock clock, and the pure fate planner behind them."""

import errno
import socket

import pytest
import trio

from trioudp.testing import LinkPolicy, VirtualNetwork, plan_fate

from .conftest import drain, pair

IP_MTU_DISCOVER, IP_PMTUDISC_DO = 10, 2


async def test_latency_is_exact_on_the_mock_clock(autojump_clock):
    net = VirtualNetwork(latency=0.25)
    with net.install():
        a, b = await pair()
        start = trio.current_time()
        await a.sendto(b"x", b.getsockname())
        await b.recv(10)
        assert trio.current_time() - start == 0.25
        [send, deliver] = [e for e in net.trace if e.kind in ("send", "deliver")]
        assert deliver.time - send.time == 0.25


async def test_seconds_of_virtual_time_take_milliseconds(autojump_clock):
    import time

    net = VirtualNetwork(latency=1.0)
    wall = time.monotonic()
    with net.install():
        a, b = await pair()
        for _ in range(50):
            await a.sendto(b"x", b.getsockname())
            await b.recv(10)
            await b.sendto(b"y", a.getsockname())
            await a.recv(10)
    assert trio.current_time() == 100.0
    assert time.monotonic() - wall < 2


async def test_jitter_stays_within_bounds(autojump_clock):
    net = VirtualNetwork(seed=3, latency=0.1, jitter=0.05)
    with net.install():
        a, b = await pair()
        for _ in range(200):
            await a.sendto(b"x", b.getsockname())
        await drain(b, 200)
    sends = {e.packet: e.time for e in net.trace if e.kind == "send"}
    delays = [e.time - sends[e.packet] for e in net.trace if e.kind == "deliver"]
    assert all(0.1 <= d <= 0.15 for d in delays)
    assert max(delays) - min(delays) > 0.04


async def test_loss_rate_follows_the_setting():
    net = VirtualNetwork(seed=11, loss=0.25)
    with net.install():
        a, b = await pair()
        for _ in range(2000):
            await a.sendto(b"x", b.getsockname())
            while b.is_readable():
                await b.recv(10)
    lost = net.stats.dropped["loss"]
    assert 400 < lost < 600
    assert net.stats.delivered + lost == 2000


async def test_duplication_delivers_twice():
    net = VirtualNetwork(duplicate=1.0)
    with net.install():
        a, b = await pair()
        await a.sendto(b"twice", b.getsockname())
        assert await drain(b, 2) == [b"twice", b"twice"]
    assert net.stats.duplicated == 1


async def test_reordering_lets_later_datagrams_overtake(autojump_clock):
    net = VirtualNetwork(seed=2, latency=0.01, reorder=0.5)
    with net.install():
        a, b = await pair()
        for i in range(20):
            await a.sendto(b"%02d" % i, b.getsockname())
        received = await drain(b, 20)
    assert sorted(received) == [b"%02d" % i for i in range(20)]
    assert received != sorted(received)


async def test_above_the_mtu_datagrams_cross_in_fragments():
    net = VirtualNetwork(mtu=1500)
    with net.install():
        a, b = await pair()
        await a.sendto(b"x" * 3000, b.getsockname())  # three fragments
        await a.sendto(b"x" * 1472, b.getsockname())
        assert [len(await b.recv(5000)) for _ in range(2)] == [3000, 1472]
    assert net.stats.dropped == {}


async def test_each_fragment_is_lost_on_its_own():
    # 2000 bytes over a 576-byte MTU: 4 fragments, each lost at 20%, so the
    # datagram is lost at 1 - 0.8**4 (59%); one that fits, at 20%.
    net = VirtualNetwork(seed=4, mtu=576, loss=0.2)
    with net.install():
        a, b = await pair()
        got = []
        for size in [2000] * 300 + [500] * 300:
            await a.sendto(b"x" * size, b.getsockname())
            if b.is_readable():
                got.append(len(await b.recv(3000)))
    big, small = got.count(2000), got.count(500)
    assert 0.35 * 300 < big < 0.48 * 300
    assert 0.74 * 300 < small < 0.86 * 300
    assert net.stats.dropped == {"loss": 600 - big - small}


async def test_dont_fragment_raises_emsgsize_above_the_link_mtu():
    net = VirtualNetwork(mtu=1500)
    with net.install():
        a, b = await pair()
        a.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        with pytest.raises(OSError) as info:
            await a.sendto(b"x" * 1473, b.getsockname())
        assert info.value.errno == errno.EMSGSIZE
        await a.sendto(b"x" * 1472, b.getsockname())
        assert len(await b.recv(2000)) == 1472
    assert net.stats.sent == 1


def test_plan_fate_is_pure_and_ordered():
    import random

    policy = LinkPolicy(latency=0.1, jitter=0.1, loss=0.5, duplicate=0.5, reorder=0.5)
    first = [plan_fate(policy, 100, random.Random(9)) for _ in range(3)]
    assert first == [plan_fate(policy, 100, random.Random(9)) for _ in range(3)]
