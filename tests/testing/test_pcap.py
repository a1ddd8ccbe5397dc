"""pcapng captures: what crossed the wire, each packet with its fate, read
back by the real tcpdump, tshark and capinfos."""

import socket

import pytest
import trio
import trio.testing

from trioudp.testing import VirtualNetwork
from trioudp.testing._pcap import PCAP_EPOCH

from ..conftest import has_ipv6, system_tool, unavailable
from .conftest import pair


def tool(name):
    path = system_tool(name)
    if path is None:
        unavailable(f"{name} is not installed (.ci/run installs it)")
    return path


async def output(*command):
    result = await trio.run_process(
        list(command), capture_stdout=True, capture_stderr=True
    )
    return result.stdout.decode()


async def eventful_run(seed=3, **settings):
    """A 3000-byte datagram over a 1500-byte MTU (in fragments), duplicates,
    a lossy spell, datagrams to a closed port from a connected and an
    unconnected socket, and one to an address no host has."""
    net = VirtualNetwork(seed, mtu=1500, duplicate=0.5, latency=0.01, **settings)
    net.add_address(net.localhost, "10.0.0.1/24")
    with net.install():
        a = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await a.bind(("127.0.0.1", 0))
        await b.bind(("127.0.0.1", 0))
        await a.sendto(b"x" * 3000, b.getsockname())
        for i in range(3):
            await a.sendto(b"hello%d" % i, b.getsockname())
        net.configure(loss=1.0)
        await a.sendto(b"lost", b.getsockname())
        net.configure(loss=0.0)
        connected = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await connected.connect(("127.0.0.1", 9))
        await connected.send(b"anyone?")
        await a.sendto(b"stray", ("127.0.0.1", 9))
        nobody = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await nobody.sendto(b"nobody home", ("10.0.0.99", 9))
        if has_ipv6():
            six = trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            await six.connect(("::1", 9))
            await six.send(b"six?")
        await trio.sleep(1)
    return net


async def test_the_capture_holds_the_wire_and_each_fate(tmp_path, autojump_clock):
    tcpdump, tshark = tool("tcpdump"), tool("tshark")
    net = await eventful_run()
    path = tmp_path / "run.pcapng"
    count = net.write_pcap(path)

    text = await output(tcpdump, "-nn", "-vv", "-r", str(path))
    assert "UDP, length 3000" in text  # crossed in fragments, written whole
    assert "10.0.0.99" not in text  # no host had it: never on the wire
    copies = [e for e in net.trace if e.size == 6 and e.kind in ("send", "duplicate")]
    assert len(copies) > 3  # three datagrams, and a duplicate at least
    assert text.count("UDP, length 6") == len(copies)
    assert "UDP, length 4" in text  # the lost one was on the wire
    assert "ICMP 127.0.0.1 udp port 9 unreachable" in text
    assert "bad" not in text.lower()
    if has_ipv6():
        assert (
            "ICMP6, destination unreachable, unreachable port, ::1 udp port 9" in text
        )

    comments = (
        await output(tshark, "-r", str(path), "-T", "fields", "-e", "frame.comment")
    ).splitlines()
    assert len(comments) == count
    twice = next(e.packet for e in net.trace if e.kind == "duplicate")
    assert any(c.startswith(f"#{twice} sent; duplicate at") for c in comments)
    assert any(c.startswith(f"#{twice} duplicate copy") for c in comments)
    assert any("drop loss at 0.000000000" in c for c in comments)
    assert any("deliver at 0.010000000" in c for c in comments)
    assert any("reported to the connected sender" in c for c in comments)
    assert any(
        "not reported: Linux reports it to connected sockets only" in c
        for c in comments
    )


async def test_the_capture_is_dated_from_a_documented_epoch(tmp_path, autojump_clock):
    capinfos = tool("capinfos")
    net = await eventful_run()
    default, chosen = tmp_path / "default.pcapng", tmp_path / "chosen.pcapng"
    net.write_pcap(default)
    net.write_pcap(chosen, epoch=1_700_000_000)
    assert PCAP_EPOCH == 946_684_800  # 2000-01-01 00:00:00 UTC
    info = await output(capinfos, "-a", "-k", "-e", str(default))
    assert "2000-01-01 00:00:00.000000000" in info
    assert "1 for host_unreachable" in info  # what was left out, and why
    info = await output(capinfos, "-S", "-a", str(chosen))
    assert "1700000000.000000000" in info


