"""The trace: bounded, built on read, stable text."""

import re
import socket
from pathlib import Path

import pytest
import trio

import trioudp.testing
from trioudp.testing import TraceEvent, VirtualNetwork
from trioudp.testing._trace import DEFAULT_TRACE_LIMIT, DROP_REASONS


async def send_some(count):
    a = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await a.bind(("127.0.0.1", 0))
    await b.bind(("127.0.0.1", 0))
    for i in range(count):
        await a.sendto(b"%d" % i, b.getsockname())
    return a, b


async def test_the_trace_keeps_the_latest_trace_limit_events():
    net = VirtualNetwork(trace_limit=5)
    with net.install():
        await send_some(10)  # a send and a deliver each
    trace = net.trace
    assert len(trace) == 5
    assert [(e.kind, e.packet) for e in trace] == [
        ("deliver", 8),
        ("send", 9),
        ("deliver", 9),
        ("send", 10),
        ("deliver", 10),
    ]
    assert trace[-1].payload == b"9"
    assert net.stats.sent == 10  # counters are not bounded


async def test_the_default_bound_and_no_bound():
    assert DEFAULT_TRACE_LIMIT == 100_000
    net = VirtualNetwork(trace_limit=None)
    with net.install():
        await send_some(3)
    assert len(net.trace) == 6


@pytest.mark.parametrize("limit", [0, -1])
def test_a_trace_limit_must_be_positive(limit):
    with pytest.raises(ValueError, match="trace_limit must be a positive count"):
        VirtualNetwork(trace_limit=limit)


async def test_events_are_built_on_read_with_times_from_the_epoch(autojump_clock):
    await trio.sleep(100)  # the network's epoch is its first install, not 0
    net = VirtualNetwork(latency=0.25)
    with net.install():
        a, b = await send_some(1)
        await b.recv(10)
    send, deliver = net.trace
    assert send == TraceEvent(
        time=0.0,
        kind="send",
        packet=1,
        src=a.getsockname(),
        dst=b.getsockname(),
        size=1,
    )
    assert (deliver.kind, deliver.time, deliver.payload) == ("deliver", 0.25, b"0")
    assert net.trace_text().splitlines() == [str(send), str(deliver)]


async def test_trace_text_can_show_only_the_last_events():
    net = VirtualNetwork()
    with net.install():
        await send_some(3)
    lines = net.trace_text().splitlines()
    assert net.trace_text(last=2).splitlines() == lines[-2:]
    assert net.trace_text(last=100).splitlines() == lines
    assert net.trace_text(last=0) == ""


def _reasons_dropped_for_in_the_source():
    # Every literal reason the package drops a datagram for: passed to the
    # wire's _drop, returned by a fault check or a socket's deliver, or made
    # by a link's fate.
    package = Path(trioudp.testing.__file__).parent
    pattern = re.compile(r'_drop\(\w+, "(\w+)"\)|return "(\w+)"|Fate\(drop="(\w+)"\)')
    found = set()
    for path in package.glob("_*.py"):
        if path.name == "_trace.py":
            continue
        for match in pattern.finditer(path.read_text()):
            found.add(next(group for group in match.groups() if group))
    return found


def test_drop_reasons_name_every_reason_the_network_drops_for():
    in_source = _reasons_dropped_for_in_the_source()
    assert {"host_unreachable", "queue", "rule", "host_down", "loss"} <= in_source
    assert in_source <= DROP_REASONS
    documented = set(
        re.findall(r"``(\w+)``", TraceEvent.__doc__.split("``duplicate``")[0])
    )
    assert documented >= DROP_REASONS
    # Before any such drop, each reads 0: never a KeyError.
    net = VirtualNetwork()
    assert all(net.stats.dropped[reason] == 0 for reason in DROP_REASONS)


async def test_an_address_no_host_has_counts_as_host_unreachable():
    net = VirtualNetwork()
    host = net.add_host("10.0.0.1/24", name="a")
    with net.install():
        assert net.stats.dropped["host_unreachable"] == 0
        with net.on_host(host):
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sock.sendto(b"anyone?", ("10.0.0.99", 9))
    assert net.stats.dropped["host_unreachable"] == 1
    assert [event.reason for event in net.trace if event.kind == "drop"] == [
        "host_unreachable"
    ]
