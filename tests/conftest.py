from __future__ import annotations

import gc
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parent.parent


def unavailable(reason: str) -> NoReturn:
    """Skip the running test: ``reason`` says what this machine lacks (a
    tool, root for a network namespace). Under CI (``CI`` set in the
    environment) fail instead: CI installs every tool and runs as root, so
    there a skip would only hide a test that did not run."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run this test: {reason}", pytrace=False)
    # Reported at the test, as a skipif mark's skip is, not at this line.
    raise pytest.skip.Exception(reason, _use_item_location=True)


def needs(missing: str | None) -> pytest.MarkDecorator:
    """Mark a test that cannot run where ``missing`` says why (None: it can);
    at setup it skips, or under CI fails (:func:`unavailable`)."""
    return pytest.mark.needs(missing)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (the default in pyproject.toml): twice the CPUs, at least 4
    and at most 8, since most of the slower tests wait on subprocesses,
    namespaces and sockets rather than compute."""
    return max(4, min(8, 2 * (os.cpu_count() or 1)))


# Modules whose tests mostly wait on other processes (namespaces, workers,
# benchmarks, fresh interpreters, tshark): seconds each, on code that every
# Python runs alike. CI runs them on its main Python only (see .ci/run).
SLOW_MODULES = frozenset(
    {
        "tests/test_faults.py",
        "tests/test_benchmarks.py",
        "tests/test_docs_blocks.py",
        "tests/test_quic_amplification.py",
        "tests/test_quic_virtual_network.py",
        "tests/test_quic_workers.py",
        "tests/cli/test_quic.py",
        "tests/cli/test_supervise.py",
        "tests/workers/test_supervisor.py",
        "tests/testing/test_determinism.py",
    }
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark slow the tests of :data:`SLOW_MODULES` and each test run in a
    network namespace of its own (``lan="namespace"``: a pytest in a fresh
    process under ``unshare -n``)."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        in_repository = item.path.is_relative_to(ROOT)
        module = item.path.relative_to(ROOT).as_posix() if in_repository else ""
        if module in SLOW_MODULES or (
            callspec is not None and callspec.params.get("lan") == "namespace"
        ):
            item.add_marker(pytest.mark.slow)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "needs(missing): skip (under CI: fail) when missing is not None"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs"):
        if mark.args[0] is not None:
            unavailable(mark.args[0])


def system_tool(name: str) -> str | None:
    """Where the program ``name`` is: on PATH, or in /usr/sbin or /sbin,
    where Debian puts ip, tc and nginx (not on an ordinary user's PATH)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def tool_missing(name: str, package: str) -> str | None:
    """Why the program ``name`` cannot be run here (None if it can)."""
    if system_tool(name) is None:
        return f"{name} is not installed (Debian: {package}; .ci/run installs it)"
    return None


def open_fds() -> int:
    """How many file descriptors this process has open, once the garbage of
    earlier tests (a socket left to the collector) is collected: otherwise
    its descriptor could close in the middle of a count."""
    gc.collect()
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


def netns_missing() -> str | None:
    """Why this process cannot make network namespaces and build a network
    in them (None if it can): they need ``unshare`` and ``ip``, and root."""
    import subprocess

    for tool, package in (("unshare", "util-linux"), ("ip", "iproute2")):
        missing = tool_missing(tool, package)
        if missing is not None:
            return missing
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    if probe.returncode:
        error = probe.stderr.decode().strip()
        return f"cannot create a network namespace (needs root): {error}"
    return None


@pytest.fixture
def netns():
    """Run a scenario of ``tests/netns/scenarios.py`` in a new network
    namespace and return the JSON object it printed. Skips where namespaces
    cannot be made (not root), but fails in CI, which runs as root."""
    import json

    import trio

    missing = netns_missing() or tool_missing("tc", "iproute2")
    if missing is not None:
        unavailable(missing)

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
