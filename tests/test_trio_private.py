"""The private Trio names trioudp reads still exist; each has a working fallback."""

from __future__ import annotations

import math
import random

import pytest
import trio
import trio.testing

from trioudp import _trio_private


def test_every_private_name_exists_on_this_trio() -> None:
    # Fails loudly when a Trio upgrade moves a name: the fast path would
    # otherwise fall back silently.
    assert _trio_private.cancel_requested_probe is _trio_private._probe_cancel_status
    fields = {field.name for field in trio.lowlevel.Task.__attrs_attrs__}
    assert "_cancel_status" in fields
    assert _trio_private.wrap_new_task is _trio_private._replace_coroutine
    assert {"coro", "_next_send_fn"} <= fields


async def test_cancel_probe_tells_cancelled_from_calm() -> None:
    assert _trio_private.cancel_requested_probe() is False
    with trio.CancelScope() as scope:
        scope.cancel()
        assert _trio_private.cancel_requested_probe() is True
        await trio.lowlevel.checkpoint()
    assert _trio_private._unknown() is None


def test_the_scheduler_hook_exists_on_this_trio() -> None:
    # Fails loudly when Trio renames its deterministic-scheduling hook: the
    # virtual network would otherwise silently lose exact replays.
    from trio._core import _run

    assert _trio_private._scheduler_module() is _run
    assert isinstance(_run._ALLOW_DETERMINISTIC_SCHEDULING, bool)
    assert isinstance(_run._r, random.Random)
    assert (
        "trio._core._run._ALLOW_DETERMINISTIC_SCHEDULING" in _trio_private.PRIVATE_NAMES
    )


def test_deterministic_scheduling_restores_trio_as_it_was() -> None:
    from trio._core import _run

    before = (_run._ALLOW_DETERMINISTIC_SCHEDULING, _run._r)
    outer, inner = random.Random(1), random.Random(2)
    with _trio_private.deterministic_scheduling(outer) as exact:
        assert exact is True
        assert (_run._ALLOW_DETERMINISTIC_SCHEDULING, _run._r) == (True, outer)
        with _trio_private.deterministic_scheduling(inner):
            assert _run._r is inner
        assert _run._r is outer
    assert (_run._ALLOW_DETERMINISTIC_SCHEDULING, _run._r) == before
    try:
        with _trio_private.deterministic_scheduling(outer):
            raise KeyError
    except KeyError:
        pass
    assert (_run._ALLOW_DETERMINISTIC_SCHEDULING, _run._r) == before


def schedule(seed: int) -> list[int]:
    """The order in which 20 tasks pass 5 checkpoints each, under ``seed``."""
    order: list[int] = []

    async def step(i: int) -> None:
        for _ in range(5):
            order.append(i)
            await trio.lowlevel.checkpoint()

    async def main() -> None:
        with _trio_private.deterministic_scheduling(random.Random(seed)):
            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(step, i)

    trio.run(main)
    return order


def test_deterministic_scheduling_replays_the_schedule_of_a_seed() -> None:
    first = schedule(1)
    assert schedule(1) == first
    assert schedule(2) != first
    assert first[:20] != sorted(first[:20])  # shuffled, not FIFO


async def test_reply_stays_a_cancel_point_on_the_public_fallback(monkeypatch):
    """Where Trio's cancel status cannot be read, a reply takes the full
    checkpoint_if_cancelled() instead: still a cancel point."""
    import trioudp
    from trioudp import _outbox

    monkeypatch.setattr(_outbox, "cancel_requested_probe", _trio_private._unknown)
    async with trioudp.open_udp_socket("127.0.0.1", 0) as sock:
        await sock.send_to(b"y", sock.local_address)
        datagram = await sock.receive()
        with trio.CancelScope() as scope:
            scope.cancel()
            await datagram.reply(b"never sent")
        assert scope.cancelled_caught
        assert sock.stats.replied == 0


# ---- alarms ---------------------------------------------------------------------


@pytest.fixture(params=["trio_private", "public_fallback"])
def alarm_kind(request, monkeypatch):
    if request.param == "public_fallback":
        monkeypatch.setattr(_trio_private, "_runner", lambda: None)
    return request.param


async def test_the_deadline_alarm_is_what_this_trio_gets() -> None:
    # Fails loudly when a Trio upgrade moves what the alarm reads: the wire
    # would otherwise fall back silently to a slower system task.
    from trio._core._run import GLOBAL_RUN_CONTEXT, Deadlines

    runner = GLOBAL_RUN_CONTEXT.runner
    assert _trio_private._runner() is runner
    alarm = _trio_private.new_alarm(lambda: None, "guard")
    assert isinstance(alarm, _trio_private._DeadlineAlarm)
    alarm.close()
    for name in ("add", "remove", "next_deadline", "expire", "_prune"):
        assert callable(getattr(Deadlines, name))
    assert isinstance(runner.deadlines, Deadlines)
    assert "Runner.runq" in _trio_private.PRIVATE_NAMES


