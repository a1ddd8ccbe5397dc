"""The private Trio names trioudp reads still exist; each has a working fallback."""

from __future__ import annotations

import random

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
