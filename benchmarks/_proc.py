"""What the benchmarks read from /proc (Linux)."""

from __future__ import annotations

import os


def _kib(path: str, key: str) -> int:
    """The KiB figure of the ``key:`` line of a /proc file."""
    with open(path) as lines:
        for line in lines:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    msg = f"no {key} line in {path}"
    raise RuntimeError(msg)


def rss_kib(pid: int | str = "self") -> int:
    """Resident set size of a process (default: this one), in KiB."""
    return _kib(f"/proc/{pid}/status", "VmRSS")


def pss_kib(pid: int | str = "self") -> int:
    """Proportional set size, in KiB: resident memory with each shared page
    divided among the processes sharing it (what one more process costs)."""
    return _kib(f"/proc/{pid}/smaps_rollup", "Pss")


def cpu_seconds(pid: int | str = "self") -> float:
    """User and system CPU seconds a process has used (its reaped children's
    included)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime
    return sum(int(field) for field in fields[11:15]) / os.sysconf("SC_CLK_TCK")