async def test_an_alarm_fires_once_at_the_time_set(autojump_clock, alarm_kind) -> None:
    fired: list[float] = []
    alarm = _trio_private.new_alarm(lambda: fired.append(trio.current_time()), "t")
    assert alarm.when == math.inf
    alarm.set(5.0)
    alarm.set(3.0)  # earlier
    alarm.set(4.0)  # later again
    assert alarm.when == 4.0
    await trio.sleep(10)
    assert fired == [4.0]
    assert alarm.when == math.inf
    alarm.set(12.0)
    alarm.set(math.inf)  # unset
    await trio.sleep(10)
    assert fired == [4.0]
    alarm.set(25.0)
    alarm.close()
    await trio.sleep(10)
    assert fired == [4.0]


async def test_an_alarm_may_set_itself_again_when_it_fires(
    autojump_clock, alarm_kind
) -> None:
    fired: list[float] = []

    def fire() -> None:
        fired.append(trio.current_time())
        if len(fired) < 3:
            alarm.set(trio.current_time() + 1.5)

    alarm = _trio_private.new_alarm(fire, "t")
    alarm.set(1.0)
    await trio.sleep(10)
    alarm.close()
    assert fired == [1.0, 2.5, 4.0]


def test_an_alarm_fires_when_its_time_comes_without_autojump(alarm_kind) -> None:
    clock = trio.testing.MockClock()  # never jumps by itself

    async def main() -> list[float]:
        fired: list[float] = []
        alarm = _trio_private.new_alarm(lambda: fired.append(trio.current_time()), "t")
        alarm.set(2.0)
        clock.jump(1.0)
        await trio.lowlevel.checkpoint()
        assert fired == []
        clock.jump(1.5)
        await trio.lowlevel.checkpoint()
        await trio.lowlevel.checkpoint()
        alarm.close()
        return fired

    assert trio.run(main, clock=clock) == [2.5]


async def test_the_alarm_fires_before_a_deadline_of_the_same_instant(
    autojump_clock,
) -> None:
    # The Trio-private alarm jumps the clock and fires before Trio expires
    # the deadlines of that instant, whatever their cancel scopes' ids.
    events: list[str] = []

    def aborted(_: object) -> trio.lowlevel.Abort:
        events.append("deadline")
        return trio.lowlevel.Abort.SUCCEEDED

    for _ in range(20):
        with trio.CancelScope(deadline=trio.current_time() + 1) as scope:
            alarm = _trio_private.new_alarm(lambda: events.append("alarm"), "t")
            alarm.set(scope.deadline)
            await trio.lowlevel.wait_task_rescheduled(aborted)
        alarm.close()
    assert events == ["alarm", "deadline"] * 20


async def test_an_alarm_waits_for_tasks_waiting_for_all_to_block(
    autojump_clock, alarm_kind
) -> None:
    # wait_all_tasks_blocked wakes before the clock jumps, as with Trio's
    # own autojump.
    fired: list[float] = []
    alarm = _trio_private.new_alarm(lambda: fired.append(trio.current_time()), "t")
    alarm.set(1.0)
    await trio.testing.wait_all_tasks_blocked()
    assert fired == []
    assert trio.current_time() == 0.0
    await trio.sleep(2)
    alarm.close()
    assert fired == [1.0]


async def test_many_resets_keep_trios_deadline_heap_consistent(autojump_clock) -> None:
    # Trio prunes stale entries once they outnumber live ones (1000 at
    # least), asserting its count of live deadlines: every set() must keep it.
    alarms = [_trio_private.new_alarm(lambda: None, "t") for _ in range(3)]
    for step in range(3000):
        for n, alarm in enumerate(alarms):
            alarm.set(100.0 + (step * 7 + n) % 50)
        if step % 100 == 0:
            await trio.lowlevel.checkpoint()
    alarms[0].set(math.inf)
    with trio.move_on_after(1):
        await trio.sleep_forever()
    await trio.sleep(200)
    for alarm in alarms:
        alarm.close()


class _Wrapper(trio.abc.Instrument):
    """Wraps every new task whose name ends with "wrapped" in a scope."""

    def __init__(self) -> None:
        self.scopes: list[trio.CancelScope] = []
        self.results: list[bool] = []

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        if not task.name.endswith("wrapped"):
            return
        scope = trio.CancelScope()

        async def inside(coro):  # type: ignore[no-untyped-def]
            with scope:
                return await coro

        self.scopes.append(scope)
        self.results.append(_trio_private.wrap_new_task(task, inside))


async def test_wrap_new_task_runs_a_new_task_inside_the_wrapper() -> None:
    wrapper = _Wrapper()
    done: list[str] = []

    async def sleeper(name: str) -> None:
        await trio.sleep_forever()
        done.append(name)  # pragma: no cover - never reached

    trio.lowlevel.add_instrument(wrapper)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sleeper, "x", name="wrapped")
            nursery.start_soon(sleeper, "y", name="plain")
            await trio.testing.wait_all_tasks_blocked()
            [scope] = wrapper.scopes
            scope.cancel()  # ends the wrapped task, quietly
            await trio.testing.wait_all_tasks_blocked()
            assert [task.name for task in nursery.child_tasks] == ["plain"]
            nursery.cancel_scope.cancel()
    finally:
        trio.lowlevel.remove_instrument(wrapper)
    assert wrapper.results == [True]
    # A task that runs already is left alone, as by the public fallback.
    running = trio.lowlevel.current_task()
    assert _trio_private.wrap_new_task(running, lambda coro: coro) is False
    assert _trio_private._cannot_wrap(running, lambda coro: coro) is False
