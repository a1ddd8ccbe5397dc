"""Crashes and restarts: a crashed host is silent, its sockets closed and the
tasks started under ``on_host`` for it cancelled; a restarted one is empty."""

import errno
import functools
import socket

import pytest
import trio
import trio.testing

import trioudp
from trioudp.testing import VirtualNetwork


async def echo(datagram):
    await datagram.reply(datagram.data)


def two_hosts(net):
    return net.add_host("10.0.0.1", name="a"), net.add_host("10.0.0.2", name="b")


async def test_a_crash_cancels_the_hosts_tasks_and_closes_its_sockets(autojump_clock):
    net = VirtualNetwork(seed=1, latency=0.01)
    ended = []
    with net.install():
        a, b = two_hosts(net)

        async def waits_in_recv(sock, name):
            try:
                await sock.recv(10)
            finally:
                ended.append(name)

        async def sleeps_and_starts_a_child(nursery):
            nursery.start_soon(functools.partial(trio.sleep_forever))
            try:
                await trio.sleep_forever()
            finally:
                ended.append("sleeper")

        async with trio.open_nursery() as nursery:
            with net.on_host(b):
                on_b = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                unbound = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                await on_b.bind(("0.0.0.0", 9))
                nursery.start_soon(waits_in_recv, on_b, "receiver")
                nursery.start_soon(sleeps_and_starts_a_child, nursery)
            # The test body's own socket on b, and a task on a: neither is
            # under on_host(b).
            bound_to_b = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            await bound_to_b.bind(("10.0.0.2", 10))
            with net.on_host(a):
                on_a = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                await on_a.bind(("0.0.0.0", 9))
                nursery.start_soon(waits_in_recv, on_a, "a's receiver")
            await trio.testing.wait_all_tasks_blocked()

            async def test_body_receives():
                # Not started under on_host(b): not cancelled, its socket
                # closes under it.
                with pytest.raises(trio.ClosedResourceError):
                    await bound_to_b.recv(10)
                ended.append("closed under it")

            nursery.start_soon(test_body_receives)
            await trio.testing.wait_all_tasks_blocked()
            net.crash(b)
            await trio.testing.wait_all_tasks_blocked()
            assert sorted(ended) == ["closed under it", "receiver", "sleeper"]
            for sock in (on_b, unbound, bound_to_b):
                assert sock.fileno() == -1
                with pytest.raises(OSError) as info:
                    await sock.sendto(b"x", ("10.0.0.1", 9))
                assert info.value.errno == errno.EBADF
            # Host a is untouched: its socket and task still work.
            await on_a.sendto(b"still here", ("10.0.0.1", 9))
            await trio.sleep(0.02)
            assert "a's receiver" in ended
    [crash] = [e for e in net.trace if e.kind == "crash"]
    assert crash.reason == "b: 3 sockets closed, 3 tasks cancelled"
    assert str(crash) == "0.000000000 crash     b: 3 sockets closed, 3 tasks cancelled"


async def test_a_crashed_host_is_silent_to_its_peers(autojump_clock):
    """No ICMP error: a connected sender sees silence, not ECONNREFUSED, and
    datagrams already in flight to it are lost too."""
    net = VirtualNetwork(seed=1, latency=0.5)
    with net.install():
        a, b = two_hosts(net)
        with net.on_host(b):
            server = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            await server.bind(("0.0.0.0", 9))
        with net.on_host(a):
            client = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await client.connect(("10.0.0.2", 9))
        await client.send(b"in flight")
        await trio.sleep(0.25)
        net.crash(b)
        await client.send(b"after")
        await trio.sleep(1)
        await client.send(b"still nothing")  # no pending ECONNREFUSED
        with trio.move_on_after(5):
            await client.recv(10)
        await client.connect(("10.0.0.1", 9))  # a's own closed port refuses
        await client.send(b"refused")
        await trio.sleep(1)
        with pytest.raises(ConnectionRefusedError):
            await client.send(b"x")
    assert net.stats.dropped == {"host_down": 3, "port_unreachable": 1}
    assert [e.kind for e in net.trace].count("icmp") == 1


