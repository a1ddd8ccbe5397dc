import contextlib
import functools
import math
import random

import pytest
import trio
import trio.testing

import trioudp
from trioudp import Backoff, PeerUnreachable, RequestTimeout, open_udp_client, serve_udp
from trioudp.testing import VirtualNetwork

from .conftest import open_fds, requires_ipv6
from .helpers import by_id, echo
from .helpers import start as start_echo


async def test_request_gets_the_reply(virtual_network, nursery):
    server = await start_echo(nursery)
    async with open_udp_client("127.0.0.1", server.port) as client:
        reply = await client.request(b"Hello, server!")
        assert reply.data == b"Hello, server!"
        assert reply.peer == client.peer
        assert client.stats == trioudp.ClientStats(sent=1, received=1, replies=1)


async def test_retransmissions_happen_exactly_on_schedule(
    virtual_network, autojump_clock
):
    virtual_network.configure(loss=1.0)
    backoff = Backoff(initial=0.5, multiplier=2.0, jitter=0.25)
    expected = backoff.timeouts(4, random.Random(42))
    async with open_udp_client(
        "127.0.0.1", 9, attempts=4, backoff=backoff, rng=random.Random(42)
    ) as client:
        start = trio.current_time()
        with pytest.raises(RequestTimeout) as info:
            await client.request(b"anyone?")
    sends = [
        event.time - start for event in virtual_network.trace if event.kind == "send"
    ]
    assert sends == pytest.approx(
        [0.0, expected[0], sum(expected[:2]), sum(expected[:3])], abs=1e-9
    )
    assert info.value.attempts == 4
    assert info.value.elapsed == pytest.approx(sum(expected), abs=1e-9)
    assert info.value.elapsed <= backoff.worst_case(4)
    assert info.value.peer == ("127.0.0.1", 9)
    assert isinstance(info.value, TimeoutError)
    assert client.stats.timeouts == 1
    assert client.stats.retransmitted == 3


async def test_default_budget_is_documented_and_computable(
    virtual_network, autojump_clock
):
    virtual_network.configure(loss=1.0)
    async with open_udp_client("127.0.0.1", 9, rng=random.Random(0)) as client:
        assert client.budget() == pytest.approx(7.7)
        start = trio.current_time()
        with pytest.raises(RequestTimeout):
            await client.request(b"x")
        assert trio.current_time() - start <= client.budget()


async def test_caller_deadline_wins(virtual_network, autojump_clock):
    virtual_network.configure(loss=1.0)
    async with open_udp_client("127.0.0.1", 9) as client:
        start = trio.current_time()
        with trio.move_on_after(0.25):
            await client.request(b"x")
        assert trio.current_time() - start == 0.25


async def test_thousand_concurrent_matched_requests_under_loss_duplication_reordering(
    virtual_network, autojump_clock, nursery
):
    virtual_network.configure(
        loss=0.3, duplicate=0.3, reorder=0.3, latency=0.01, jitter=0.02
    )
    server = await start_echo(nursery)
    answers = {}
    failures = []
    async with open_udp_client(
        "127.0.0.1",
        server.port,
        match=by_id,
        attempts=6,
        backoff=Backoff(initial=0.1),
        rng=random.Random(1),
    ) as client:

        async def one(i):
            payload = i.to_bytes(4, "big") + b"payload-%d" % i
            try:
                reply = await client.request(payload)
            except RequestTimeout:
                failures.append(i)
            else:
                answers[i] = reply.data

        async with trio.open_nursery() as requests:
            for i in range(1000):
                requests.start_soon(one, i)
    assert len(answers) + len(failures) == 1000
    for i, data in answers.items():
        assert data == i.to_bytes(4, "big") + b"payload-%d" % i
    stats = client.stats
    assert stats.replies == len(answers)
    assert stats.timeouts == len(failures)
    assert stats.received == stats.replies + stats.discarded
    assert stats.discarded > 0
    assert len(answers) > 990


