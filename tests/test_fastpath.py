"""trioudp._fastpath: the flat receive-and-answer loop keeps other tasks
running, and has exactly the outcomes of the same steps written plainly."""

import contextlib
import ctypes
import errno
import itertools
import math
import socket

import attrs
import pytest
import trio
import trio.testing

import trioudp
from trioudp import AmplificationGuard, Overflow, RateLimit, Responder, _fastpath, _mmsg
from trioudp._admission import Admission
from trioudp._fastpath import HANDED_OVER, take_ready
from trioudp._handlers import Handlers
from trioudp._screening import FORGED_SOURCE

from .helpers import echo, echo_answer, flood, start


async def test_fairness_under_a_flood_on_the_fast_path(nursery):
    """While the server drains a full kernel queue, another task still runs at
    least every 2 batches, and shutdown takes effect within a batch."""
    batch = 16
    handled_at_tick = []
    server = await start(nursery, echo, batch_size=batch)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setblocking(False)
    with sender:
        sender.bind(("127.0.0.1", 0))
        for _round in range(5):
            for i in range(150):
                sender.sendto(b"%d" % i, ("127.0.0.1", server.port))
            target = server.stats.received + 150
            while server.stats.handled < target:
                handled_at_tick.append(server.stats.handled)
                await trio.lowlevel.checkpoint()
        gaps = [b - a for a, b in itertools.pairwise(handled_at_tick)]
        assert max(gaps) <= 2 * batch
        for i in range(150):
            sender.sendto(b"%d" % i, ("127.0.0.1", server.port))
        await trio.lowlevel.checkpoint()
        handled_before = server.stats.handled
        await server.shutdown(grace=0)
        assert server.stats.handled - handled_before <= batch


async def lateness_under_a_slow_flood(nursery, clock, **settings):
    """Flood a server whose Responder costs 5 ms (of mock time) per datagram
    with 100 datagrams queued before it runs; meanwhile a 10 ms timer ticks
    and another server is asked once. Returns the timer's lateness at each
    tick and the probe's round trip, in mock seconds.

    The mock clock moves only when the handler jumps it, or (autojump) once
    the flood is over and nothing is ready: every second of lateness is a
    handler's, none the machine's."""

    def slow(datagram):
        clock.jump(0.005)
        return datagram.data

    round_trip = []

    async def probe(port):
        await trio.sleep(0.050)
        async with trioudp.open_udp_socket("127.0.0.1", 0) as sock:
            sent_at = trio.current_time()
            await sock.send_to(b"probe", ("127.0.0.1", port))
            assert (await sock.receive()).data == b"probe"
            round_trip.append(trio.current_time() - sent_at)

    probed = await start(nursery, Responder(echo_answer))
    flooded = await start(nursery, Responder(slow), **settings)
    async with trio.open_nursery() as watchers:
        watchers.start_soon(probe, probed.port)
        # Queued in the kernel before any receiving task runs again.
        with flood(flooded.port, [b"%d" % i for i in range(100)]):
            ticks = await ticks_until(lambda: flooded.stats.handled == 100)
    return ticks, round_trip[0]


async def ticks_until(done):
    """How late a 10 ms timer wakes, at each tick until ``done()``."""
    ticks = []
    while not done():
        deadline = trio.current_time() + 0.010
        await trio.sleep_until(deadline)
        ticks.append(trio.current_time() - deadline)
    return ticks


async def test_a_slow_handler_lets_timers_and_other_sockets_run(
    nursery, autojump_clock
):
    """A batch ends after batch_time, not only after batch_size datagrams:
    under a flood on a 5 ms handler a 10 ms timer is late by about one
    handler call, not a batch of 64 (320 ms), and another socket's probe is
    answered as soon."""
    ticks, round_trip = await lateness_under_a_slow_flood(
        nursery, autojump_clock, batch_time=0.002
    )
    # A batch: one 5 ms call (the clock passes batch_time during it). The
    # timer, or the probe's server, runs after it or after the next one.
    assert len(ticks) >= 40  # the 500 ms of the flood, 10 ms at a time
    assert max(ticks) <= 0.010
    assert round_trip <= 0.020


