"""pcapng captures: what crossed the wire, each packet with its fate, read
back by the real tcpdump, tshark and capinfos."""

import os
import shutil
import socket

import pytest
import trio
import trio.testing

from trioudp.testing import VirtualNetwork
from trioudp.testing._pcap import PCAP_EPOCH

from ..conftest import has_ipv6


def tool(name):
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; .ci/run installs it")
        pytest.skip(f"{name} is not installed")
    return path


async def output(*command):
    result = await trio.run_process(
        list(command), capture_stdout=True, capture_stderr=True
    )
    return result.stdout.decode()


async def eventful_run(seed=3, **settings):
    """A 3000-byte datagram over a 1500-byte MTU, duplicates, a lossy spell,
    and datagrams to a closed port from a connected and an unconnected socket."""
    net = VirtualNetwork(seed, mtu=1500, duplicate=0.5, latency=0.01, **settings)
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
    assert "length 3028" not in text  # dropped for MTU: never on the wire
    assert "length 3000" not in text
    assert text.count("UDP, length 6") == 5  # three datagrams, two duplicates
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
    assert any(c.startswith("#2 sent; duplicate at") for c in comments)
    assert any(c.startswith("#2 duplicate copy") for c in comments)
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
    assert "1 for mtu" in info  # the section comment names what was left out
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
