"""The fast path: a server's receiving task takes the datagrams a real socket holds and answers each as it comes.

This is the datagram's hot path, from the kernel to the reply, in three
modules: this one (steps 1-5), ``_outbox`` (6) and ``_mmsg`` (7).

0. **bound the batch**: before each datagram after the first, read the
   clock; the batch ends once it has run for ``batch_time`` (and held
   replies leave once they have waited ``REPLY_DELAY``).
1. **receive**: ``recvmsg`` on the socket's non-blocking twin, screened
   (``_screening.Screen.receive``: forged sources, and broadcast or
   multicast the socket did not ask for, come with a stand-in peer of port
   0; the destination is left in ``Screen.destination``); errors are
   counted (``Inbox.receive_failed``).
2. **count and wrap**: an oversize datagram is counted and dropped; the rest
   are counted as received and become a :class:`Datagram`
   (``Datagram._received``) whose origin is the socket's ``Outbox``.
3. **admit**: ``Admission.admit``, when protection is on or the source port
   is 0 (which screening's stand-ins have).
4. **queue or run**: queued if handler slots are taken
   (``Handlers.enqueue``); else a :class:`Responder`'s function is called,
   or an async handler is stepped eagerly (``_handlers``) until it finishes
   or suspends.
5. **reply**: a Responder's small answer joins the reply batch
   (``SendBatch.add``) unless a guard must see it first (amplification, or
   the loop guard for a peer from a port below ``Outbox.guarded_below`` or
   from ``Outbox.guarded_port``);
   an async handler's ``Datagram.reply`` goes through ``Outbox.reply``.
6. **send the batch**: ``Outbox.end_batch`` once the batch is taken, or
   ``Outbox.send_held`` every ``REPLY_DELAY`` (step 0).
7. **sendmmsg**: ``SendBatch.send``, one system call for the batch.

:func:`take_ready` runs once per datagram under load, so steps 1-5 are
written out inline: each function call per datagram measurably costs
(calling ``Handlers.start`` took 14% more of the server's user CPU: 6.3
against 5.4 us per echoed datagram). ``tests/test_fastpath.py`` runs it and
the same steps written plainly on the same inputs and compares every outcome.
"""

from __future__ import annotations

import enum
import types
from typing import TYPE_CHECKING, Final, Protocol

import trio

from ._datagram import Datagram
from ._mmsg import MAX_BATCHED_SIZE
from ._responder import Responder, checked_answer

if TYPE_CHECKING:
    from ._admission import Admission
    from ._handlers import Handlers
    from ._mmsg import SendBatch
    from ._outbox import Outbox
    from ._socket import UDPSocket

__all__ = ["HANDED_OVER", "REPLY_DELAY", "HandedOver", "Receiving", "take_ready"]

_Coroutine = types.CoroutineType

#: Longest a reply is held back to leave with its batch's others (seconds;
#: checked before each datagram). An echo handles a batch of 64 in well under
#: this; handlers that take longer have their replies sent sooner.
REPLY_DELAY = 0.001


class HandedOver(enum.Enum):
    """What :func:`take_ready` returns when a handler suspended: the task
    that called it has finished that handler and no longer receives (another
    task does, see ``Intake.hand_over``)."""

    HANDED_OVER = "handed over"


HANDED_OVER: Final = HandedOver.HANDED_OVER


class Receiving(Protocol):
    """What the fast path needs of the server it takes datagrams for
    (``_intake.Intake``)."""

    handlers: Handlers
    admission: Admission
    batch_size: int
    #: Seconds a batch may run before it ends (checked before each datagram).
    batch_time: float
    #: True once shutdown has begun: receiving stops at once.
    stopping: bool

    def hand_over(self, sock: UDPSocket) -> None:
        """Let a new task receive on ``sock`` (this one has a handler to finish)."""

    def send_leftover_soon(self, outbox: Outbox, replies: SendBatch) -> None:
        """Have a task of its own send ``replies`` (``Outbox.send_leftover``)."""