async def test_unmatched_requests_take_turns(virtual_network, autojump_clock, nursery):
    async def slow_echo(datagram):
        await trio.sleep(1)
        await datagram.reply(datagram.data)

    server = await start_echo(nursery, slow_echo)
    results = []
    async with open_udp_client(
        "127.0.0.1", server.port, backoff=Backoff(initial=5)
    ) as client:

        async def ask(data):
            results.append(((await client.request(data)).data, trio.current_time()))

        start = trio.current_time()
        async with trio.open_nursery() as requests:
            requests.start_soon(ask, b"a")
            await trio.testing.wait_all_tasks_blocked()
            requests.start_soon(ask, b"b")
    assert [data for data, _ in results] == [b"a", b"b"]
    assert [when - start for _, when in results] == [1.0, 2.0]


async def test_late_replies_are_discarded_and_counted(
    virtual_network, autojump_clock, nursery
):
    async def late_echo(datagram):
        await trio.sleep(2)
        await datagram.reply(datagram.data)

    server = await start_echo(nursery, late_echo)
    async with open_udp_client(
        "127.0.0.1",
        server.port,
        match=by_id,
        attempts=1,
        backoff=Backoff(initial=1, jitter=0),
    ) as client:
        with pytest.raises(RequestTimeout):
            await client.request(b"0001late")
        virtual_network.configure(latency=0)
        reply_task_result = []

        async def ask():
            reply_task_result.append(
                await client.request(b"0002", backoff=Backoff(initial=5, jitter=0))
            )

        await ask()
        assert reply_task_result[0].data == b"0002"
        assert client.stats.discarded == 1


async def test_refused_port_fails_fast_on_real_loopback():
    async with trioudp.open_udp_socket("127.0.0.1", 0) as gone:
        port = gone.local_address[1]
    async with open_udp_client("127.0.0.1", port) as client:
        start = trio.current_time()
        with pytest.raises(PeerUnreachable) as info:
            await client.request(b"hello?")
        elapsed = trio.current_time() - start
    assert elapsed < 0.5 < client.budget()
    assert isinstance(info.value, ConnectionError)
    assert info.value.peer == ("127.0.0.1", port)


async def test_refused_port_on_the_virtual_network(virtual_network, autojump_clock):
    virtual_network.configure(latency=0.01)
    async with open_udp_client("127.0.0.1", 9) as client:
        start = trio.current_time()
        with pytest.raises(PeerUnreachable):
            await client.request(b"hello?")
        assert trio.current_time() - start == pytest.approx(0.02)


async def test_retry_policy_keeps_trying_until_the_server_comes_up(
    virtual_network, autojump_clock, nursery
):
    async def late_server():
        await trio.sleep(2.5)
        await nursery.start(functools.partial(serve_udp, echo, 7000, host="127.0.0.1"))

    nursery.start_soon(late_server)
    async with open_udp_client(
        "127.0.0.1", 7000, attempts=5, on_unreachable="retry", backoff=Backoff(jitter=0)
    ) as client:
        reply = await client.request(b"eventually")
    assert reply.data == b"eventually"
    assert trio.current_time() == 3.0
    assert client.stats.unreachable >= 2


async def test_send_receive_and_iterate(virtual_network, nursery):
    server = await start_echo(nursery)
    async with open_udp_client("127.0.0.1", server.port) as client:
        await client.send(b"one")
        assert (await client.receive()).data == b"one"
        await client.send(b"two")
        async for datagram in client:
            assert datagram.data == b"two"
            client.close()
    assert client.stats.sent == 2


async def test_client_resolves_names_and_binds_local_address(virtual_network, nursery):
    virtual_network.add_host("10.0.0.1", names=["server.test"])
    virtual_network.add_host("10.0.0.2")
    server = await nursery.start(
        functools.partial(serve_udp, echo, 53, host="server.test")
    )
    async with open_udp_client(
        "server.test", server.port, local_address=("10.0.0.2", 4000)
    ) as client:
        reply = await client.request(b"q")
        assert reply.peer == ("10.0.0.1", 53)
        assert client.socket.local_address == ("10.0.0.2", 4000)


async def test_client_closes_its_socket():
    before = open_fds()
    for _ in range(100):
        async with open_udp_client("127.0.0.1", 9):
            pass
    assert open_fds() == before


async def test_bad_arguments(virtual_network):
    with pytest.raises(ValueError, match="attempts must be an int >= 1"):
        async with open_udp_client("127.0.0.1", 9, attempts=0):
            pass  # pragma: no cover
    with pytest.raises(trioudp.InvalidAddress):
        async with open_udp_client("127.0.0.1", 70000):
            pass  # pragma: no cover
    with pytest.raises(ValueError, match="drop"):
        async with open_udp_client("127.0.0.1", 9, on_unreachable="drop"):
            pass  # pragma: no cover
    async with open_udp_client("127.0.0.1", 9) as client:
        with pytest.raises(TypeError, match="not str"):
            await client.request("text")


