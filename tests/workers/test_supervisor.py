"""run_workers and the worker processes it supervises.

These tests start real processes on loopback; their waits are events (a
reply, a report, a process's pidfd becoming readable) under ``fail_after``
deadlines, never sleeps.
"""

import functools
import logging
import math
import os
import re
import signal
import socket

import pytest
import trio

import trioudp
from trioudp._workers._child import socket_inodes

from .helpers import (
    APP,
    DEADLINE,
    FAST,
    SOURCES,
    Capture,
    alive,
    ask,
    ask_from_many_ports,
    wait_gone,
)

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "SO_REUSEPORT"), reason="needs SO_REUSEPORT"
)


@pytest.mark.parametrize("bad", [-1, 1.5, True])
async def test_run_workers_refuses_a_bad_count(bad):
    with pytest.raises(ValueError, match="workers must be an int >= 0"):
        await trioudp.run_workers(APP, bad)


# ---- SO_REUSEPORT -------------------------------------------------------------


async def test_reuse_port_lets_two_servers_share_a_port_and_without_it_bind_fails():
    async def handler(datagram):
        await datagram.reply(b"ok")

    serve = functools.partial(trioudp.serve_udp, handler, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        first = await nursery.start(functools.partial(serve, 0, reuse_port=True))
        second = await nursery.start(
            functools.partial(serve, first.port, reuse_port=True)
        )
        assert second.port == first.port
        with pytest.raises(trioudp.BindError, match="already"):
            await nursery.start(serve, first.port)
        assert await ask(first.port, b"hi") == b"ok"
        nursery.cancel_scope.cancel()


# ---- the library API ------------------------------------------------------------


async def test_workers_start_share_the_port_answer_and_sum_their_counters():
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            pool = await nursery.start(
                functools.partial(trioudp.run_workers, APP, 2, grace=2.0)
            )
            assert pool.workers == 2
            assert len(set(pool.pids)) == 2
            answered_by = await ask_from_many_ports(pool.port)
            # The kernel spread the source ports over both workers.
            assert set(answered_by) == set(pool.pids)
            stats = await pool.stats()
            assert stats.received == stats.handled == stats.replied == SOURCES
            pids = pool.pids
            pool.shutdown()
    for pid in pids:
        assert not alive(pid)
    # After the stop, the final reports are what is left.
    assert (await pool.stats()).received == SOURCES


async def test_run_workers_returns_the_total_after_shutdown():
    capture = Capture()

    async def stop_soon():
        with trio.fail_after(DEADLINE):
            await capture.reported.wait()
            await ask_from_many_ports(capture.value.port, 8)
            capture.value.shutdown()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_soon)
        total = await trioudp.run_workers(
            APP, 2, grace=2.0, handle_signals=False, task_status=capture
        )
    assert total.received == total.replied == 8
    assert total.in_flight == 0


async def test_a_crashed_worker_is_reported_and_restarted(caplog):
    caplog.set_level(logging.INFO, logger="trioudp")
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            pool = await nursery.start(
                functools.partial(
                    trioudp.run_workers, APP, 2, grace=2.0, restart_backoff=FAST
                )
            )
            before = pool.pids
            # Counters reported before the crash are kept, once.
            await ask_from_many_ports(pool.port, 16)
            assert (await pool.stats()).received == 16
            async with trioudp.open_udp_socket("127.0.0.1") as sock:
                await sock.send_to(b"crash", ("127.0.0.1", pool.port))
            await pool.wait_restarts(1)
            after = pool.pids
            assert len(after) == 2
            assert len(set(before) & set(after)) == 1
            # The restarted worker serves again: both answer.
            assert set(await ask_from_many_ports(pool.port)) == set(after)
            assert (await pool.stats()).received == 16 + SOURCES
            pool.shutdown()
    crashed = (set(before) - set(after)).pop()
    assert f"(pid {crashed}) exited with code 3; restarting it in 0.01 s" in caplog.text
    assert "serves again" in caplog.text
    for pid in before + after:
        assert not alive(pid)


