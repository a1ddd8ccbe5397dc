"""examples/statsd_server.py: its aggregation with hostile input, and the
server fed by the PyPI ``statsd`` client; flushed values exact."""

import collections
import doctest
import json
import socket
import types

import pytest
import statsd
from hypothesis import given
from hypothesis import strategies as st

from .realprocs import example, example_module, running

metrics = example_module("_statsd")


def test_doctests():
    assert doctest.testmod(metrics).failed == 0


def test_every_kind_aggregates():
    aggregator = metrics.Aggregator()
    lines = [
        "hits:1|c",
        "hits:2|c|@0.5",
        "hits:-1|c|#env:test",
        "load:10|g",
        "load:+5|g",
        "load:-3|g",
        "temp:-4|g",  # absolute only after a reset to 0, as clients send it
        "db:3|ms",
        "db:1|ms",
        "db:2|h",
        "users:alice|s",
        "users:bob|s",
        "users:alice|s",
    ]
    assert aggregator.add_untrusted("\n".join(lines).encode()) == 0
    assert aggregator.flush() == {
        "counters": {"hits": 4},
        "gauges": {"load": 12, "temp": -4},
        "timers": {
            "db": {
                "count": 3,
                "min": 1,
                "max": 3,
                "mean": 2,
                "p50": 2,
                "p90": 3,
                "p99": 3,
            }
        },
        "sets": {"users": 2},
        "malformed": 0,
        "dropped": 0,
    }
    # Gauges stay; the rest starts again.
    assert aggregator.flush()["gauges"] == {"load": 12, "temp": -4}
    assert aggregator.flush()["counters"] == {}


@pytest.mark.parametrize(
    "line",
    [
        "nocolon",
        ":1|c",
        "a:|c",
        "a:1",
        "a:1|x",
        "a:one|c",
        "a:nan|g",
        "a:inf|ms",
        "a:1_000|c",
        "a:1|c|@0",
        "a:1|c|@1.5",
        "a:1|c|@x",
        "a:1|c|junk",
        "a b:1|c",
    ],
)
def test_malformed_lines_are_counted_and_skipped(line):
    aggregator = metrics.Aggregator()
    assert aggregator.add_untrusted(f"ok:1|c\n{line}\nok:1|c".encode()) == 1
    report = aggregator.flush()
    assert report["counters"] == {"ok": 2}
    assert report["malformed"] == 1


def test_memory_is_bounded_under_a_flood_of_names():
    aggregator = metrics.Aggregator(max_metrics=3, max_set_members=2)
    aggregator.add_untrusted(b"\n".join(b"n%d:1|c" % i for i in range(10)))
    aggregator.add_untrusted(b"s:a|s\ns:b|s\ns:c|s\ns:a|s")
    report = aggregator.flush()
    assert len(report["counters"]) == 3
    assert report["sets"] == {"s": 2}
    assert report["dropped"] == 7 + 1


@given(st.binary(max_size=400))
def test_any_bytes_are_counted_never_raised(data):
    aggregator = metrics.Aggregator()
    aggregator.add_untrusted(data)
    json.dumps(aggregator.flush())


async def test_statsd_client_workload_is_flushed_exactly(monkeypatch):
    # The client samples with random.random(); these values send the 1st
    # and 3rd of four sampled increments (a value above the rate skips one).
    samples = iter([0.1, 0.9, 0.2, 0.95])
    monkeypatch.setattr(
        "statsd.client.base.random", types.SimpleNamespace(random=lambda: next(samples))
    )
    server_command = example(
        "statsd_server.py", "--port", "0", "--flush-interval", "0.2"
    )
    async with running(server_command) as server:
        port = await server.port_from_banner()
        client = statsd.StatsClient("127.0.0.1", port)
        client.incr("hits")
        client.incr("hits", 5)
        client.decr("hits", 2)
        for _ in range(4):
            client.incr("sampled", 1, rate=0.25)
        client.gauge("load", 10)
        client.gauge("load", 5, delta=True)
        client.gauge("load", -3, delta=True)
        client.gauge("temp", -5)
        with client.pipeline() as pipe:  # one datagram: one flush holds them all
            for value in range(20, 0, -1):
                pipe.timing("db", value)
        with client.pipeline() as pipe:
            for user in ("alice", "bob", "carol", "alice"):
                pipe.set("users", user)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hostile:
            hostile.sendto(b"bad line\n\xff\xfe:1|c\nhits:x|c", ("127.0.0.1", port))
        client.incr("done")  # sent last: once flushed, everything before was
        client.close()

        flushes = []
        while "done" not in (flushes[-1]["counters"] if flushes else {}):
            flushes.append(json.loads(await server.stdout.line()))
        code, out, err = await server.stop()
    assert code == 0, err
    flushes += [json.loads(line) for line in out.splitlines()]

    counters = collections.Counter()
    for flush in flushes:
        counters.update(flush["counters"])
    assert counters == {"hits": 4, "sampled": 8, "done": 1}
    assert flushes[-1]["gauges"] == {"load": 12, "temp": -5}
    assert [f["timers"] for f in flushes if f["timers"]] == [
        {
            "db": {
                "count": 20,
                "min": 1,
                "max": 20,
                "mean": 10.5,
                "p50": 10,
                "p90": 18,
                "p99": 20,
            }
        }
    ]
    assert [f["sets"] for f in flushes if f["sets"]] == [{"users": 3}]
    assert sum(flush["malformed"] for flush in flushes) == 3