async def test_zero_attempts_is_an_error_not_the_default(virtual_network):
    async with open_udp_client("127.0.0.1", 9) as client:
        with pytest.raises(ValueError, match="attempts must be an int >= 1"):
            await client.request(b"x", attempts=0)
        with pytest.raises(ValueError, match="attempts must be an int >= 1"):
            client.budget(attempts=0)


async def test_request_send_receive_and_shutdown_are_checkpoints(nursery):
    """docs/explanation/cancellation.rst promises Trio's checkpoint rule for
    every public async operation, the replies of an eager server included."""

    async def echo(datagram):
        await datagram.reply(datagram.data)

    server = await nursery.start(serve_udp, echo, 0)
    async with open_udp_client("127.0.0.1", server.port) as client:
        with trio.testing.assert_checkpoints():
            await client.request(b"x")
        with trio.testing.assert_checkpoints():
            await client.send(b"y")
        with trio.testing.assert_checkpoints():
            await client.receive()
    with trio.testing.assert_checkpoints():
        await server.shutdown()


# ---- issue 12: hardening ----------------------------------------------------


def first_byte(data: bytes) -> bytes:
    return data[:1]


async def answer_only_b(datagram):
    if datagram.data.startswith(b"B"):
        await trio.sleep(0.7)
        await datagram.reply(datagram.data)


@pytest.mark.parametrize("how", ["gives_up", "cancelled"])
async def test_reply_reaches_a_parked_request_when_the_reader_stops(
    virtual_network, autojump_clock, nursery, how
):
    """A (the reader) stops at 0.5 s; B, parked, must still get its reply at 0.7 s."""
    server = await start_echo(nursery, answer_only_b)
    times = {}
    async with open_udp_client("127.0.0.1", server.port, match=first_byte) as client:

        async def a():
            if how == "gives_up":
                with pytest.raises(RequestTimeout):
                    await client.request(
                        b"A", attempts=1, backoff=Backoff(initial=0.5, jitter=0)
                    )
            else:
                with trio.move_on_after(0.5):
                    await client.request(b"A", backoff=Backoff(initial=5, jitter=0))
            times["A"] = trio.current_time()

        async def b():
            reply = await client.request(
                b"B", attempts=1, backoff=Backoff(initial=1.5, jitter=0)
            )
            times["B"] = (reply.data, trio.current_time())

        async with trio.open_nursery() as requests:
            requests.start_soon(a)
            await trio.testing.wait_all_tasks_blocked()
            requests.start_soon(b)
    assert times == {"A": 0.5, "B": (b"B", 0.7)}
    assert client.stats.replies == 1


async def test_the_reader_role_passes_along_a_chain_of_requests_that_give_up(
    virtual_network, autojump_clock, nursery
):
    """A reads and gives up at 0.5 s, B takes over and gives up at 0.6 s,
    C (parked all along) gets its reply at 0.7 s."""
    server = await start_echo(nursery, answer_only_b)
    got = []
    async with open_udp_client("127.0.0.1", server.port, match=first_byte) as client:

        async def gives_up(data, after):
            with pytest.raises(RequestTimeout):
                await client.request(
                    data, attempts=1, backoff=Backoff(initial=after, jitter=0)
                )

        async def c():
            reply = await client.request(b"B", backoff=Backoff(initial=5))
            got.append((reply.data, trio.current_time()))

        async with trio.open_nursery() as requests:
            for task in (
                functools.partial(gives_up, b"A", 0.5),
                functools.partial(gives_up, b"Z", 0.6),
                c,
            ):
                requests.start_soon(task)
                await trio.testing.wait_all_tasks_blocked()
    assert got == [(b"B", 0.7)]


