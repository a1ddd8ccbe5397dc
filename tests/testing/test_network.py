import functools
import socket

import dns.asyncbackend
import dns.asyncquery
import dns.message
import dns.rrset
import pytest
import trio
import trio.testing

import trioudp
from trioudp.testing import LinkPolicy, VirtualNetwork, plan_fate

from ..conftest import system_tool, unavailable


async def pair(net=None, a_host="127.0.0.1", b_host="127.0.0.1"):
    a = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await a.bind((a_host, 0))
    await b.bind((b_host, 0))
    return a, b


async def drain(sock, count):
    return [await sock.recv(100) for _ in range(count)]


async def test_install_swaps_and_restores_the_socket_factory():
    net = VirtualNetwork()
    with net.install():
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        assert isinstance(sock, trioudp.testing.VirtualSocket)
        with pytest.raises(RuntimeError, match="installed already"), net.install():
            pass  # pragma: no cover
    real = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with real:
        assert not isinstance(real, trioudp.testing.VirtualSocket)
    sock.close()


async def test_non_udp_sockets_are_refused_clearly(virtual_network):
    with pytest.raises(OSError, match="only makes UDP"):
        trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(OSError, match="AF_INET and AF_INET6"):
        trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)


async def test_unsupported_operations_name_themselves(virtual_network):
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(NotImplementedError, match="detach"):
            sock.detach()
        with pytest.raises(
            NotImplementedError, match=r"setsockopt\(level=0, optname=4\)"
        ):
            sock.setsockopt(0, 4, 1)  # IP_OPTIONS
        with pytest.raises(NotImplementedError, match="receive flags"):
            await sock.recv(10, socket.MSG_OOB)
        with pytest.raises(OSError, match="listen"):
            sock.listen()


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


async def test_partition_and_heal(virtual_network):
    virtual_network.add_host("10.0.0.1")
    virtual_network.add_host("10.0.0.2")
    a, b = await pair(a_host="10.0.0.1", b_host="10.0.0.2")
    virtual_network.partition("10.0.0.1", "10.0.0.2")
    await a.sendto(b"lost", b.getsockname())
    virtual_network.heal()
    await a.sendto(b"found", b.getsockname())
    assert await b.recv(10) == b"found"
    assert virtual_network.stats.dropped == {"partition": 1}


async def test_hold_and_release_at_a_chosen_moment(autojump_clock):
    net = VirtualNetwork(latency=0.1)
    with net.install():
        a, b = await pair()
        net.hold()
        await a.sendto(b"held", b.getsockname())
        await trio.sleep(5)
        assert not b.is_readable()
        assert net.held == 1
        net.release()
        released_at = trio.current_time()
        assert await b.recv(10) == b"held"
        assert trio.current_time() - released_at == pytest.approx(0.1)
    assert [e.kind for e in net.trace] == ["send", "hold", "release", "deliver"]


async def test_per_link_policy_overrides_the_default(autojump_clock):
    net = VirtualNetwork(latency=0.01)
    with net.install():
        net.add_host("10.0.0.1")
        net.add_host("10.0.0.2")
        net.set_link("10.0.0.1", "10.0.0.2", latency=0.5)
        assert net.link("10.0.0.2", "10.0.0.1").latency == 0.5
        a, b = await pair(a_host="10.0.0.1", b_host="10.0.0.2")
        start = trio.current_time()
        await a.sendto(b"slow", b.getsockname())
        await b.recv(10)
        assert trio.current_time() - start == 0.5


async def test_settings_change_while_running(autojump_clock):
    net = VirtualNetwork()
    with net.install():
        a, b = await pair()
        await a.sendto(b"1", b.getsockname())
        net.configure(latency=2.0)
        await a.sendto(b"2", b.getsockname())
        start = trio.current_time()
        assert await drain(b, 2) == [b"1", b"2"]
        assert trio.current_time() - start == 2.0
        with pytest.raises(ValueError, match="loss must be a probability"):
            net.configure(loss=2)


async def test_names_resolve_through_the_virtual_resolver(virtual_network):
    virtual_network.add_host(["10.0.0.9", "fd00::9"], names=["db.test"])
    infos = await trio.socket.getaddrinfo("db.test", 53, type=socket.SOCK_DGRAM)
    assert [info[4][0] for info in infos] == ["10.0.0.9", "fd00::9"]
    v6 = await trio.socket.getaddrinfo("DB.test", 53, family=socket.AF_INET6)
    assert v6[0][4] == ("fd00::9", 53, 0, 0)
    with pytest.raises(socket.gaierror):
        await trio.socket.getaddrinfo("unknown.test", 53)
    assert await trio.socket.getnameinfo(("10.0.0.9", 53), 0) == ("db.test", "53")
    localhost = await trio.socket.getaddrinfo("localhost", 1, family=socket.AF_INET)
    assert localhost[0][4] == ("127.0.0.1", 1)