async def test_without_a_time_bound_a_slow_handler_holds_a_whole_batch(
    nursery, autojump_clock
):
    """The same flood with batches bounded by count alone: what the test
    above guards against (and proof that it can fail)."""
    ticks, _ = await lateness_under_a_slow_flood(
        nursery, autojump_clock, batch_time=math.inf
    )
    assert max(ticks) >= 64 * 0.005 - 0.010


async def test_the_queue_is_served_for_batch_time_at_most(
    virtual_network, autojump_clock, nursery
):
    """Datagrams that queued while every handler slot was taken are handled
    in batches bounded by batch_time too, so a timer stays on time."""
    release = trio.Event()

    async def handler(datagram):
        if datagram.data == b"first":
            await release.wait()
        autojump_clock.jump(0.005)  # 5 ms of work that never suspends

    server = await start(
        nursery, handler, max_in_flight=1, queue_size=100, batch_time=0.002
    )
    async with trioudp.open_udp_socket("127.0.0.1", 0) as client:
        await client.send_to(b"first", ("127.0.0.1", server.port))
        await trio.testing.wait_all_tasks_blocked()
        for i in range(50):
            await client.send_to(b"%d" % i, ("127.0.0.1", server.port))
        await trio.testing.wait_all_tasks_blocked()
    assert server.stats.queued == 50
    release.set()
    ticks = await ticks_until(lambda: server.stats.handled == 51)
    assert len(ticks) >= 20  # the 250 ms the queue takes, 10 ms at a time
    assert max(ticks) <= 0.010


# ---- take_ready against the same steps written plainly ----------------------


async def take_ready_plainly(intake, sock):
    """What take_ready does, through the functions it has written out inline
    (Inbox.accept, Handlers.start, Responder.answer and Outbox.reply_now):
    the reference its outcomes are compared with."""
    inbox, outbox = sock._inbox, sock._outbox
    recvfrom = inbox.screened_recvfrom
    screen = inbox.screen
    handlers, admission = intake.handlers, intake.admission
    handler = handlers.handler
    now = trio.current_time()
    ends = now + intake.batch_time
    taken = 0
    batching = False
    held_since = now
    try:
        while taken < intake.batch_size and not intake.stopping:
            if taken:
                now = trio.current_time()
                if now >= ends:
                    break
                if batching and now - held_since >= _fastpath.REPLY_DELAY:
                    outbox.send_held()
                    held_since = now
            try:
                data, peer = recvfrom(inbox.bufsize)
            except BlockingIOError:
                break
            except OSError as exc:
                if not inbox.receive_failed(exc):
                    break
                continue
            taken += 1
            datagram = inbox.accept(data, peer, now, screen.destination)
            if datagram is None:
                continue
            if (admission.active or not peer[1]) and not admission.admit(datagram):
                continue
            if handlers.queue or handlers.in_flight >= handlers.max_in_flight:
                handlers.enqueue(datagram)
                continue
            if type(handler) is Responder:
                rest = None
                try:
                    answer = handler.answer(datagram)
                    if answer is not None:
                        outbox.reply_now(answer, peer)
                except Exception:
                    handlers.failed(datagram)
                    continue
                except BaseException as exc:
                    handlers.count_base_exception(datagram, exc)
                    raise
                handlers.handled += 1
            else:
                rest = handlers.start(datagram)
            if rest is not None:
                leftover = outbox.end_batch_nowait()
                if leftover is not None:
                    intake.send_leftover_soon(outbox, leftover)
                intake.hand_over(sock)
                await rest
                return HANDED_OVER
            if not batching:
                batching = True
                outbox.begin_batch()
    except BaseException:
        outbox.abandon_batch()
        raise
    await outbox.end_batch()
    return taken