async def test_reply_reaches_a_parked_request_on_real_loopback():
    async with trioudp.open_udp_socket("127.0.0.1", 0) as server:
        port = server.local_address[1]
        async with open_udp_client("127.0.0.1", port, match=first_byte) as client:
            a_gave_up = trio.Event()

            async def a():
                with pytest.raises(RequestTimeout):
                    await client.request(
                        b"A", attempts=1, backoff=Backoff(initial=0.05, jitter=0)
                    )
                a_gave_up.set()

            async def serve():
                for _ in range(2):
                    datagram = await server.receive()
                    if datagram.data == b"B":
                        peer = datagram.peer
                await a_gave_up.wait()
                await server.send_to(b"B", peer)

            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(serve)
                    nursery.start_soon(a)
                    await trio.testing.wait_all_tasks_blocked()
                    reply = await client.request(
                        b"B", attempts=1, backoff=Backoff(initial=5, jitter=0)
                    )
            assert reply.data == b"B"


async def wait_for_pending_error(client):
    """Until the ICMP error is queued on the client's socket (no sleep)."""
    await trio.lowlevel.wait_readable(client.socket.trio_socket)


@pytest.mark.parametrize("match", [None, by_id], ids=["unmatched", "matched"])
async def test_stale_icmp_error_does_not_fail_a_request_sent_later(match):
    async with trioudp.open_udp_socket("127.0.0.1", 0) as gone:
        port = gone.local_address[1]
    async with open_udp_client("127.0.0.1", port, match=match) as client:
        await client.send(b"exit")
        with trio.fail_after(10):
            await wait_for_pending_error(client)
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(serve_udp, echo, port, host="127.0.0.1")
            )
            reply = await client.request(b"0001hello")
            assert reply.data == b"0001hello"
            assert server.stats.received == 1
            nursery.cancel_scope.cancel()
    assert client.stats.unreachable == 1
    assert client.stats.replies == 1


@pytest.mark.parametrize("match", [None, by_id], ids=["unmatched", "matched"])
async def test_stale_icmp_error_on_the_virtual_network(
    virtual_network, autojump_clock, nursery, match
):
    virtual_network.configure(latency=0.01)
    async with open_udp_client("127.0.0.1", 7000, match=match) as client:
        await client.send(b"exit")
        await trio.sleep(1)  # the ICMP error is back
        await nursery.start(functools.partial(serve_udp, echo, 7000, host="127.0.0.1"))
        start = trio.current_time()
        reply = await client.request(b"0001hello")
        assert reply.data == b"0001hello"
        assert trio.current_time() - start == pytest.approx(0.02)
    assert client.stats.unreachable == 1


async def test_icmp_error_after_the_request_was_sent_still_fails_it(
    virtual_network, autojump_clock, nursery
):
    """The other half: an error that follows a request's own send fails it."""
    virtual_network.configure(latency=0.01)
    async with open_udp_client("127.0.0.1", 7000, match=by_id) as client:
        with pytest.raises(PeerUnreachable):
            await client.request(b"0001hello")
        assert trio.current_time() == pytest.approx(0.02)


async def never_answer(datagram: trioudp.Datagram) -> None:
    await trio.sleep_forever()


async def icmp_taken_by_another_send(virtual_network, tick):
    """One round of the test below: when A and C stopped waiting, in ticks
    after the round's start."""
    failed = {}
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(serve_udp, never_answer, 0, host="127.0.0.1")
        )
        backoff = Backoff(initial=10, jitter=0)
        async with open_udp_client(
            "127.0.0.1", server.port, match=first_byte, backoff=backoff, attempts=1
        ) as client:
            start = float(math.ceil(trio.current_time()))

            async def request(data, at):
                await trio.sleep_until(start + at * tick)
                with contextlib.suppress(PeerUnreachable, RequestTimeout):
                    await client.request(data)
                failed[data] = (trio.current_time() - start) / tick

            async with trio.open_nursery() as requests:
                requests.start_soon(request, b"A", 0)
                await trio.sleep_until(start + 32 * tick)
                await server.shutdown(grace=0)
                requests.start_soon(request, b"C", 64)
                requests.start_soon(request, b"D", 66)
                await trio.sleep_until(start + 65.5 * tick)  # C's error is due
                virtual_network.configure(loss=1.0)
        virtual_network.configure(loss=0.0)
    return failed[b"A"], failed[b"C"]


