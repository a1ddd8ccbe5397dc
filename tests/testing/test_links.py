"""Link behaviour: latency, jitter, loss, duplication, reordering and MTU, exact
on the mock clock, and the pure fate planner behind them."""

import trio

from trioudp.testing import LinkPolicy, VirtualNetwork, plan_fate

from .conftest import drain, pair


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


async def test_mtu_drops_big_datagrams():
    net = VirtualNetwork(mtu=1500)
    with net.install():
        a, b = await pair()
        await a.sendto(b"x" * 1473, b.getsockname())
        await a.sendto(b"x" * 1472, b.getsockname())
        assert len(await b.recv(2000)) == 1472
    assert net.stats.dropped == {"mtu": 1}


def test_plan_fate_is_pure_and_ordered():
    import random

    policy = LinkPolicy(latency=0.1, jitter=0.1, loss=0.5, duplicate=0.5, reorder=0.5)
    first = [plan_fate(policy, 100, random.Random(9)) for _ in range(3)]
    assert first == [plan_fate(policy, 100, random.Random(9)) for _ in range(3)]