@attrs.define
class FakeIntake:
    """What take_ready needs of a server (``_fastpath.Receiving``), recording
    what it is asked to do."""

    handlers: Handlers
    admission: Admission
    batch_size: int
    batch_time: float = math.inf
    stopping: bool = False
    handed_over: int = 0
    leftovers: list = attrs.Factory(list)

    def hand_over(self, sock):
        self.handed_over += 1

    def send_leftover_soon(self, outbox, replies):
        self.leftovers.append(len(replies))


def responder(function):
    return lambda intake: Responder(function)


def answer_by_payload(datagram):
    data = datagram.data
    if data == b"none":
        return None
    if data == b"boom":
        raise ValueError("boom")
    if data == b"text":
        return "text"  # not bytes: a handler error
    if data == b"array":
        return bytearray(b"array!")
    if data == b"view":
        return memoryview(b"view!")
    if data == b"huge":
        return b"h" * 70_000  # larger than a datagram: a handler error
    return data


def exits_on_5(datagram):
    if datagram.data == b"5":
        raise SystemExit(5)  # not an Exception: it propagates
    return datagram.data


def async_handler(suspend_on=(), stop_on=()):
    def make(intake):
        async def handler(datagram):
            if datagram.data in stop_on:
                intake.stopping = True
            if datagram.data == b"boom":
                raise ValueError("boom")
            if datagram.data in suspend_on:
                await trio.lowlevel.checkpoint()
            await datagram.reply(datagram.data)

        return handler

    return make


MIXED = [b"a", b"none", b"boom", b"forged", b"text", b"x" * 3000, b"array", b"view"]
MIXED += [b"y" * 200, b"huge", b"", b"z" * 2048, b"zz" * 1025, b"last"]
PLAIN = [b"%d" % i for i in range(20)]

SCENARIOS = {
    "responder": (responder(answer_by_payload), MIXED, {}),
    "responder, small batch": (responder(answer_by_payload), MIXED, {"batch_size": 5}),
    "responder, queue": (
        responder(echo_answer),
        PLAIN,
        {"max_in_flight": 0, "queue_size": 8},
    ),
    "responder, rate limit": (
        responder(echo_answer),
        PLAIN,
        {"rate_limit": RateLimit(rate=1, burst=5)},
    ),
    "responder, amplification guard": (
        responder(lambda datagram: datagram.data * 40),
        PLAIN,
        {"amplification_factor": 3},
    ),
    "async": (async_handler(), MIXED, {}),
    "async, timed": (async_handler(), MIXED, {"handler_timeout": 5}),
    "async, suspends": (async_handler(suspend_on={b"7"}), PLAIN, {}),
    "async, suspends, queue": (
        async_handler(suspend_on={b"7"}),
        PLAIN,
        {"max_in_flight": 1, "queue_size": 4},
    ),
    "async, stops the server": (async_handler(stop_on={b"5"}), PLAIN, {}),
    "async, suspends, send buffer full": (
        async_handler(suspend_on={b"7"}),
        PLAIN,
        {"sendmmsg_refusals": 1},
    ),
    "responder, raises SystemExit": (responder(exits_on_5), PLAIN, {}),
    "responder, send buffer full": (
        responder(echo_answer),
        PLAIN,
        {"sendmmsg_refusals": 2},
    ),
}


@contextlib.contextmanager
def send_buffer_full(refusals):
    """The first ``refusals`` sendmmsg calls find the send buffer full."""
    real = _mmsg._sendmmsg
    left = [refusals]

    def sendmmsg(fd, headers, count, flags):
        if left[0]:
            left[0] -= 1
            ctypes.set_errno(errno.EAGAIN)
            return -1
        return real(fd, headers, count, flags)

    _mmsg._sendmmsg = sendmmsg
    try:
        yield
    finally:
        _mmsg._sendmmsg = real


def forging(receive):
    """A screened receive that also reports the datagram b"forged" as forged."""

    def recvfrom(bufsize):
        data, peer = receive(bufsize)
        return (data, FORGED_SOURCE) if data == b"forged" else (data, peer)

    return recvfrom


