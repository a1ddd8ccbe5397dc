import pytest
import trio
import trio.testing

from trioudp import _handlers as eager


async def test_a_coroutine_that_never_suspends_finishes_inline():
    seen = []

    async def quick():
        seen.append(trio.lowlevel.current_task())

    assert eager.start(quick()) is None
    assert seen == [trio.lowlevel.current_task()]


async def test_errors_before_suspending_propagate():
    async def broken():
        raise ValueError("early")

    with pytest.raises(ValueError, match="early"):
        eager.start(broken())


async def test_a_suspended_coroutine_finishes_in_the_same_task():
    tasks = []

    async def slow():
        tasks.append(trio.lowlevel.current_task())
        await trio.lowlevel.checkpoint()
        tasks.append(trio.lowlevel.current_task())
        return None

    suspended = eager.start(slow())
    assert suspended is not None
    await eager.finish(suspended)
    assert tasks == [trio.lowlevel.current_task()] * 2


async def test_cancellation_and_errors_pass_through_finish(autojump_clock):
    async def sleeper():
        with trio.CancelScope() as inner:
            await trio.sleep(10)
        return inner

    with trio.move_on_after(1) as outer:
        suspended = eager.start(sleeper())
        await eager.finish(suspended)
    assert outer.cancelled_caught
    assert trio.current_time() == 1

    async def fails_later():
        await trio.lowlevel.checkpoint()
        raise KeyError("late")

    with pytest.raises(KeyError, match="late"):
        await eager.finish(eager.start(fails_later()))


async def test_cancel_scopes_opened_before_suspending_stay_consistent(autojump_clock):
    async def scoped():
        with trio.move_on_after(0.5) as scope:
            await trio.sleep(5)
        assert scope.cancelled_caught

    await eager.finish(eager.start(scoped()))
    assert trio.current_time() == 0.5
