"""Same seed, same program: a byte-identical trace, even with many tasks.

The scenario runs in fresh interpreters under different ``PYTHONHASHSEED``
values, so nothing process-local (task ids, hash order, memory addresses,
Trio's unseeded scheduler) can leak into the result.
"""

import contextlib
import functools
import hashlib
import os
import random
import socket
import sys

import pytest
import trio
import trio.testing

import trioudp
from trioudp._trio_private import BatchShuffler
from trioudp.testing import VirtualNetwork

from ..conftest import run_python


async def six_tasks_on_a_bad_network(seed: int) -> str:
    """Three raw trio.socket clients and three open_udp_clients against one
    trioudp echo server, on a lossy, duplicating, reordering link."""
    net = VirtualNetwork(
        seed, latency=0.01, jitter=0.005, loss=0.2, duplicate=0.1, reorder=0.2
    )

    async def echo(datagram):
        await datagram.reply(datagram.data)

    async def raw_client(i, port):
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sock.bind(("127.0.0.1", 0))
        for k in range(5):
            await sock.sendto(b"raw%d-%d" % (i, k), ("127.0.0.1", port))
            with trio.move_on_after(0.05):
                await sock.recvfrom(100)
        sock.close()

    async def trioudp_client(i, port):
        async with trioudp.open_udp_client(
            "127.0.0.1", port, attempts=6, backoff=trioudp.Backoff(initial=0.03)
        ) as client:
            for k in range(5):
                with contextlib.suppress(trioudp.RequestTimeout):
                    await client.request(b"cli%d-%d" % (i, k))

    with net.install():
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(trioudp.serve_udp, echo, 0, host="127.0.0.1")
            )
            async with trio.open_nursery() as clients:
                for i in range(3):
                    clients.start_soon(raw_client, i, server.port)
                    clients.start_soon(trioudp_client, i, server.port)
            nursery.cancel_scope.cancel()
    return net.trace_text()


def main(seed: int) -> None:
    """Entry point of the fresh interpreters: print the trace."""
    clock = trio.testing.MockClock(autojump_threshold=0)
    sys.stdout.write(trio.run(six_tasks_on_a_bad_network, seed, clock=clock))


def trace_in_fresh_process(seed: int, hash_seed: int) -> str:
    return run_python(
        "-c",
        f"from tests.testing.test_determinism import main; main({seed})",
        env={**os.environ, "PYTHONHASHSEED": str(hash_seed)},
    )


def test_many_tasks_same_seed_same_trace_in_fresh_processes():
    traces = [trace_in_fresh_process(5, hash_seed) for hash_seed in (1, 2, 3)]
    assert traces[0].count("\n") > 100
    # Every kind of fate happened, so each could have landed elsewhere.
    for word in ("drop", "duplicate", "deliver", " loss"):
        assert word in traces[0]
    digests = {hashlib.sha256(trace.encode()).hexdigest() for trace in traces}
    assert len(digests) == 1, "same seed, different traces"
    assert trace_in_fresh_process(6, 1) != traces[0]


async def test_client_jitter_comes_from_the_network_seed(autojump_clock):
    # Every datagram is lost: the request's give-up time is the sum of its
    # jittered timeouts, so it shows which generator the client drew from.
    async def give_up_time(seed):
        with VirtualNetwork(seed, loss=1.0).install():
            async with trioudp.open_udp_client("127.0.0.1", 9, attempts=4) as client:
                start = trio.current_time()
                try:
                    await client.request(b"?")
                except trioudp.RequestTimeout:
                    return trio.current_time() - start
        raise AssertionError("a request on a dead network succeeded")

    first, again, other = [await give_up_time(seed) for seed in (1, 1, 2)]
    assert first == again
    assert first != other
    assert 15 * 0.9 <= first <= 15 * 1.1  # 1 + 2 + 4 + 8 s, +-10%


async def test_uninstalling_restores_trios_scheduler():
    from trio._core import _run

    before = (_run._ALLOW_DETERMINISTIC_SCHEDULING, _run._r)
    with VirtualNetwork(3).install():
        assert _run._ALLOW_DETERMINISTIC_SCHEDULING is True
        assert _run._r is not before[1]
    assert (_run._ALLOW_DETERMINISTIC_SCHEDULING, _run._r) == before


async def run_lossy_exchange(seed):
    net = VirtualNetwork(
        seed=seed, latency=0.01, jitter=0.01, loss=0.2, duplicate=0.1, reorder=0.1
    )
    with net.install():
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(trioudp.serve_udp, echo, 5000, host="127.0.0.1")
            )
            import random

            async with trioudp.open_udp_client(
                "127.0.0.1",
                5000,
                attempts=10,
                backoff=trioudp.Backoff(initial=0.05),
                rng=random.Random(seed),
                match=lambda data: data[:2],
            ) as client:
                for i in range(30):
                    await client.request(b"%02d" % i)
            await server.shutdown()
    return net


