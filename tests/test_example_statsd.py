"""examples/statsd_server.py: its aggregation with hostile input, and the
server fed by the PyPI ``statsd`` client; flushed values exact."""

import collections
import doctest
import json
import socket
import tracemalloc
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


def strict_json(text):
    """``text`` parsed as JSON proper: no Infinity, -Infinity or NaN."""

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def flushed(aggregator):
    return strict_json(json.dumps(aggregator.flush()))


def test_finite_values_that_overflow_are_dropped_not_flushed_as_infinity():
    aggregator = metrics.Aggregator()
    lines = [
        "sum:1e308|c",
        "sum:1e308|c",  # the sum would be out of range: dropped
        "sampled:1e10|c|@1e-300",  # 1e310 counted: out of range, malformed
        "level:1e308|g",
        "level:+1e308|g",  # dropped
        "low:-1e308|g",
        "low:-1e308|g",  # a delta (as "+1" is): dropped
        "big:1.7e308|ms",
        "big:1.7e308|ms",
        "big:-1.7e308|ms",
    ]
    assert aggregator.add_untrusted("\n".join(lines).encode()) == 1
    report = flushed(aggregator)
    assert report["counters"] == {"sum": 1e308}
    assert report["gauges"] == {"level": 1e308, "low": -1e308}
    assert report["timers"]["big"]["mean"] == pytest.approx(1.7e308 / 3)
    assert (report["malformed"], report["dropped"]) == (1, 3)
    # Gauges stay across flushes: the next one must be JSON too.
    aggregator.add_untrusted(b"level:+1e308|g\nlevel:-1e308|g")
    assert flushed(aggregator)["gauges"] == {"level": 0, "low": -1e308}


finite = st.floats(allow_nan=False, allow_infinity=False)
metric_lines = st.builds(
    "{}:{}{!r}|{}|@{!r}".format,
    st.sampled_from(["a", "b"]),
    st.sampled_from(["", "+", "-"]),
    finite,
    st.sampled_from(["c", "g", "ms", "h"]),
    st.floats(min_value=5e-324, max_value=1),
)


@given(st.lists(metric_lines, max_size=30), st.lists(metric_lines, max_size=30))
def test_any_finite_input_flushes_as_json(first, second):
    aggregator = metrics.Aggregator()
    aggregator.add_untrusted("\n".join(first).encode())
    flushed(aggregator)
    aggregator.add_untrusted("\n".join(second).encode())
    flushed(aggregator)


def test_timer_values_and_set_members_are_bounded_in_all():
    aggregator = metrics.Aggregator(max_timer_values=5, max_set_members=4)
    for name in ("t1", "t2"):
        aggregator.add_untrusted(
            b"\n".join(b"%s:%d|ms" % (name.encode(), i) for i in range(4))
        )
    aggregator.add_untrusted(b"\n".join(b"s%d:m%d|s" % (i % 3, i) for i in range(6)))
    aggregator.add_untrusted(b"s0:m0|s")  # a member already counted: kept
    report = aggregator.flush()
    assert [timer["count"] for timer in report["timers"].values()] == [4, 1]
    assert report["sets"] == {"s0": 2, "s1": 1, "s2": 1}
    assert report["dropped"] == 3 + 2
    # A new interval: room again.
    aggregator.add_untrusted(b"t3:1|ms\ns3:x|s")
    report = aggregator.flush()
    assert (report["timers"]["t3"]["count"], report["sets"]) == (1, {"s3": 1})
    assert report["dropped"] == 0


def test_set_members_longer_than_a_name_are_malformed():
    aggregator = metrics.Aggregator()
    assert aggregator.add_untrusted(b"s:%s|s\ns:%s|s" % (b"m" * 200, b"m" * 201)) == 1
    assert aggregator.flush()["sets"] == {"s": 1}


def test_memory_is_bounded_under_a_flood_of_long_names_members_and_timings():
    limits = {
        "max_metrics": 1000,
        "max_set_members": 10_000,
        "max_timer_values": 10_000,
    }
    aggregator = metrics.Aggregator(**limits)
    long = b"%%0%dd" % 200  # the longest names and members allowed
    flood = [long % i + b":1|" + kind for i in range(2000) for kind in (b"c", b"g")]
    flood += [b"t%d:%d|ms" % (i % 2000, i) for i in range(20_000)]
    flood += [b"%d:" % (i % 2000) + long % i + b"|s" for i in range(20_000)]
    tracemalloc.start()
    try:
        for start in range(0, len(flood), 500):
            aggregator.add_untrusted(b"\n".join(flood[start : start + 500]))
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    report = aggregator.flush()
    assert len(report["counters"]) == len(report["gauges"]) == 1000
    assert sum(timer["count"] for timer in report["timers"].values()) == 10_000
    assert sum(report["sets"].values()) == 10_000
    assert report["dropped"] == 1000 + 1000 + 10_000 + 10_000
    # What the module's docstring promises, scaled to these limits: about
    # 600 bytes per name, 400 per set member and 50 per timer value.
    assert held < 4 * 1000 * 600 + 10_000 * 400 + 10_000 * 50


async def test_an_unread_stdout_neither_stops_the_server_nor_delays_sigterm():
    server_command = example(
        "statsd_server.py", "--port", "0", "--flush-interval", "0.05"
    )
    async with running(server_command) as server:
        port = await server.port_from_banner()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            # One datagram, so one flush: 190 KB of JSON, more than a pipe holds.
            timers = b"\n".join(b"t%05d:1|ms" % i for i in range(2000))
            sock.sendto(timers, ("127.0.0.1", port))
            await server.stdout_is_full()
            for _ in range(100):
                sock.sendto(b"after:1|c", ("127.0.0.1", port))
        code, seconds, err = await server.stop_leaving_stdout_unread()
    assert code == 0, err
    assert seconds < 5
    dropped, stopped = err.splitlines()[-2:]
    assert dropped.endswith(" flushes dropped: stdout not read")
    assert stopped == "stopped: 101 datagrams"
