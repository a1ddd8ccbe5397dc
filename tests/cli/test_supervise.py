"""``trioudp serve|echo --workers``: the command line over run_workers, with
real processes on loopback."""

import os
import re
import signal
import socket
import time

import pytest
import trio

from trioudp._cli._main import cli_worker
from trioudp._cli._supervise import WORKER_TARGET
from trioudp._workers._protocol import load_target

from ..workers.helpers import DEADLINE, SOURCES, alive, wait_gone
from .helpers import run_cli, spawn_cli, workers_banner

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "SO_REUSEPORT"), reason="needs SO_REUSEPORT"
)


def test_each_worker_runs_the_command_line_entry_point():
    assert load_target(WORKER_TARGET) is cli_worker


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
        port, pids = workers_banner(server)
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
        port, pids = workers_banner(server)
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
    # Once, from the worker that met it; nothing more from the supervisor.
    assert err == (
        f"trioudp serve: error: cannot bind UDP socket to '127.0.0.1' port {port}:"
        " Address already in use (another socket already uses it; pick another"
        " port, or 0 for any free one)\n"
    )


@pytest.mark.parametrize("stop_one", [False, True])
async def test_workers_stop_when_the_supervisor_is_killed(stop_one):
    with spawn_cli("echo", "--port", "0", "--workers", "2") as server:
        try:
            port, pids = workers_banner(server)
            if stop_one:
                os.kill(pids[1], signal.SIGSTOP)
        finally:
            server.kill()  # SIGKILL: no chance to stop its workers
    with trio.fail_after(DEADLINE):
        for pid in pids:
            # Their control pipe closed: they stop; the kernel continues a
            # stopped one first (its parent-death signal is SIGCONT).
            await wait_gone(pid)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("127.0.0.1", port))  # nobody kept the port


def test_cli_serve_workers_all_stop_when_one_is_told_to_exit():
    server = spawn_cli("serve", "--host", "127.0.0.1", "--port", "0", "--workers", "2")
    try:
        port, pids = workers_banner(server)
        # The tutorial client: "Hello, server!", then "exit" from the same
        # source port, so to the same worker; it stops, and so do the others.
        client = run_cli("send", "--port", str(port), timeout=DEADLINE)
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


def test_stopping_the_whole_group_as_ctrl_z_does_kills_no_worker():
    server = spawn_cli("echo", "--port", "0", "--workers", "2", start_new_session=True)
    try:
        port, pids = workers_banner(server)
        os.killpg(server.pid, signal.SIGSTOP)
        # Stopped longer than the liveness timeout (1 s): the supervisor's
        # checks stop with it, so they find the workers late only once.
        time.sleep(1.5)
        os.killpg(server.pid, signal.SIGCONT)
        echo_many(port)
        assert all(alive(pid) for pid in pids)
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=DEADLINE)
    finally:
        server.kill()
    assert server.returncode == 128 + signal.SIGTERM, err
    assert "killing" not in err
    assert "serves again" not in err
    assert f"received {SOURCES}," in err


def test_the_totals_show_what_the_kernel_dropped_while_workers_were_stopped():
    server = spawn_cli("echo", "--port", "0", "--workers", "2")
    try:
        port, pids = workers_banner(server)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        # More than a receive buffer holds, from one source port: to one worker.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flood:
            for _ in range(3000):
                flood.sendto(bytes(64), ("127.0.0.1", port))
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=DEADLINE)
    finally:
        server.kill()
    totals = re.search(r"received (\d+), .* kernel drops (\d+)\n", err)
    assert totals, err
    received, drops = int(totals.group(1)), int(totals.group(2))
    assert drops > 0
    assert received + drops <= 3000  # a killed worker's queue is lost uncounted


def banner_of(*args):
    server = spawn_cli(*args)
    try:
        banner = server.stdout.readline()
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=DEADLINE)
    finally:
        server.kill()
    return banner


def test_the_workers_banner_shows_the_addresses_they_bound():
    alone = banner_of("echo", "--host", "localhost", "--port", "0")
    banner = banner_of("echo", "--host", "localhost", "--port", "0", "--workers", "2")
    # What was bound, as one process shows it; not the name asked for.
    shown = re.fullmatch(r"Echo server is listening on (.+):\d+\n", banner)
    assert shown, banner
    assert shown.group(1) in ("127.0.0.1", "[::1]")
    assert alone.startswith(f"Echo server is listening on {shown.group(1)}:")