async def echo(datagram):
    await datagram.reply(datagram.data)


async def test_same_seed_gives_a_byte_identical_trace(autojump_clock):
    first = (await run_lossy_exchange(5)).trace_text()
    second = (await run_lossy_exchange(5)).trace_text()
    assert first == second
    assert "drop" in first
    assert "duplicate" in first


async def test_different_seeds_give_different_loss_patterns(autojump_clock):
    def losses(net):
        return [e.packet for e in net.trace if e.reason == "loss"]

    assert losses(await run_lossy_exchange(1)) != losses(await run_lossy_exchange(2))


def test_the_batch_shuffler_is_seeded_and_uniform():
    def orders(seed):
        rng = BatchShuffler(seed)
        out = []
        for _ in range(200):
            batch = [1, 2]
            rng.shuffle(batch)
            out.append(tuple(batch))
        return out

    first = orders(1)
    assert orders(1) == first
    assert 60 < first.count((2, 1)) < 140
    three = [1, 2, 3]
    BatchShuffler(1).shuffle(three)
    assert sorted(three) == [1, 2, 3]
    single = [1]
    BatchShuffler(1).shuffle(single)
    assert single == [1]
    # Longer batches shuffle as random.Random does.
    long_batch, expected = list(range(10)), list(range(10))
    BatchShuffler(5).shuffle(long_batch)
    random.Random(5).shuffle(expected)
    assert long_batch == expected


# ---- one instant: a datagram due at a deadline --------------------------------


async def echoes_against_deadlines(perturb: int, retransmit: bool = False):
    """30 echoes, each waited for under ``move_on_after(0.02)`` through a
    link of latency 0.01: a reply takes two latencies, which float addition
    often makes exactly the deadline. ``perturb`` makes unrelated cancel
    scopes (and garbage) between sends, moving later scopes in memory: Trio
    breaks ties between deadlines by their ``id()``. Returns (timeouts,
    replies received at the very instant of their deadline, trace)."""
    kept = []
    net = VirtualNetwork(seed=3, latency=0.01)
    with net.install():
        server = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await server.bind(("127.0.0.1", 7))
        client = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await client.bind(("127.0.0.1", 0))

        async def echo():
            while True:
                data, peer = await server.recvfrom(100)
                await server.sendto(data, peer)

        async def exchange(request):
            with trio.move_on_after(0.02) as scope:
                await client.sendto(request, ("127.0.0.1", 7))
                while await client.recv(100) != request:
                    pass
                return trio.current_time() == scope.deadline
            return None

        timeouts = ties = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            for i in range(30):
                kept.extend(trio.CancelScope() for _ in range(perturb * (i % 4 + 1)))
                kept.append(bytearray(perturb * 37 * i))
                outcome = await exchange(b"%d" % i)
                if outcome is None:
                    timeouts += 1
                    if retransmit:
                        outcome = await exchange(b"%d" % i)
                ties += bool(outcome)
            nursery.cancel_scope.cancel()
    return timeouts, ties, net.trace_text()


def run_ties(perturb: int, retransmit: bool = False):
    # A fresh run each: the clock starts at 0, so float sums round alike.
    clock = trio.testing.MockClock(autojump_threshold=0)
    return trio.run(echoes_against_deadlines, perturb, retransmit, clock=clock)


def test_a_datagram_due_at_a_deadline_arrives_first_whatever_the_heap(alarm_kind):
    # The rule (docs/explanation/determinism.rst): a datagram due at T is
    # delivered before any deadline at T expires. Without it, the timeout
    # count moved with memory addresses (19 of 30, then 9, 16, 14, ...).
    first = run_ties(0)
    timeouts, ties, _ = first
    assert ties > 5, "the scenario must make exact ties to test them"
    assert 0 < timeouts < 30 - ties  # ties never time out; later replies do
    for perturb in range(1, 6):
        assert run_ties(perturb) == first
    retransmitting = run_ties(0, retransmit=True)
    for perturb in (2, 5):
        assert run_ties(perturb, retransmit=True) == retransmitting


def ties_main(perturb: int, kind: str) -> None:
    """Entry point of the fresh interpreters: the program's output."""
    if kind == "public_fallback":
        from .conftest import force_public_alarm

        force_public_alarm()
    timeouts, ties, trace = run_ties(perturb, retransmit=True)
    digest = hashlib.sha256(trace.encode()).hexdigest()
    sys.stdout.write(f"{timeouts} timeouts, {ties} at the deadline, trace {digest}\n")


