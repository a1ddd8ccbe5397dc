"""Link behaviour: latency, jitter, loss, duplication, reordering and MTU, exact
on the mock clock, and the pure fate planner behind them."""

import errno
import socket

import pytest
import trio

from trioudp.testing import LinkPolicy, VirtualNetwork, plan_fate
from trioudp.testing._links import LinkQueue

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


async def delays_under(seed, count=2000, **settings):
    net = VirtualNetwork(seed, latency=0.01, **settings)
    with net.install():
        a, b = await pair()
        for _ in range(count):
            await a.sendto(b"x", b.getsockname())
        await drain(b, count)
    sends = {e.packet: e.time for e in net.trace if e.kind == "send"}
    return sorted(e.time - sends[e.packet] for e in net.trace if e.kind == "deliver")


async def test_an_exponential_tail_adds_its_mean_on_top_of_the_base(autojump_clock):
    delays = await delays_under(1, tail=0.02)
    extra = [d - 0.01 for d in delays]
    assert min(extra) >= 0
    assert 0.018 < sum(extra) / len(extra) < 0.022
    median = extra[len(extra) // 2]
    assert 0.012 < median < 0.016  # ln 2 of the mean: 0.0139


async def test_a_pareto_tail_is_heavier_than_an_exponential_one(autojump_clock):
    exponential = await delays_under(2, tail=0.02)
    pareto = await delays_under(2, tail=0.02, tail_shape=1.5)
    assert min(pareto) >= 0.01
    # Same mean, but most datagrams are quicker and the rare ones far slower.
    assert pareto[len(pareto) // 2] < exponential[len(exponential) // 2]
    assert pareto[-1] > 3 * exponential[-1]


def test_tail_settings_are_checked():
    with pytest.raises(ValueError, match="tail must be"):
        LinkPolicy(tail=-1)
    with pytest.raises(ValueError, match="tail_shape must be a Pareto shape > 1"):
        LinkPolicy(tail=0.1, tail_shape=1.0)
    with pytest.raises(ValueError, match="bandwidth must be a number > 0"):
        LinkPolicy(bandwidth=0)
    with pytest.raises(ValueError, match="queue must be an int >= 0"):
        LinkPolicy(queue=-1)


async def test_bandwidth_spaces_datagrams_and_a_full_queue_tail_drops(
    autojump_clock,
):
    # 1000-byte IP packets over 10,000 bytes/s: 0.1 s each; two may wait.
    net = VirtualNetwork(latency=0.05, bandwidth=10_000, queue=2)
    with net.install():
        a, b = await pair()
        start = trio.current_time()
        for i in range(5):
            await a.sendto(b"%d" % i + b"x" * 971, b.getsockname())
        arrivals = []
        for _ in range(3):
            data = await b.recv(2000)
            arrivals.append((data[:1], round(trio.current_time() - start, 9)))
        assert arrivals == [(b"0", 0.15), (b"1", 0.25), (b"2", 0.35)]
        assert net.stats.dropped == {"queue": 2}
        # Once the queue drains, the link takes datagrams again.
        await a.sendto(b"later", b.getsockname())
        assert await b.recv(10) == b"later"
    drops = [e.packet for e in net.trace if e.reason == "queue"]
    assert drops == [4, 5]


async def test_each_direction_of_a_link_has_its_own_queue(autojump_clock):
    net = VirtualNetwork(bandwidth=1000, queue=0)
    with net.install():
        net.add_host("10.0.0.1")
        net.add_host("10.0.0.2")
        a, b = await pair(a_host="10.0.0.1", b_host="10.0.0.2")
        await a.sendto(b"x" * 100, b.getsockname())
        await b.sendto(b"y" * 100, a.getsockname())  # the other direction
        await a.sendto(b"z", b.getsockname())  # waits behind x: dropped
        assert await a.recv(200) == b"y" * 100
        assert await b.recv(200) == b"x" * 100
    assert net.stats.dropped == {"queue": 1}


def test_link_queue_is_pure_and_exact():
    queue = LinkQueue()
    assert queue.admit(0.0, 500, bandwidth=1000, limit=None) == 0.5
    assert queue.admit(0.25, 500, bandwidth=1000, limit=None) == 0.75
    assert queue.admit(2.0, 500, bandwidth=1000, limit=0) == 0.5  # drained
