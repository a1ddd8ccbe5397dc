"""run_workers, the worker processes and ``trioudp serve|echo --workers``.

These tests start real processes on loopback; their waits are events (a
reply, a report, a process's pidfd becoming readable) under ``fail_after``
deadlines, never sleeps.
"""

import functools
import logging
import os
import re
import signal
import socket
import subprocess
import sys

import pytest
import trio

import trioudp
from trioudp._worker import Worker, WorkerSettings

from .conftest import ROOT

APP = f"{ROOT / 'tests' / 'worker_app.py'}:serve"
DEADLINE = 60
#: Quick restarts, so that a crash loop is over in well under a second.
FAST = trioudp.Backoff(initial=0.01, multiplier=2.0, maximum=0.05, jitter=0.0)
SOURCES = 64

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "SO_REUSEPORT"), reason="needs SO_REUSEPORT"
)


class Capture:
    """A task_status that keeps what ``started`` reports."""

    def __init__(self):
        self.value = None
        self.reported = trio.Event()

    def started(self, value=None):
        self.value = value
        self.reported.set()


async def ask(port, payload, *, attempts=3):
    backoff = trioudp.Backoff(initial=0.5, jitter=0.0)
    async with trioudp.open_udp_client(
        "127.0.0.1", port, attempts=attempts, backoff=backoff
    ) as client:
        return (await client.request(payload)).data


async def ask_from_many_ports(port, count=SOURCES):
    """Send ``count`` requests, each from a new source port; return the pid
    that answered each."""
    pids = []
    for i in range(count):
        reply = await ask(port, b"n%d" % i)
        pid, _, data = reply.partition(b" ")
        assert data == b"n%d" % i
        pids.append(int(pid))
    return pids


async def wait_gone(pid):
    """Wait (on a pidfd, no polling) until process ``pid`` has ended."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


# ---- a worker's settings -----------------------------------------------------


def test_worker_settings_survive_the_environment(monkeypatch):
    settings = WorkerSettings(
        target="m:f",
        index=1,
        count=2,
        port=53,
        args=("a",),
        grace=1.5,
        control_fd=5,
        report_fd=6,
        path=("/x",),
    )
    monkeypatch.setenv("TRIOUDP_WORKER", settings.to_environment())
    assert WorkerSettings.from_environment() == settings
    worker = Worker(settings)
    assert (worker.index, worker.count, worker.port, worker.args) == (1, 2, 53, ("a",))


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


# ---- the command line -------------------------------------------------------------


def spawn_cli(*args, **options):
    return subprocess.Popen(
        [sys.executable, "-m", "trioudp", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        **options,
    )


def read_banner(process):
    line = process.stdout.readline()
    match = re.search(r"listening on [\d.:]+:(\d+)$", line.strip())
    assert match, (line, process.stderr.read() if process.poll() is not None else "")
    workers = process.stdout.readline()
    match_pids = re.search(
        r"^(\d+) workers? shares? the port \(pids ([\d ]+)\)", workers
    )
    assert match_pids, workers
    pids = [int(pid) for pid in match_pids.group(2).split()]
    assert len(pids) == int(match_pids.group(1))
    return int(match.group(1)), pids


def echo_many(port, count=SOURCES):
    for i in range(count):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.settimeout(10)
            probe.sendto(b"e%d" % i, ("127.0.0.1", port))
            assert probe.recv(100) == b"e%d" % i


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_cli_workers_answer_report_counters_and_stop_on_a_signal(signum):
    server = spawn_cli("echo", "--port", "0", "--workers", "2")
    try:
        port, pids = read_banner(server)
        assert len(pids) == 2
        echo_many(port)
        server.send_signal(signal.SIGUSR1)
        line = server.stderr.readline()
        assert line.startswith(f"totals of 2 workers: received {SOURCES}, "), line
        server.send_signal(signum)
        _, err = server.communicate(timeout=DEADLINE)
    finally:
        server.kill()
    assert server.returncode == 128 + signum, err  # as one process
    assert f"Received {signum.name}, shutting down" in err
    assert f"totals of 2 workers: received {SOURCES}, handled {SOURCES}" in err
    for pid in pids:
        assert not alive(pid)


def test_cli_workers_zero_means_one_per_cpu():
    cpu = min(os.sched_getaffinity(0))
    server = spawn_cli(
        "echo",
        "--port",
        "0",
        "--workers",
        "0",
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )
    try:
        port, pids = read_banner(server)
        assert len(pids) == 1  # one CPU allowed: one worker
        echo_many(port, 4)
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=DEADLINE)
    finally:
        server.kill()
    assert server.returncode == 128 + signal.SIGTERM


def test_cli_workers_that_cannot_bind_exit_1_with_the_cause():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        server = spawn_cli(
            "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"
        )
        _, err = server.communicate(timeout=DEADLINE)
    assert server.returncode == 1
    assert f"cannot bind UDP socket to '127.0.0.1' port {port}" in err
    assert "worker 0 exited with code 1 before it was serving" in err


async def test_workers_stop_when_the_supervisor_is_killed():
    with spawn_cli("echo", "--port", "0", "--workers", "2") as server:
        try:
            _, pids = read_banner(server)
        finally:
            server.kill()  # SIGKILL: no chance to stop its workers
    with trio.fail_after(DEADLINE):
        for pid in pids:
            await wait_gone(pid)  # their control pipe closed: they stop


def test_cli_serve_workers_all_stop_when_one_is_told_to_exit():
    server = spawn_cli("serve", "--host", "127.0.0.1", "--port", "0", "--workers", "2")
    try:
        port, pids = read_banner(server)
        # The tutorial client: "Hello, server!", then "exit" from the same
        # source port, so to the same worker; it stops, and so do the others.
        client = subprocess.run(
            [sys.executable, "-m", "trioudp", "send", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
        out, err = server.communicate(timeout=DEADLINE)
    finally:
        server.kill()
    assert client.returncode == 0, client.stderr
    assert server.returncode == 0, err
    assert "Received Hello, server! from ('127.0.0.1'," in out
    assert "Server exiting..." in out
    assert "totals of 2 workers: received 2, handled 2, replied 1" in err
    for pid in pids:
        assert not alive(pid)
