"""A worker process's side: the signals it meets while it starts.

Each test starts one worker as the supervisor does (``spawn_child``) and
signals it at once, while it is still importing: the signals are blocked
from its first instruction until its handlers are in place.
"""

import json
import signal
from pathlib import Path

import pytest
import trio

from trioudp._workers._child import spawn_child

from .helpers import APP, DEADLINE

PROC_FIELDS = ("State", "SigQ", "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt")


async def run_worker(signal_it):
    """Start a worker, run ``signal_it(process, ready)`` beside it; its exit
    code and the events it reported."""
    child = await spawn_child(0, target=APP, count=1, port=0, args=(), grace=2.0)
    ready = trio.Event()
    reported = []

    def take(line):
        reported.append(json.loads(line)["event"])
        if reported[-1] == "ready":
            ready.set()

    try:
        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(child.read_reports, take)
                await signal_it(child.process, ready)
                returncode = await child.process.wait()
    except trio.TooSlowError:
        # What the worker was doing: its state, signal masks (pending,
        # blocked, ignored, caught) and where it sleeps in the kernel.
        pid = child.process.pid
        proc = Path(f"/proc/{pid}")
        status = proc.joinpath("status").read_text().splitlines()
        state = [line for line in status if line.startswith(PROC_FIELDS)]
        state.append(f"wchan: {proc.joinpath('wchan').read_text()}")
        child.process.kill()
        pytest.fail(f"worker {pid} still running; reported {reported}; {state}")
    await child.control.aclose()
    await child.reports.aclose()
    return returncode, reported


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_a_stop_signal_while_starting_stops_it_gracefully(signum, capfd):
    async def signal_it(process, ready):
        process.send_signal(signal.SIGUSR1)
        process.send_signal(signum)

    returncode, reported = await run_worker(signal_it)
    # Stopped by its own handler once in place: not killed, nothing printed.
    assert returncode == 0
    assert reported == ["final"]
    assert capfd.readouterr().err == ""


async def test_sigusr1_is_ignored_while_starting_and_serving(capfd):
    async def signal_it(process, ready):
        process.send_signal(signal.SIGUSR1)
        await ready.wait()
        process.send_signal(signal.SIGUSR1)
        process.send_signal(signal.SIGTERM)

    returncode, reported = await run_worker(signal_it)
    assert returncode == 0
    assert reported == ["ready", "final"]
    assert capfd.readouterr().err == ""


async def test_a_sigint_while_starting_stops_it_though_the_supervisor_ignores_it(
    capfd,
):
    """A supervisor started in the background by a shell ignores SIGINT; a
    worker that inherited "ignored" lost a SIGINT sent while it started (it
    reported ready and served on: 5 of 5 tries) until its stop signals
    were reset to their defaults at spawn."""

    async def signal_it(process, ready):
        process.send_signal(signal.SIGUSR1)
        process.send_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        returncode, reported = await run_worker(signal_it)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert returncode == 0
    assert reported == ["final"]
    assert capfd.readouterr().err == ""
