"""What the benchmarks read from /proc (Linux)."""

from __future__ import annotations


def rss_kib(pid: int | str = "self") -> int:
    """Resident set size of a process (default: this one), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    msg = f"no VmRSS line in /proc/{pid}/status"
    raise RuntimeError(msg)
