"""Rules: a per-datagram hook that passes, drops, delays, duplicates or
corrupts one specific message; typed, ordered, removable, traced."""

import socket

import pytest
import trio

from trioudp.testing import UDPPacket, Verdict, VirtualNetwork

from .conftest import drain, pair


async def test_a_rule_drops_one_specific_message(virtual_network):
    net = virtual_network

    @net.add_rule
    def drop_the_vote(packet: UDPPacket) -> Verdict | None:
        return Verdict(drop=True) if packet.payload == b"vote" else None

    a, b = await pair()
    for payload in (b"hello", b"vote", b"bye"):
        await a.sendto(payload, b.getsockname())
    assert await drain(b, 2) == [b"hello", b"bye"]
    assert net.stats.dropped == {"rule": 1}
    [drop] = [e for e in net.trace if e.kind == "drop"]
    assert (drop.packet, drop.reason) == (2, "rule")


async def test_a_rule_sees_a_frozen_packet_with_its_hosts_and_time(autojump_clock):
    net = VirtualNetwork(latency=0.1)
    seen = []
    with net.install():
        one = net.add_host("10.0.0.1", name="one")
        two = net.add_host("10.0.0.2", name="two")
        net.add_rule(seen.append)  # returns None: passes everything
        a, b = await pair(a_host="10.0.0.1", b_host="10.0.0.2")
        await trio.sleep(2)
        await a.sendto(b"x", b.getsockname())
        assert await b.recv(10) == b"x"
    [packet] = seen
    assert packet == UDPPacket(
        number=1,
        src=a.getsockname(),
        dst=b.getsockname(),
        payload=b"x",
        sender=one,
        receiver=two,
        time=2.0,
    )
    with pytest.raises(AttributeError):
        packet.payload = b"y"


async def test_a_rule_delays_duplicates_and_rewrites(autojump_clock):
    net = VirtualNetwork(latency=0.1)
    with net.install():
        net.add_rule(
            lambda p: (
                Verdict(delay=0.5, copies=3, payload=b"changed")
                if p.payload == b"original"
                else None
            )
        )
        a, b = await pair()
        start = trio.current_time()
        await a.sendto(b"original", b.getsockname())
        await a.sendto(b"plain", b.getsockname())
        assert await b.recv(10) == b"plain"
        assert trio.current_time() - start == pytest.approx(0.1)
        assert await drain(b, 3) == [b"changed"] * 3
        assert trio.current_time() - start == pytest.approx(0.6)
    assert net.stats.duplicated == 2
    kinds = [(e.kind, e.reason, e.payload) for e in net.trace if e.packet == 1]
    assert kinds[:5] == [
        ("send", None, b"original"),
        ("corrupt", "rule", b"changed"),
        ("delay", "rule", b"changed"),
        ("duplicate", "rule", b"changed"),
        ("duplicate", "rule", b"changed"),
    ]
    assert [k for k, _, _ in kinds[5:]] == ["deliver"] * 3


async def flipped(seed):
    net = VirtualNetwork(seed)
    with net.install():
        net.add_rule(lambda p: Verdict(flip=3))
        a, b = await pair()
        await a.sendto(bytes(16), b.getsockname())
        return await b.recv(100)


async def test_flipped_bits_come_from_the_seed():
    first, again, other = [await flipped(seed) for seed in (1, 1, 2)]
    assert first == again != other
    assert 1 <= sum(bin(byte).count("1") for byte in first) <= 3
    assert len(first) == 16


async def test_the_first_verdict_decides_and_rules_are_removable(virtual_network):
    net = virtual_network
    calls = []

    def log(packet):
        calls.append("log")

    def once(packet):
        calls.append("once")
        net.remove_rule(once)
        return Verdict(drop=True)

    def never(packet):
        calls.append("never")
        return Verdict()

    for rule in (log, once, never):
        net.add_rule(rule)
    a, b = await pair()
    await a.sendto(b"1", b.getsockname())
    await a.sendto(b"2", b.getsockname())
    assert calls == ["log", "once", "log", "never"]
    assert await b.recv(10) == b"2"
    net.remove_rule(log)
    net.remove_rule(never)
    with pytest.raises(ValueError, match="not a rule of this network"):
        net.remove_rule(never)
    with pytest.raises(TypeError, match="callable"):
        net.add_rule("drop everything")


async def test_what_a_rule_raises_the_sender_gets(virtual_network):
    def broken(packet):
        raise ZeroDivisionError

    virtual_network.add_rule(broken)
    virtual_network.add_rule(lambda p: "drop")
    a, b = await pair()
    with pytest.raises(ZeroDivisionError):
        await a.sendto(b"x", b.getsockname())
    virtual_network.remove_rule(broken)
    with pytest.raises(TypeError, match="returns a Verdict or None, not 'drop'"):
        await a.sendto(b"x", b.getsockname())


async def test_held_datagrams_are_judged_when_released(virtual_network):
    net = virtual_network
    a, b = await pair()
    net.hold()
    await a.sendto(b"held", b.getsockname())
    net.add_rule(lambda p: Verdict(drop=True))
    net.release()
    assert net.stats.dropped == {"rule": 1}


async def test_each_multicast_copy_is_judged_for_its_receiver(autojump_clock):
    net = VirtualNetwork()
    with net.install():
        hosts = [net.add_host(f"10.0.0.{n}/24", name=f"h{n}") for n in (1, 2, 3)]
        net.add_rule(lambda p: Verdict(drop=True) if p.receiver.name == "h3" else None)
        receivers = []
        for host in hosts[1:]:
            with net.on_host(host):
                sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            await sock.bind(("0.0.0.0", 9))
            receivers.append(sock)
        with net.on_host(hosts[0]):
            sender = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        await sender.sendto(b"all", ("10.0.0.255", 9))
        assert await receivers[0].recv(10) == b"all"
        assert not receivers[1].is_readable()
    assert net.stats.dropped["rule"] == 1


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"drop": True, "copies": 2}, "cannot also be"),
        ({"delay": -1}, "seconds >= 0"),
        ({"delay": float("inf")}, "seconds >= 0"),
        ({"copies": 0}, "int >= 1"),
        ({"flip": -1}, "int >= 0"),
        ({"copies": True}, "int >= 1"),
    ],
)
def test_a_verdict_says_what_is_wrong_with_it(settings, message):
    with pytest.raises(ValueError, match=message):
        Verdict(**settings)