async def outcome(take, make_handler, payloads, *, batch_size=64, **settings):
    """Everything that can be observed after one ``take(intake, sock)`` on a
    socket that holds ``payloads``: the return value, every counter, what is
    queued and what was handed on, and the replies the peer gets."""
    settings = dict(settings)
    guard = settings.pop("amplification_factor", None)
    refusals = settings.pop("sendmmsg_refusals", 0)
    async with trioudp.open_udp_socket("127.0.0.1", 0, max_datagram_size=2500) as sock:
        handlers = Handlers(
            echo,
            max_in_flight=settings.pop("max_in_flight", 64),
            queue_size=settings.pop("queue_size", 64),
            overflow=Overflow.DROP_NEWEST,
            handler_timeout=settings.pop("handler_timeout", None),
        )
        admission = Admission(
            rate_limit=settings.pop("rate_limit", None),
            access=None,
            guarded=guard is not None,
        )
        intake = FakeIntake(handlers, admission, batch_size)
        handlers.handler = make_handler(intake)
        if guard is not None:
            sock._outbox.guard = AmplificationGuard(guard)
        sock._inbox.screen_sources()
        sock._inbox.screened_recvfrom = forging(sock._inbox.screened_recvfrom)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("127.0.0.1", 0))
            for payload in payloads:
                peer.sendto(payload, sock.local_address)
            with send_buffer_full(refusals):
                try:
                    result = await take(intake, sock)
                except SystemExit as exc:
                    result = ("raised", repr(exc))
            await trio.testing.wait_all_tasks_blocked()
            peer.setblocking(False)
            replies = []
            with contextlib.suppress(BlockingIOError):
                while True:
                    replies.append(peer.recv(70_000))
        inbox, outbox = sock._inbox, sock._outbox
        return {
            "result": result,
            "replies": replies,
            "left in the kernel": len(payloads)
            - inbox.received
            - inbox.dropped_oversize,
            "socket": sock.stats,
            "queued": [datagram.data for datagram in handlers.queue],
            "handlers": {
                name: getattr(handlers, name)
                for name in (
                    "in_flight",
                    "handled",
                    "handler_errors",
                    "handler_timeouts",
                    "dropped_queue_full",
                    "dropped_shutdown",
                )
            },
            "admission": vars(admission) | {"_limiter": None},
            "handed over": intake.handed_over,
            "leftovers": intake.leftovers,
            "stopping": intake.stopping,
            "batch": outbox.collecting,
        }


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_take_ready_has_the_outcomes_of_the_plain_steps(scenario):
    make_handler, payloads, settings = SCENARIOS[scenario]
    fast = await outcome(take_ready, make_handler, payloads, **settings)
    plain = await outcome(take_ready_plainly, make_handler, payloads, **settings)
    assert fast == plain
    # The scenarios do reach what they are named for.
    assert fast["socket"].received > 0
    assert fast["batch"] is None


def test_the_scenarios_reach_every_branch():
    """Each outcome the comparison covers happens in some scenario: a
    comparison of scenarios where nothing happens would prove nothing."""
    seen = {}

    async def main():
        for scenario, (make_handler, payloads, settings) in SCENARIOS.items():
            seen[scenario] = await outcome(
                take_ready, make_handler, payloads, **dict(settings)
            )

    trio.run(main)
    assert any(o["result"] is HANDED_OVER for o in seen.values())
    assert ("raised", "SystemExit(5)") in [o["result"] for o in seen.values()]
    assert any(o["queued"] for o in seen.values())
    assert any(o["left in the kernel"] for o in seen.values())
    assert any(o["stopping"] for o in seen.values())
    assert any(o["socket"].dropped_oversize for o in seen.values())
    assert any(o["socket"].dropped_amplification for o in seen.values())
    assert any(o["admission"]["dropped_rate_limited"] for o in seen.values())
    assert any(o["admission"]["dropped_forged"] for o in seen.values())
    assert any(o["leftovers"] for o in seen.values())
    for counter in ("handled", "handler_errors", "dropped_queue_full"):
        assert any(o["handlers"][counter] for o in seen.values()), counter