async def test_a_crash_loop_stops_the_supervisor_with_a_clear_error(caplog):
    caplog.set_level(logging.INFO, logger="trioudp")
    with trio.fail_after(DEADLINE), pytest.raises(trioudp.WorkerCrashLoop) as info:
        await trioudp.run_workers(
            APP,
            2,
            args=["crash-when-ready"],
            restart_backoff=FAST,
            max_crashes=3,
            crash_window=60.0,
        )
    error = info.value
    assert (error.returncode, error.crashes, error.window) == (3, 4, 60.0)
    assert "4 worker crashes within 60 s, giving up (a crash loop)" in str(error)
    started = [int(pid) for pid in re.findall(r"started \(pid (\d+)\)", caplog.text)]
    assert len(started) >= 5  # two workers, and three restarts
    for pid in started:
        assert not alive(pid)


async def test_a_worker_that_cannot_bind_fails_the_start():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with (
            trio.fail_after(DEADLINE),
            pytest.raises(trioudp.WorkerStartFailed) as info,
        ):
            await trioudp.run_workers(APP, 2, port=port)
    assert (info.value.index, info.value.returncode) == (0, 1)


async def test_cancelling_run_workers_stops_every_worker():
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            pool = await nursery.start(
                functools.partial(trioudp.run_workers, APP, 2, grace=2.0)
            )
            pids = pool.pids
            nursery.cancel_scope.cancel()
    for pid in pids:
        assert not alive(pid)


# ---- liveness and counting --------------------------------------------------


async def quickly_checked(count, *, task_status):
    """A pool of ``count`` workers checked every 62.5 ms, restarted at once."""
    await trioudp.run_workers(
        APP,
        count,
        grace=2.0,
        restart_backoff=FAST,
        liveness_timeout=0.5,
        task_status=task_status,
    )


async def wait_reported(pool, received):
    """Wait until the workers' own reports (nobody asked) sum to ``received``."""
    while pool.stats_nowait().received < received:
        await pool._changed.wait()


async def test_a_stopped_worker_is_killed_within_the_bound_and_replaced(caplog):
    caplog.set_level(logging.INFO, logger="trioudp")
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            pool = await nursery.start(quickly_checked, 2)
            stopped = pool.pids[1]
            os.kill(stopped, signal.SIGSTOP)
            stopped_at = trio.current_time()
            await wait_gone(stopped)
            # Never before the timeout: checks that found it late count once.
            assert trio.current_time() - stopped_at >= 0.5
            await pool.wait_restarts(1)
            assert stopped not in pool.pids
            # Its socket left the port's group: every source port is answered.
            assert set(await ask_from_many_ports(pool.port)) == set(pool.pids)
            pool.shutdown()
    assert (
        f"worker 1 (pid {stopped}) has not answered for 0.5 s (stopped, or its"
        " event loop blocked): killing it" in caplog.text
    )
    assert f"worker 1 (pid {stopped}) was killed by SIGKILL; restarting" in caplog.text


async def test_counters_reach_the_supervisor_unasked_and_outlive_a_sigkill():
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            pool = await nursery.start(quickly_checked, 2)
            answered_by = await ask_from_many_ports(pool.port)
            # The liveness checks bring the counters in; nobody asks for them.
            await wait_reported(pool, SOURCES)
            victim = pool.pids[1]
            os.kill(victim, signal.SIGKILL)
            await pool.wait_restarts(1)
            total = await pool.stats()
            pool.shutdown()
    assert answered_by.count(victim) > 0  # the killed worker had counted some
    assert total.received == total.handled == total.replied == SOURCES