async def test_a_reader_whose_icmp_error_another_request_took_fails_at_once(
    virtual_network, autojump_clock
):
    """A reads the socket for its reply (10 s timer) when the server goes
    away; C's datagram draws an ICMP error back at tick 66, and D's send at
    that moment may take it (the kernel hands a pending error to the next
    call, send or receive). D's send then fails A and C, and its retry draws
    no new error (lost, as a rate-limited ICMP would be). A must fail then,
    not sleep on the socket until its timer (it did, at 10 s, whenever D's
    send ran before A woke). Which runs first is Trio's coin to toss, so it
    is tossed 20 times (ticks of 1/64 s: exact floats, exact ties)."""
    tick = 1 / 64
    virtual_network.configure(latency=tick)
    ended = [await icmp_taken_by_another_send(virtual_network, tick) for _ in range(20)]
    assert ended == [(66, 66)] * 20


async def reply_taken_by_an_unmatched_request(tick):
    """One round of the test below: when A got its reply, in ticks."""

    async def echo_later(datagram):
        if datagram.data.startswith(b"A"):
            await trio.sleep(62 * tick)  # back at tick 64 (one tick each way)
            await datagram.reply(datagram.data)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(serve_udp, echo_later, 0, host="127.0.0.1")
        )
        backoff = Backoff(initial=10, jitter=0)
        async with open_udp_client(
            "127.0.0.1", server.port, backoff=backoff, attempts=1
        ) as client:
            start = float(math.ceil(trio.current_time()))
            got = []

            async def a():
                await trio.sleep_until(start)
                await client.request(b"A", match=first_byte)
                got.append((trio.current_time() - start) / tick)

            async def unmatched():
                await trio.sleep_until(start + 64 * tick)
                with contextlib.suppress(RequestTimeout):
                    await client.request(b"U", attempts=1)

            async with trio.open_nursery() as requests:
                requests.start_soon(a)
                requests.start_soon(unmatched)
        nursery.cancel_scope.cancel()
    return got[0]


async def test_a_reply_an_unmatched_request_routes_reaches_its_reader_at_once(
    virtual_network, autojump_clock
):
    """A (matched) reads the socket for its reply, which arrives at tick 64
    just as an unmatched request U starts: U first routes what is queued
    (stale replies are dropped, A's goes to A). A must have it then, not
    sleep on the emptied socket until its timer (10 s). Which of U and A
    runs first is Trio's coin to toss, so it is tossed 20 times."""
    tick = 1 / 64
    virtual_network.configure(latency=tick)
    ended = [await reply_taken_by_an_unmatched_request(tick) for _ in range(20)]
    assert ended == [64] * 20


async def test_huge_attempts_cost_nothing_up_front(monkeypatch):
    """10**12 attempts for a request answered at once: the schedule is lazy,
    budget() takes O(log n) steps (a counter on Backoff.base fails an
    up-front computation at once instead of letting it run for hours)."""
    calls = 0
    original = Backoff.base

    def counted(backoff, attempt):
        nonlocal calls
        calls += 1
        assert calls <= 1000, "the schedule is computed up front"
        return original(backoff, attempt)

    monkeypatch.setattr(Backoff, "base", counted)
    async with trio.open_nursery() as nursery:
        server = await start_echo(nursery)
        async with open_udp_client("127.0.0.1", server.port, attempts=10**12) as client:
            assert (await client.request(b"now")).data == b"now"
            assert calls == 1
            assert client.budget() == pytest.approx((63 + (10**12 - 6) * 60) * 1.1)
            assert client.budget(attempts=10**100) > 1e100
        nursery.cancel_scope.cancel()


async def late_duplicate_echo(datagram):
    """Answers after 1.2 s: the request has been retransmitted at 1.0 s, so
    each request gets a second, late reply 1 s after the first."""
    await trio.sleep(1.2)
    await datagram.reply(datagram.data)


async def test_unmatched_request_discards_replies_queued_before_it_is_sent(
    virtual_network, autojump_clock, nursery
):
    server = await start_echo(nursery, late_duplicate_echo)
    async with open_udp_client(
        "127.0.0.1", server.port, backoff=Backoff(initial=1, jitter=0)
    ) as client:
        first = await client.request(b"one")
        assert (first.data, trio.current_time()) == (b"one", 1.2)
        await trio.sleep(2)  # the late reply to the retransmission is queued (2.2)
        second = await client.request(b"two")
        assert (second.data, trio.current_time()) == (b"two", 4.4)
    assert client.stats.discarded == 1


