"""Flapping links: down and up at seeded rates, on a schedule that the
traffic does not change, traced as it happens, stopped by heal."""

import itertools

import pytest
import trio

from trioudp.testing import VirtualNetwork

from .conftest import pair


def changes(net):
    return [(e.kind, e.time) for e in net.trace if e.kind in ("link_down", "link_up")]


async def flapping_run(seed, *, traffic, seconds=50.0):
    """A link that fails once a second on average and repairs in a quarter
    of one; with ``traffic``, a datagram every 10 ms across it."""
    net = VirtualNetwork(seed)
    with net.install():
        net.add_host("10.0.0.1", name="one")
        net.add_host("10.0.0.2", name="two")
        a, b = await pair(a_host="10.0.0.1", b_host="10.0.0.2")
        net.flap("10.0.0.1", "10.0.0.2", fail_rate=1.0, repair_rate=4.0)
        for _ in range(round(seconds * 100)):
            if traffic:
                await a.sendto(b"x", b.getsockname())
                while b.is_readable():
                    await b.recv(10)
            await trio.sleep(0.01)
    return net


async def test_a_flapping_link_is_down_for_the_share_its_rates_give(autojump_clock):
    net = await flapping_run(1, traffic=True, seconds=100)
    stats = net.stats
    share = stats.dropped["link_down"] / stats.sent
    assert 0.15 < share < 0.25  # mean down 0.25 s of every 1.25 s: 20%
    assert stats.delivered + stats.dropped["link_down"] == stats.sent
    kinds = [kind for kind, _ in changes(net)]
    assert len(kinds) > 50
    assert kinds[:2] == ["link_down", "link_up"]
    assert all(first != second for first, second in itertools.pairwise(kinds))


async def test_drops_happen_exactly_while_the_trace_says_the_link_is_down(
    autojump_clock,
):
    net = await flapping_run(2, traffic=True, seconds=20)
    spans = changes(net)
    downs = [
        (time, spans[i + 1][1])
        for i, (kind, time) in enumerate(spans[:-1])
        if kind == "link_down"
    ]
    trace = net.trace
    fates = {e.packet: e.reason for e in trace if e.kind in ("drop", "deliver")}
    sends = [e for e in trace if e.kind == "send"]
    assert len(sends) == 2000
    for send in sends:
        down = any(start <= send.time < end for start, end in downs)
        assert (fates[send.packet] == "link_down") == down, send


async def test_the_schedule_depends_on_the_seed_not_on_the_traffic(autojump_clock):
    quiet = changes(await flapping_run(3, traffic=False, seconds=20))
    busy = changes(await flapping_run(3, traffic=True, seconds=20))
    other = changes(await flapping_run(4, traffic=False, seconds=20))
    # The same up to float rounding (each run starts at another clock time).
    assert [kind for kind, _ in quiet] == [kind for kind, _ in busy]
    assert [t for _, t in quiet] == pytest.approx([t for _, t in busy], abs=1e-9)
    assert [t for _, t in quiet][:5] != pytest.approx([t for _, t in other][:5])
    assert [t for _, t in quiet] == sorted(t for _, t in quiet)  # in time order


async def test_a_datagram_sent_at_the_instant_of_a_change_sees_it(autojump_clock):
    first_down = changes(await flapping_run(5, traffic=False, seconds=5))[0][1]
    net = VirtualNetwork(5)
    with net.install():
        net.add_host("10.0.0.1")
        net.add_host("10.0.0.2")
        a, b = await pair(a_host="10.0.0.1", b_host="10.0.0.2")
        start = trio.current_time()
        net.flap("10.0.0.1", "10.0.0.2", fail_rate=1.0, repair_rate=4.0)
        await trio.sleep_until(start + first_down)
        await a.sendto(b"at the change", b.getsockname())
        assert net.stats.dropped == {"link_down": 1}


async def test_heal_stops_the_flapping_and_leaves_the_link_up(autojump_clock):
    net = VirtualNetwork(6)
    with net.install():
        net.add_host("10.0.0.1", name="one")
        net.add_host("10.0.0.2", name="two")
        a, b = await pair(a_host="10.0.0.1", b_host="10.0.0.2")
        net.flap("10.0.0.1", "10.0.0.2", fail_rate=100.0, repair_rate=0.0)
        await trio.sleep(1)  # down for good, by now
        await a.sendto(b"lost", b.getsockname())
        net.heal("10.0.0.2", "10.0.0.1")
        await a.sendto(b"through", b.getsockname())
        assert await b.recv(10) == b"through"
        await trio.sleep(100)
    assert [(e.kind, e.reason) for e in net.trace if not e.packet] == [
        ("link_down", "one <> two"),
        ("link_up", "one <> two"),
        ("heal", "two <> one"),
    ]
    assert net.stats.dropped == {"link_down": 1}


async def test_a_quiet_network_stops_waking_once_flapping_ends(autojump_clock):
    net = VirtualNetwork(7)
    with net.install():
        net.add_host("10.0.0.1")
        net.add_host("10.0.0.2")
        net.flap("10.0.0.1", "10.0.0.2", fail_rate=1.0, repair_rate=1.0)
        await trio.sleep(10)
        net.heal()
        count = len(net.trace)
        await trio.sleep(1000)
        assert len(net.trace) == count


@pytest.mark.parametrize("rates", [(-1, 1), (1, float("nan")), (True, 1), ("1", 1)])
async def test_rates_must_be_numbers_of_events_per_second(virtual_network, rates):
    virtual_network.add_host("10.0.0.1")
    with pytest.raises(ValueError, match="events per second"):
        virtual_network.flap(
            "10.0.0.1", "127.0.0.1", fail_rate=rates[0], repair_rate=rates[1]
        )


async def test_flapping_resumes_at_the_next_install(autojump_clock):
    net = VirtualNetwork(8)
    net.add_host("10.0.0.1")
    with net.install():
        net.flap("10.0.0.1", "127.0.0.1", fail_rate=1.0, repair_rate=1.0)
        await trio.sleep(5)
    before = len(changes(net))
    await trio.sleep(5)
    assert len(changes(net)) == before  # not installed: nothing runs
    with net.install():
        await trio.sleep(5)
    assert len(changes(net)) > before