async def test_same_seed_same_capture_bytes(tmp_path, autojump_clock):
    paths = [tmp_path / "1.pcapng", tmp_path / "2.pcapng"]
    for path in paths:
        (await eventful_run()).write_pcap(path)
    assert paths[0].read_bytes() == paths[1].read_bytes()


async def test_record_false_refuses_to_write_a_capture(tmp_path):
    net = VirtualNetwork(record=False)
    with net.install():
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sock.bind(("127.0.0.1", 0))
        await sock.sendto(b"x", sock.getsockname())
    path = tmp_path / "empty.pcapng"
    with pytest.raises(RuntimeError, match="record=False"):
        net.write_pcap(path)
    assert not path.exists()


async def test_a_multicast_datagram_is_one_packet_with_each_copy_s_fate(
    tmp_path, autojump_clock
):
    """One record per multicast or broadcast datagram, to the group, listing
    every host's copy (one of them in fragments over a small MTU)."""
    tshark = tool("tshark")
    group = "239.7.7.7"
    net = VirtualNetwork(seed=1, latency=0.01)
    with net.install():
        one, two, three = (
            net.add_host(f"10.0.0.{n}/24", name=f"h{n}") for n in (1, 2, 3)
        )
        net.set_link(one, three, mtu=100)
        members = []
        for host in (two, three):
            with net.on_host(host):
                member = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            await member.bind(("0.0.0.0", 5000))
            member.setsockopt(
                socket.IPPROTO_IP,
                socket.IP_ADD_MEMBERSHIP,
                socket.inet_aton(group) + socket.inet_aton("0.0.0.0"),
            )
            members.append(member)
        with net.on_host(one):
            sender = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        await sender.sendto(b"small", (group, 5000))
        await sender.sendto(b"x" * 500, (group, 5000))
        await sender.sendto(b"all", ("10.0.0.255", 5000))
        await trio.sleep(1)
    path = tmp_path / "group.pcapng"
    assert net.write_pcap(path) == 3
    fields = ["-e", "ip.dst", "-e", "udp.length", "-e", "frame.comment"]
    text = await output(tshark, "-r", str(path), "-T", "fields", *fields)
    rows = [line.split("\t") for line in text.splitlines()]
    assert [row[:2] for row in rows] == [
        [group, "13"],
        [group, "508"],
        ["10.0.0.255", "11"],
    ]
    # The sender's own host gets a copy too (IP_MULTICAST_LOOP), unheard.
    fates = "drop no_receiver at 0.010000000; deliver at 0.010000000"
    assert rows[0][2] == f"#1 sent; {fates}; deliver at 0.010000000"
    assert rows[1][2] == f"#2 sent; {fates}; deliver at 0.010000000"
    assert rows[2][2] == f"#3 sent; {fates}; deliver at 0.010000000"
    for sock in (*members, sender):
        sock.close()


async def test_pcap_is_read_back_by_tcpdump(virtual_network, tmp_path):
    tcpdump = tool("tcpdump")
    a, b = await pair()
    await a.sendto(b"hello", b.getsockname())
    await b.sendto(b"a longer answer", a.getsockname())
    if socket.has_ipv6:
        c = trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        await c.bind(("::1", 0))
        await c.sendto(b"six", c.getsockname())
    path = tmp_path / "capture.pcap"
    count = virtual_network.write_pcap(path)
    result = await trio.run_process(
        [tcpdump, "-nn", "-vv", "-r", str(path)],
        capture_stdout=True,
        capture_stderr=True,
    )
    lines = result.stdout.decode().splitlines()
    text = "\n".join(lines)
    a_port, b_port = a.getsockname()[1], b.getsockname()[1]
    assert (
        f"127.0.0.1.{a_port} > 127.0.0.1.{b_port}: [udp sum ok] UDP, length 5" in text
    )
    assert (
        f"127.0.0.1.{b_port} > 127.0.0.1.{a_port}: [udp sum ok] UDP, length 15" in text
    )
    if socket.has_ipv6:
        assert "::1." in text
        assert "length 3" in text
    assert "bad" not in text.lower()
    assert count == (3 if socket.has_ipv6 else 2)