async def test_host_validation(virtual_network):
    with pytest.raises(ValueError, match="numeric IPs"):
        virtual_network.add_host("db.test")
    with pytest.raises(ValueError, match="belongs to"):
        virtual_network.add_host("127.0.0.1")
    with pytest.raises(KeyError, match="no host"):
        virtual_network.host("10.9.9.9")


async def test_on_host_sets_the_home_of_new_sockets(virtual_network):
    virtual_network.add_host("10.0.0.5")
    with virtual_network.on_host("10.0.0.5"):
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.bind(("0.0.0.0", 0))
        b = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await b.bind(("127.0.0.1", 0))
        await sock.sendto(b"from five", ("127.0.0.1", b.getsockname()[1]))
        await sock.sendto(b"x", ("10.0.0.5", sock.getsockname()[1]))
        assert await sock.recv(10) == b"x"
        _, peer = await b.recvfrom(20)
        assert peer[0] == "127.0.0.1"  # loopback traffic keeps a loopback source


async def test_rcvbuf_overflow_is_counted_like_rcvbuferrors(virtual_network):
    a, b = await pair()
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    for _ in range(10):
        await a.sendto(b"x" * 1000, b.getsockname())
    # Linux charges a 1000-byte datagram 2304 bytes: one fits in 4096.
    assert virtual_network.stats.dropped == {"rcvbuf": 9}
    assert b.rcvbuf_errors == 9


async def test_an_unmodified_raw_trio_socket_echo_pair(virtual_network):
    async def raw_echo_server(task_status=trio.TASK_STATUS_IGNORED):
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            await sock.bind(("127.0.0.1", 7))
            task_status.started()
            while True:
                data, address = await sock.recvfrom(2048)
                await sock.sendto(data, address)

    async with trio.open_nursery() as nursery:
        await nursery.start(raw_echo_server)
        client = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with client:
            for word in (b"alpha", b"beta", b"gamma"):
                await client.sendto(word, ("localhost", 7))
                assert await client.recv(2048) == word
        nursery.cancel_scope.cancel()
    assert virtual_network.stats.delivered == 6


def test_plan_fate_is_pure_and_ordered():
    import random

    policy = LinkPolicy(latency=0.1, jitter=0.1, loss=0.5, duplicate=0.5, reorder=0.5)
    first = [plan_fate(policy, 100, random.Random(9)) for _ in range(3)]
    assert first == [plan_fate(policy, 100, random.Random(9)) for _ in range(3)]


# ---- dnspython, unmodified, through its trio backend ------------------------


def dns_responder(answers):
    async def handler(datagram):
        query = dns.message.from_wire(datagram.data)
        response = dns.message.make_response(query)
        name = query.question[0].name
        response.answer.append(
            dns.rrset.from_text(name, 60, "IN", "A", answers[name.to_text()])
        )
        await datagram.reply(response.to_wire())

    return handler


async def test_dnspython_trio_backend_retries_through_20_percent_loss(autojump_clock):
    import time

    net = VirtualNetwork(seed=20, latency=0.02, loss=0.2)
    backend = dns.asyncbackend.get_backend("trio")
    wall = time.monotonic()
    with net.install():
        net.add_host("10.53.0.1", names=["ns.test"])
        async with trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(
                    trioudp.serve_udp,
                    dns_responder({"www.example.": "192.0.2.80"}),
                    53,
                    host="10.53.0.1",
                )
            )
            start = trio.current_time()
            answers = []
            tries = 0
            while len(answers) < 20:
                tries += 1
                query = dns.message.make_query("www.example.", "A")
                try:
                    response = await dns.asyncquery.udp(
                        query, "10.53.0.1", timeout=0.5, backend=backend
                    )
                except dns.exception.Timeout:
                    continue
                answers.append(response.answer[0][0].address)
            nursery.cancel_scope.cancel()
    assert answers == ["192.0.2.80"] * 20
    assert tries > 20  # some queries were lost and retried
    assert net.stats.dropped["loss"] > 0
    assert trio.current_time() - start > 1.0  # seconds of virtual time...
    assert time.monotonic() - wall < 1.0  # ...in well under a second


# ---- pcap, read back by the real tcpdump ------------------------------------


@pytest.fixture
def tcpdump():
    path = system_tool("tcpdump")
    if path is None:
        unavailable("tcpdump is not installed (Debian: tcpdump; .ci/run installs it)")
    return path


async def test_pcap_is_read_back_by_tcpdump(virtual_network, tmp_path, tcpdump):
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