async def test_unmatched_request_discards_stale_replies_on_real_loopback():
    async with trioudp.open_udp_socket("127.0.0.1", 0) as server:
        port = server.local_address[1]
        async with open_udp_client("127.0.0.1", port) as client:

            async def serve():
                request = await server.receive()
                await server.send_to(b"one", request.peer)
                await first_done.wait()
                await server.send_to(b"one, late", request.peer)
                stale_queued.set()
                request = await server.receive()
                await server.send_to(request.data, request.peer)

            first_done, stale_queued = trio.Event(), trio.Event()
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(serve)
                    assert (await client.request(b"one")).data == b"one"
                    first_done.set()
                    await stale_queued.wait()
                    await trio.lowlevel.wait_readable(client.socket.trio_socket)
                    assert (await client.request(b"two")).data == b"two"
            assert client.stats.discarded == 1


async def test_bad_client_settings_fail_at_construction(virtual_network):
    with pytest.raises(TypeError, match="backoff must be a trioudp.Backoff"):
        async with open_udp_client("127.0.0.1", 9, backoff=1.0):
            pass  # pragma: no cover
    with pytest.raises(TypeError, match="match must be a function"):
        async with open_udp_client("127.0.0.1", 9, match=b"id"):
            pass  # pragma: no cover
    async with open_udp_client("127.0.0.1", 9) as client:
        with pytest.raises(TypeError, match="backoff must be a trioudp.Backoff"):
            await client.request(b"x", backoff={"initial": 1})
        with pytest.raises(TypeError, match="backoff must be a trioudp.Backoff"):
            client.budget(backoff=2.0)
        with pytest.raises(ValueError, match="attempts must be an int >= 1, not 1.5"):
            await client.request(b"x", attempts=1.5)


@requires_ipv6
async def test_a_client_to_an_ipv4_mapped_address_reaches_the_ipv4_peer(nursery):
    """A dual-stack server sees IPv4 peers as ::ffff:a.b.c.d; a client
    opened to such an address (as a program would, from a datagram's peer)
    reaches it (it failed with a bare OSError, ENETUNREACH: the client's
    IPv6 socket was IPv6-only)."""
    server = await nursery.start(functools.partial(serve_udp, echo, 0, host="::"))
    async with open_udp_client("::ffff:127.0.0.1", server.port) as client:
        reply = await client.request(b"mapped")
        assert reply.data == b"mapped"
        assert client.peer[:2] == ("::ffff:127.0.0.1", server.port)


async def test_port_zero_is_an_invalid_destination(virtual_network):
    with pytest.raises(trioudp.InvalidAddress, match="port 0 is not a destination"):
        async with open_udp_client("127.0.0.1", 0):
            pass  # pragma: no cover


@pytest.mark.parametrize("fast", [True, False], ids=["real socket", "virtual"])
async def test_a_client_is_a_trio_async_resource(fast, nursery):
    """aclose_forcefully closes it even when cancelled; then a request
    raises ClosedResourceError, as on any closed Trio resource."""
    with contextlib.ExitStack() as stack:
        if not fast:
            stack.enter_context(VirtualNetwork(seed=1).install())
        server = await start_echo(nursery, echo)
        async with open_udp_client("127.0.0.1", server.port) as client:
            assert isinstance(client, trio.abc.AsyncResource)
            assert (await client.request(b"hi")).data == b"hi"
            with trio.CancelScope() as scope:
                scope.cancel()
                await trio.aclose_forcefully(client)
            with pytest.raises(trio.ClosedResourceError):
                await client.request(b"after")