@pytest.mark.parametrize("kind", ["trio_private", "public_fallback"])
def test_ties_resolve_alike_in_fresh_processes(kind):
    outputs = {
        run_python(
            "-c",
            f"from tests.testing.test_determinism import ties_main;"
            f" ties_main({perturb}, {kind!r})",
            env={**os.environ, "PYTHONHASHSEED": str(hash_seed)},
        )
        for hash_seed, perturb in ((1, 0), (2, 3), (3, 7))
    }
    assert len(outputs) == 1, outputs


async def four_nodes_under_every_fault(seed: int) -> str:
    """Four nodes that send heartbeats to each other for 20 virtual seconds
    under every fault the network has: a long-tailed, bandwidth-limited
    link with a small queue, a flapping link, rules that drop, delay,
    duplicate and corrupt, a crash and a restart, a one-way partition.
    Returns what the program saw, the trace's digest and the capture's."""
    import hashlib
    import io

    from trioudp.testing import Verdict, write_pcap

    net = VirtualNetwork(
        seed, latency=0.005, tail=0.01, tail_shape=1.5, bandwidth=2_000, queue=0
    )
    heard: dict[int, dict[str, int]] = {}

    async def node(number):
        heard[number] = counts = {}
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sock.bind(("0.0.0.0", 7000))

        async def listen():
            while True:
                data, _ = await sock.recvfrom(100)
                sender = data.split(b" ")[0].decode("ascii", "replace")
                counts[sender] = counts.get(sender, 0) + 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            for beat in range(1000):
                for peer in range(1, 5):
                    if peer != number:
                        message = b"n%d beat %d" % (number, beat)
                        await sock.sendto(message, (f"10.0.0.{peer}", 7000))
                await trio.sleep(0.1)

    def rule(packet):
        if packet.payload == b"n1 beat 7":
            return Verdict(drop=True)
        if packet.payload.startswith(b"n2") and packet.receiver.name == "node3":
            return Verdict(delay=0.3)
        if packet.payload.endswith(b"0"):
            return Verdict(copies=2)
        if packet.payload.startswith(b"n4 beat 3"):
            return Verdict(flip=2)
        return None

    with net.install():
        hosts = [net.add_host(f"10.0.0.{n}", name=f"node{n}") for n in range(1, 5)]
        net.add_rule(rule)
        net.flap(hosts[0], hosts[1], fail_rate=0.5, repair_rate=2.0)
        async with trio.open_nursery() as nursery:
            for number, host in enumerate(hosts, 1):
                with net.on_host(host):
                    nursery.start_soon(node, number)
            await trio.sleep(5)
            net.crash(hosts[2])
            await trio.sleep(3)
            net.restart(hosts[2])
            with net.on_host(hosts[2]):
                nursery.start_soon(node, 3)
            await trio.sleep(2)
            net.partition(hosts[3], hosts[0], one_way=True)
            await trio.sleep(5)
            net.heal()
            await trio.sleep(5)
            nursery.cancel_scope.cancel()
    capture = io.BytesIO()
    write_pcap(capture, net.trace)
    trace = net.trace_text()
    return "\n".join(
        [
            f"heard: {sorted((n, sorted(c.items())) for n, c in heard.items())}",
            f"stats: {net.stats}",
            f"trace: {hashlib.sha256(trace.encode()).hexdigest()}",
            f"capture: {hashlib.sha256(capture.getvalue()).hexdigest()}",
            f"kinds: {sorted({line.split()[1] for line in trace.splitlines()})}",
        ]
    )


def every_fault_main(seed: int) -> None:
    """Entry point of the fresh interpreters: print what the run gave."""
    clock = trio.testing.MockClock(autojump_threshold=0)
    sys.stdout.write(trio.run(four_nodes_under_every_fault, seed, clock=clock))


def every_fault_in_fresh_process(seed: int, hash_seed: int) -> str:
    return run_python(
        "-c",
        f"from tests.testing.test_determinism import every_fault_main;"
        f" every_fault_main({seed})",
        env={**os.environ, "PYTHONHASHSEED": str(hash_seed)},
    )


def test_every_fault_same_seed_same_run_in_fresh_processes():
    runs = [every_fault_in_fresh_process(7, hash_seed) for hash_seed in (1, 2, 3)]
    assert runs[0] == runs[1] == runs[2]
    kinds = runs[0].rsplit("kinds: ", 1)[1]
    for kind in (
        "crash",
        "restart",
        "partition",
        "heal",
        "link_down",
        "link_up",
        "corrupt",
        "delay",
        "duplicate",
    ):
        assert f"'{kind}'" in kinds
    stats = runs[0].split("stats: ", 1)[1].split("\n", 1)[0]
    for reason in ("host_down", "link_down", "partition", "queue", "rule"):
        assert f"'{reason}'" in stats
    assert every_fault_in_fresh_process(8, 1) != runs[0]
