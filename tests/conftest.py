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


pytest_plugins = ["pytester"]

# Standalone stdlib scripts that the interop tests run as programs.
collect_ignore = ["interop"]


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