async def test_parked_requests_retransmit_each_on_its_own_schedule(
    virtual_network, autojump_clock
):
    """Only the reader's wait has a timer; the parked requests' attempts
    still end exactly at their own deadlines, which interleave."""
    virtual_network.configure(loss=1.0)
    schedules = {
        b"A": Backoff(initial=0.3, jitter=0),  # sends at 0, 0.3, 0.9; ends 2.1
        b"BB": Backoff(initial=0.5, multiplier=1.5, jitter=0),  # 0, 0.5, 1.25; 2.375
        b"CCC": Backoff(initial=0.2, multiplier=3, jitter=0),  # 0, 0.2, 0.8; 2.6
    }
    ended = {}
    async with open_udp_client("127.0.0.1", 9, match=first_byte) as client:

        async def one(data):
            with pytest.raises(RequestTimeout) as info:
                await client.request(data, backoff=schedules[data])
            ended[data] = (trio.current_time(), info.value.elapsed)

        async with trio.open_nursery() as requests:
            for data in schedules:
                requests.start_soon(one, data)
    sends = {}
    for event in virtual_network.trace:
        if event.kind == "send":
            sends.setdefault(event.size, []).append(event.time)
    assert sends == {
        1: pytest.approx([0, 0.3, 0.9], abs=1e-9),
        2: pytest.approx([0, 0.5, 1.25], abs=1e-9),
        3: pytest.approx([0, 0.2, 0.8], abs=1e-9),
    }
    assert ended == {
        b"A": pytest.approx((2.1, 2.1), abs=1e-9),
        b"BB": pytest.approx((2.375, 2.375), abs=1e-9),
        b"CCC": pytest.approx((2.6, 2.6), abs=1e-9),
    }
    assert client.stats.retransmitted == 6


async def test_a_cancelled_parked_request_leaves_the_reader_and_the_rest(
    virtual_network, autojump_clock, nursery
):
    """B reads; A parks and is cancelled at 0.3 s; C parks after that and
    still times out on its schedule; B gets its reply at 0.7 s."""
    server = await start_echo(nursery, answer_only_b)
    times = {}
    async with open_udp_client("127.0.0.1", server.port, match=first_byte) as client:

        async def b():
            reply = await client.request(b"B", backoff=Backoff(initial=5, jitter=0))
            times["B"] = (reply.data, trio.current_time())

        async def a():
            with trio.move_on_after(0.3):
                await client.request(b"A", backoff=Backoff(initial=5, jitter=0))
            times["A"] = trio.current_time()

        async def c():
            await trio.sleep(0.4)
            with pytest.raises(RequestTimeout):
                await client.request(
                    b"C", attempts=1, backoff=Backoff(initial=0.2, jitter=0)
                )
            times["C"] = trio.current_time()

        async with trio.open_nursery() as requests:
            requests.start_soon(b)
            await trio.testing.wait_all_tasks_blocked()
            requests.start_soon(a)
            requests.start_soon(c)
    assert times == {
        "A": 0.3,
        "B": (b"B", 0.7),
        "C": pytest.approx(0.6, abs=1e-9),
    }
    assert client.stats.replies == 1
    assert client.stats.timeouts == 1


async def test_the_timers_of_finished_requests_do_not_pile_up(
    virtual_network, autojump_clock, nursery
):
    """Thousands of answered requests while one waits 100 s: the client's
    timers stay a few per waiting request, and the long one still ends on
    time."""
    virtual_network.configure(latency=0.001)

    async def all_but_z(datagram):
        if datagram.data != b"Z":
            await datagram.reply(datagram.data)

    server = await start_echo(nursery, all_but_z)
    async with open_udp_client("127.0.0.1", server.port, match=first_byte) as client:
        outcome = {}

        async def long_one():
            with pytest.raises(RequestTimeout):
                await client.request(
                    b"Z",
                    attempts=1,
                    backoff=Backoff(initial=100, maximum=100, jitter=0),
                )
            outcome["Z"] = trio.current_time()

        async with trio.open_nursery() as requests:
            requests.start_soon(long_one)
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(3000):
                reply = await client.request(b"B", backoff=Backoff(initial=5))
                assert reply.data == b"B"
            assert len(client._deadlines) <= 2 * 2 + 64
    assert client.stats.replies == 3000
    assert outcome == {"Z": 100.0}


async def test_sixty_four_tasks_share_a_client_on_real_loopback(nursery):
    """The reader drains every queued reply and hands each to its request;
    the role passes as readers get theirs (real socket: the fast path)."""
    server = await start_echo(nursery)
    tasks, each = 64, 40
    async with open_udp_client("127.0.0.1", server.port, match=by_id) as client:

        async def ask(task):
            for sequence in range(each):
                payload = (task << 16 | sequence).to_bytes(4, "big") + bytes(60)
                reply = await client.request(payload)
                assert reply.data == payload

        with trio.fail_after(30):
            async with trio.open_nursery() as requests:
                for task in range(tasks):
                    requests.start_soon(ask, task)
        assert client.stats.replies == tasks * each
        assert client.stats.timeouts == 0
        assert not client._parked
        assert client._reader is None
