"""What the worker tests share: the application they run, quick restarts,
and waits on real processes (events under deadlines, never sleeps)."""

import os

import trio

import trioudp

from ..conftest import ROOT

APP = f"{ROOT / 'tests' / 'workers' / 'worker_app.py'}:serve"
DEADLINE = 60
#: Quick restarts, so that a crash loop is over in well under a second.
FAST = trioudp.Backoff(initial=0.01, multiplier=2.0, maximum=0.05, jitter=0.0)
#: Requests sent from as many source ports, so the kernel spreads them.
SOURCES = 64


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