async def test_a_worker_whose_main_raises_reports_what_it_counted(capfd):
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            pool = await nursery.start(
                functools.partial(
                    trioudp.run_workers,
                    APP,
                    1,
                    args=["raise-on-request"],
                    restart_backoff=FAST,
                    liveness_timeout=None,  # no check reports its counters
                )
            )
            await ask_from_many_ports(pool.port, 8)
            assert await ask(pool.port, b"raise")
            await pool.wait_restarts(1)
            total = await pool.stats()
            pool.shutdown()
    assert total.received == total.replied == 9
    assert "RuntimeError: asked to raise" in capfd.readouterr().err


async def test_kernel_drops_of_a_stopped_worker_are_counted_when_it_is_killed():
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            pool = await nursery.start(quickly_checked, 1)
            stopped = pool.pids[0]
            os.kill(stopped, signal.SIGSTOP)
            # More than its receive buffer holds: the kernel drops the rest.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flood:
                for _ in range(3000):
                    flood.sendto(bytes(64), ("127.0.0.1", pool.port))
            await pool.wait_restarts(1)
            total = await pool.stats()
            pool.shutdown()
    assert total.received == 0  # what it had queued died with it
    assert 0 < total.kernel_drops <= 3000


async def test_a_stopped_worker_is_continued_to_stop_gracefully(caplog):
    caplog.set_level(logging.INFO, logger="trioudp")
    async with trio.open_nursery() as nursery:
        with trio.fail_after(DEADLINE):
            pool = await nursery.start(
                functools.partial(
                    trioudp.run_workers, APP, 2, grace=DEADLINE, liveness_timeout=None
                )
            )
        stopped = pool.pids[1]
        os.kill(stopped, signal.SIGSTOP)
        pool.shutdown()
        # Well before the grace period, and before the kernel's own SIGCONT
        # (when the thread that started it ends, after 10 s idle in Trio's
        # thread cache).
        with trio.fail_after(5):
            await wait_gone(stopped)
    assert "did not stop" not in caplog.text
    assert not alive(stopped)


@pytest.mark.parametrize("bad", [0, -1.0, math.inf, math.nan, True])
async def test_run_workers_refuses_a_bad_liveness_timeout(bad):
    with pytest.raises(ValueError, match="liveness_timeout must be"):
        await trioudp.run_workers(APP, 1, liveness_timeout=bad)


# ---- sockets the supervisor binds and holds ----------------------------------


async def test_held_sockets_keep_their_worker_through_a_restart_and_close_at_the_end():
    """With WorkerSockets the supervisor binds the workers' sockets before
    any starts; a restarted worker serves its predecessor's very socket
    (same inode, so the same place in the port's group); they share a
    secret; the port is free again once the pool has stopped."""
    plan = trioudp.WorkerSockets(host="127.0.0.1")
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            pool = await nursery.start(
                functools.partial(
                    trioudp.run_workers,
                    APP,
                    2,
                    sockets=plan,
                    restart_backoff=FAST,
                    handle_signals=False,
                )
            )
            assert pool.port != 0
            assert set(await ask_from_many_ports(pool.port)) == set(pool.pids)
            victim, other = pool.pids
            held = socket_inodes(os.getpid())
            before = socket_inodes(victim)
            assert before & held
            os.kill(victim, signal.SIGKILL)
            await pool.wait_restarts(1)
            successor = pool.pids[0]
            assert successor != victim
            assert socket_inodes(successor) & held == before & held
            assert socket_inodes(other) & held != before & held
            assert set(await ask_from_many_ports(pool.port)) == {successor, other}
            port = pool.port
            pool.shutdown()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))  # no socket of the pool is left


async def test_run_workers_refuses_sockets_that_are_not_worker_sockets():
    with pytest.raises(TypeError, match="WorkerSockets"):
        await trioudp.run_workers(APP, 1, sockets="127.0.0.1")


def test_worker_sockets_refuse_a_steering_that_is_not_a_function():
    with pytest.raises(TypeError):
        trioudp.WorkerSockets(steering=[(6, 0, 0, 0)])
