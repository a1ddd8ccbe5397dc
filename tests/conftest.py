from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def open_fds() -> int:
    """How many file descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


def has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


requires_ipv6 = pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback here")


def python_command(*args: str) -> list[str]:
    return [sys.executable, *args]


def run_python(*args: str, env: dict[str, str] | None = None) -> str:
    """Run this Python on ``args`` from the repository root; its stdout.

    Fails the test, with the program's stderr, if it exits non-zero.
    """
    import subprocess

    result = subprocess.run(
        python_command(*args),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


pytest_plugins = ["pytester"]

# Standalone scripts that tests run as programs (netns: inside `unshare -n`).
collect_ignore = ["interop", "netns"]


def count_tasks() -> int:
    """Every task alive in this Trio run (walks the task tree from its root)."""
    import trio

    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(
            walk(child)
            for nursery in task.child_nurseries
            for child in nursery.child_tasks
        )

    return walk(trio.lowlevel.current_root_task())


NETNS_SCENARIOS = ROOT / "tests" / "netns" / "scenarios.py"


def _netns_missing() -> str | None:
    """Why fault scenarios cannot run here (None if they can)."""
    import shutil
    import subprocess

    for tool in ("unshare", "ip", "tc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: util-linux, iproute2)"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    if probe.returncode:
        return f"cannot create a network namespace: {probe.stderr.decode().strip()}"
    return None


@pytest.fixture
def netns():
    """Run a scenario of ``tests/netns/scenarios.py`` in a new network
    namespace and return the JSON object it printed. Skips where namespaces
    cannot be made (not root), but fails in CI, which runs as root."""
    import json

    import trio

    missing = _netns_missing()
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"fault tests must run in CI: {missing}")
        pytest.skip(missing)

    async def run(name: str, *args: str, limit: float = 60) -> dict:
        command = ["unshare", "-n", sys.executable, str(NETNS_SCENARIOS), name, *args]
        with trio.fail_after(limit):
            done = await trio.run_process(
                command, capture_stdout=True, capture_stderr=True, check=False
            )
        stderr = done.stderr.decode(errors="replace")
        assert done.returncode == 0, f"scenario {name} failed:\n{stderr}"
        return json.loads(done.stdout.decode().strip().splitlines()[-1])

    return run