async def test_a_long_trace_streams_into_the_capture(tmp_path, autojump_clock):
    # Writing holds arrays of integers beside the trace, not an event, a
    # comment and a packet per datagram.
    import io
    import tracemalloc

    from trioudp.testing import write_pcap

    net = VirtualNetwork(seed=1, trace_limit=None, duplicate=0.05, loss=0.05)
    with net.install():
        a, b = await pair()
        for n in range(20_000):
            await a.sendto(b"%05d" % n, b.getsockname())
            while b.is_readable():
                await b.recv(10)
    path = tmp_path / "long.pcapng"
    tracemalloc.start()
    try:
        count = net.write_pcap(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == sum(e.kind in ("send", "duplicate") for e in net.trace) > 20_000
    assert peak < 2_500_000  # 19 MB when it built every event
    # The same bytes as from the trace's events.
    from_events = io.BytesIO()
    write_pcap(from_events, net.trace)
    assert path.read_bytes() == from_events.getvalue()


async def test_faults_show_in_the_capture(tmp_path, autojump_clock):
    """Network events are section comments; a corrupted datagram is a second
    record with the bytes that arrive; a tail-dropped one never left."""
    tshark, capinfos = tool("tshark"), tool("capinfos")
    from trioudp.testing import Verdict

    net = VirtualNetwork(seed=1, latency=0.01)
    with net.install():
        one = net.add_host("10.0.0.1", name="one")
        two = net.add_host("10.0.0.2", name="two")
        a, b = await pair(a_host="10.0.0.1", b_host="10.0.0.2")
        net.add_rule(lambda p: Verdict(payload=b"BAD") if p.payload == b"ok" else None)
        await a.sendto(b"ok", b.getsockname())
        await trio.sleep(0.02)
        net.partition(one, two, one_way=True)
        await a.sendto(b"cut", b.getsockname())
        net.heal()
        net.set_link(one, two, bandwidth=100, queue=0)
        await a.sendto(b"first", b.getsockname())
        await a.sendto(b"tail dropped", b.getsockname())
        net.crash(two)
        await trio.sleep(1)
    path = tmp_path / "faults.pcapng"
    net.write_pcap(path)
    fields = ["-e", "udp.length", "-e", "frame.comment"]
    text = await output(tshark, "-r", str(path), "-T", "fields", *fields)
    rows = [line.split("\t") for line in text.splitlines()]
    assert [row[0] for row in rows] == ["10", "11", "11", "13"]
    assert rows[0][1] == "#1 sent; corrupt rule at 0.000000000; deliver at 0.010000000"
    assert rows[1][1].startswith("#1 corrupted copy; ")
    assert rows[2][1] == "#2 sent; drop partition at 0.020000000"
    # Over 100 bytes/s, 33 bytes take 0.33 s: in flight when its host crashed.
    assert rows[3][1] == "#3 sent; drop host_down at 0.360000000"
    info = await output(capinfos, str(path))
    assert "1 for queue" in info
    for note in (
        "at 0.020000000: partition one > two",
        "at 0.020000000: heal all",
        "at 0.020000000: crash two: 1 sockets closed, 0 tasks cancelled",
    ):
        assert note in info


def test_the_section_header_lists_network_events_up_to_a_bound():
    import io

    from trioudp.testing import TraceEvent, write_pcap
    from trioudp.testing._pcap import MAX_EVENT_COMMENTS

    nowhere = ("", 0)
    events = [
        TraceEvent(
            time=float(n),
            kind="crash",
            packet=0,
            src=nowhere,
            dst=nowhere,
            size=0,
            reason=f"h{n}",
        )
        for n in range(MAX_EVENT_COMMENTS + 2)
    ]
    capture = io.BytesIO()
    assert write_pcap(capture, events) == 0  # no packets: events are no packets
    data = capture.getvalue()
    last = MAX_EVENT_COMMENTS - 1
    assert f"at {last}.000000000: crash h{last}".encode() in data
    assert f"crash h{last + 1}".encode() not in data
    assert b"and 2 more network events: see the trace" in data
