"""trioudp._fastpath: the flat receive-and-answer loop keeps other tasks
running, and has exactly the outcomes of the same steps written plainly."""

import contextlib
import ctypes
import errno
import itertools
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

from .helpers import echo, echo_answer, start


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
    taken = 0
    batching = False
    held_since = now
    try:
        while taken < intake.batch_size and not intake.stopping:
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
            elif not taken % _fastpath._CLOCK_EVERY:
                held_since = _fastpath._bound_reply_delay(outbox, held_since)
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