async def take_ready(intake: Receiving, sock: UDPSocket) -> int | HandedOver:
    """Take up to ``batch_size`` datagrams the kernel holds for ``sock``,
    handling each as it comes so replies leave at once (clients pipeline),
    for ``batch_time`` seconds at most (one handler call can overrun it).

    Returns how many it took, or :data:`HANDED_OVER` if a handler suspended
    and another task now receives.
    """
    inbox = sock._inbox
    outbox = sock._outbox
    fast = inbox.fast
    assert fast is not None
    screen = inbox.screen
    recvfrom = inbox.screened_recvfrom
    # Intake.run screens every socket before it receives.
    assert screen is not None
    assert recvfrom is not None
    bufsize = inbox.bufsize
    local = inbox.local or inbox.local_for_datagrams()
    make_datagram = Datagram._received
    handlers = intake.handlers
    handler = handlers.handler
    respond = handler.respond if type(handler) is Responder else None
    reply_now = outbox.reply_now
    # The outbox's twin, as Outbox._reply_nowait sends with.
    assert outbox.fast is not None
    sendto = outbox.fast.sendto
    max_payload = outbox.max_payload
    guard = outbox.guard
    guarded_below = outbox.guarded_below
    guarded_port = outbox.guarded_port
    timed = handlers.timeout is not None
    queue = handlers.queue
    max_in_flight = handlers.max_in_flight
    screening = intake.admission.active
    admit = intake.admission.admit
    limit = intake.batch_size
    clock = trio.lowlevel.current_clock().current_time
    now = clock()
    ends = now + intake.batch_time
    taken = 0
    batching = False
    held_since = now
    try:
        # A handler of this batch may begin the shutdown: receiving
        # stops at once, so the rest stays in the kernel.
        while taken < limit and not intake.stopping:
            if taken:
                # 0. bound the batch. Every datagram, not every few: one
                # slow call among quick ones must not hold the rest of
                # the program for a batch (the read costs ~70 ns).
                now = clock()
                if now >= ends:
                    break
                if batching and now - held_since >= REPLY_DELAY:
                    # Slow handlers must not hold the first replies back.
                    outbox.send_held()
                    held_since = now
            # 1. receive
            try:
                data, peer = recvfrom(bufsize)
            except BlockingIOError:
                break
            except OSError as exc:
                if not inbox.receive_failed(exc):
                    break
                continue
            taken += 1
            # 2. count and wrap (Inbox.accept, inline)
            if len(data) >= bufsize:
                inbox.dropped_oversize += 1
                continue
            inbox.received += 1
            datagram = make_datagram(data, peer, local, now, outbox, screen.destination)
            # 3. admit
            if (screening or not peer[1]) and not admit(datagram):
                continue
            # 4. queue or run
            if queue or handlers.in_flight >= max_in_flight:
                handlers.enqueue(datagram)
                continue
            if respond is not None:
                # A Responder: a plain call, its reply sent or batched
                # (or held for room) without waiting.
                rest = None
                try:
                    answer = respond(datagram)
                    if type(answer) is not bytes and answer is not None:
                        answer = checked_answer(answer)
                    if answer is not None:
                        # 5. reply. The common case written out: a small
                        # reply joins the batch (what Outbox.reply_now
                        # does, two calls less).
                        replies = outbox.collecting
                        try:
                            joined = (
                                replies is not None
                                and guard is None
                                and peer[1] >= guarded_below
                                and peer[1] != guarded_port
                                and type(answer) is bytes
                                and len(answer) <= MAX_BATCHED_SIZE
                                and replies.add(answer, peer)
                            )
                        except ValueError:  # an address it cannot encode
                            joined = False
                        if not joined:
                            if (
                                guard is None
                                and peer[1] >= guarded_below
                                and peer[1] != guarded_port
                                and type(answer) is bytes
                                and len(answer) <= max_payload
                                and (replies is None or not replies.peers)
                                and not outbox.closed
                            ):
                                # A large reply, or the first of a batch,
                                # with nothing held to go before it: sent
                                # at once (Outbox._reply_nowait, inline).
                                try:
                                    sendto(answer, peer)
                                except OSError as exc:
                                    outbox.reply_refused(answer, peer, exc)
                                else:
                                    outbox.sent += 1
                                    outbox.replied += 1
                            else:
                                # An answer the reply refuses (larger than
                                # a datagram: its size may follow the
                                # peer's) fails this datagram only, as in
                                # an async handler.
                                reply_now(answer, peer)
                except Exception:
                    handlers.failed(datagram)
                    continue
                except BaseException as exc:
                    handlers.count_base_exception(datagram, exc)
                    raise
                handlers.handled += 1
            elif timed:
                rest = handlers.start(datagram)
            else:
                # Handlers.start, inline (its in_flight accounting included).
                handlers.in_flight += 1
                try:
                    awaitable = handler(datagram)
                    coro = (
                        awaitable
                        if type(awaitable) is _Coroutine
                        else awaitable.__await__()
                    )
                    yielded = coro.send(None)
                except StopIteration:
                    handlers.in_flight -= 1
                    handlers.handled += 1
                    rest = None
                except BaseException as exc:
                    handlers.raised(datagram, exc)
                    rest = None
                else:
                    rest = handlers.rest_of(datagram, coro, yielded)
            if rest is not None:
                # The handler suspended: its trap goes to Trio with
                # nothing awaited first (Invariants, _handlers).
                leftover = outbox.end_batch_nowait()
                if leftover is not None:
                    intake.send_leftover_soon(outbox, leftover)
                intake.hand_over(sock)
                await rest
                return HANDED_OVER
            # 6. the batch
            if not batching:
                # The first reply has left at once: under light traffic
                # it is the only one, and holding it would add latency.
                batching = True
                outbox.begin_batch()
    except BaseException:
        outbox.abandon_batch()
        raise
    await outbox.end_batch()
    return taken
