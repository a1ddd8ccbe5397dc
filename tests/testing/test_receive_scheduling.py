"""Schedule and cancel points of virtual sockets match trio's real sockets.

A receive that finds a datagram queued takes one cancel point and one
schedule point; a receive that must wait is woken by the datagram and returns
it without yielding again (trio's real sockets do the same after
``wait_readable``), which halves the scheduler passes of an echo round trip.
"""

import random
import socket

import trio
import trio.testing

from trioudp._trio_private import BatchShuffler


async def pair():
    a = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await a.bind(("127.0.0.1", 0))
    await b.bind(("127.0.0.1", 0))
    return a, b


class StepCounter(trio.abc.Instrument):
    def __init__(self):
        self.steps = {}

    def before_task_step(self, task):
        self.steps[task.name] = self.steps.get(task.name, 0) + 1


async def test_a_receive_that_waited_returns_without_another_schedule_point(
    virtual_network,
):
    a, b = await pair()
    counter = StepCounter()
    trio.lowlevel.add_instrument(counter)
    try:
        async with trio.open_nursery() as nursery:

            async def receiver():
                assert await b.recv(10) == b"hi"

            nursery.start_soon(receiver, name="receiver")
            await trio.testing.wait_all_tasks_blocked()
            await a.sendto(b"hi", b.getsockname())
    finally:
        trio.lowlevel.remove_instrument(counter)
    # One step runs it into the wait; the wake-up runs it to the end.
    assert counter.steps["receiver"] == 2


async def test_receives_are_checkpoints_queued_or_not(virtual_network):
    a, b = await pair()
    await a.sendto(b"queued", b.getsockname())
    with trio.testing.assert_checkpoints():
        assert await b.recv(10) == b"queued"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.sendto, b"later", b.getsockname())
        with trio.testing.assert_checkpoints():
            assert await b.recv(10) == b"later"


async def test_a_cancelled_receive_takes_nothing(virtual_network):
    a, b = await pair()
    with trio.CancelScope() as scope:
        scope.cancel()
        await b.recv(10)  # empty queue: cancelled as it starts to wait
    assert scope.cancelled_caught
    await a.sendto(b"x", b.getsockname())
    with trio.CancelScope() as scope:
        scope.cancel()
        await b.recv(10)  # queued: cancelled before taking it
    assert scope.cancelled_caught
    assert await b.recv(10) == b"x"


def test_the_batch_shuffler_is_seeded_and_uniform():
    def orders(seed):
        rng = BatchShuffler(seed)
        out = []
        for _ in range(200):
            batch = [1, 2]
            rng.shuffle(batch)
            out.append(tuple(batch))
        return out

    first = orders(1)
    assert orders(1) == first
    assert 60 < first.count((2, 1)) < 140
    three = [1, 2, 3]
    BatchShuffler(1).shuffle(three)
    assert sorted(three) == [1, 2, 3]
    single = [1]
    BatchShuffler(1).shuffle(single)
    assert single == [1]
    # Longer batches shuffle as random.Random does.
    long_batch, expected = list(range(10)), list(range(10))
    BatchShuffler(5).shuffle(long_batch)
    random.Random(5).shuffle(expected)
    assert long_batch == expected