async def test_a_restarted_host_is_empty_and_runs_its_program_again(autojump_clock):
    net = VirtualNetwork(seed=2, latency=0.01)
    with net.install():
        _, b = two_hosts(net)
        net.add_host("10.0.0.3", names=["db.test"])
        async with trio.open_nursery() as nursery:
            with net.on_host(b):
                await nursery.start(functools.partial(trioudp.serve_udp, echo, 7))
            with net.on_host("db.test"):
                async with trioudp.open_udp_client("10.0.0.2", 7, attempts=2) as client:
                    assert (await client.request(b"one")).data == b"one"
                    net.crash(b)
                    with pytest.raises(trioudp.RequestTimeout):
                        await client.request(b"two")
                    with (
                        pytest.raises(RuntimeError, match="restart"),
                        net.on_host(b),
                    ):
                        pass
                    net.restart(b)
                    # Empty: its port is closed until the program starts again.
                    with pytest.raises(trioudp.PeerUnreachable):
                        await client.request(b"three")
                    with net.on_host(b):  # the same port binds again
                        await nursery.start(
                            functools.partial(trioudp.serve_udp, echo, 7)
                        )
                    assert (await client.request(b"four")).data == b"four"
            nursery.cancel_scope.cancel()
    kinds = [e.kind for e in net.trace if e.packet == 0]
    assert kinds == ["crash", "restart"]
    assert net.stats.dropped["host_down"] == 2


async def test_crash_and_restart_say_what_is_wrong(autojump_clock):
    net = VirtualNetwork()
    host = net.add_host("10.0.0.1")
    with pytest.raises(RuntimeError, match="installed"):
        net.crash(host)
    with net.install():
        with pytest.raises(RuntimeError, match="only a crashed host can restart"):
            net.restart(host)
        net.crash("10.0.0.1")
        with pytest.raises(RuntimeError, match="crashed already"):
            net.crash(host)
        with pytest.raises(KeyError):
            net.crash("10.9.9.9")


async def test_tasks_that_ended_are_not_counted_and_tasks_elsewhere_run_on(
    autojump_clock,
):
    net = VirtualNetwork()
    with net.install():
        a, b = two_hosts(net)
        finished = []

        async def short(name):
            await trio.sleep(1)
            finished.append(name)

        async with trio.open_nursery() as nursery:
            with net.on_host(a):
                nursery.start_soon(short, "a")
            with net.on_host(b):
                nursery.start_soon(short, "b early")
            await trio.sleep(2)
            with net.on_host(b):
                nursery.start_soon(short, "b late")
            net.crash(b)
        assert finished == ["a", "b early"]
    [crash] = [e for e in net.trace if e.kind == "crash"]
    assert crash.reason == "b: 0 sockets closed, 1 tasks cancelled"


async def test_a_crash_cancels_a_server_cleanly(autojump_clock):
    """A serve_udp server started under on_host ends as a cancelled task: the
    nursery that runs it sees no error. Replies already on the wire arrive."""
    net = VirtualNetwork(latency=0.01)
    with net.install():
        a, b = two_hosts(net)
        answers = []

        async def ask(i):
            async with trioudp.open_udp_client("10.0.0.2", 7) as client:
                try:
                    answers.append((await client.request(b"%d" % i)).data)
                except trioudp.RequestTimeout:
                    answers.append(None)

        async with trio.open_nursery() as nursery:
            with net.on_host(b):
                server = await nursery.start(
                    functools.partial(trioudp.serve_udp, echo, 7)
                )
            async with trio.open_nursery() as clients:
                with net.on_host(a):
                    for i in range(20):
                        clients.start_soon(ask, i)
                await trio.sleep(0.015)  # the replies are in flight
                net.crash(b)
            assert all(sock.trio_socket.fileno() == -1 for sock in server.sockets)
            assert sorted(answers) == sorted(b"%d" % i for i in range(20))
            with net.on_host(a):
                await ask(20)
            assert answers[20] is None


async def test_a_task_started_while_its_host_is_down_is_cancelled(autojump_clock):
    net = VirtualNetwork()
    with net.install():
        _, b = two_hosts(net)
        ran = []

        async def child():
            await trio.sleep(1)
            ran.append("child")  # pragma: no cover - cancelled first

        async def program(nursery):
            try:
                await trio.sleep_forever()
            finally:
                nursery.start_soon(child)  # as it unwinds, after the crash

        async with trio.open_nursery() as nursery:
            with net.on_host(b):
                nursery.start_soon(program, nursery)
            await trio.testing.wait_all_tasks_blocked()
            net.crash(b)
        assert ran == []
