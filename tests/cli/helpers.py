"""What the command-line tests share: running ``python -m trioudp`` (and the
tutorial's stdlib programs) as real processes, reading their banners, and
the tutorial's server in process."""

import functools
import re
import shlex
import subprocess
import sys

from trioudp._cli import _serve

from ..conftest import ROOT, netns_missing, unavailable

INTEROP = ROOT / "tests" / "interop"
TIMEOUT = 30


def spawn(*args, **options):
    """Start this Python on ``args``, its output captured as text."""
    return subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        **options,
    )


def spawn_cli(*args, **options):
    """Start ``python -m trioudp`` with ``args``."""
    return spawn("-m", "trioudp", *args, **options)


def run(*args, timeout=TIMEOUT):
    """Run this Python on ``args`` to its end (bounded)."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def run_cli(*args, timeout=TIMEOUT):
    """Run ``python -m trioudp`` with ``args`` to its end (bounded)."""
    return run("-m", "trioudp", *args, timeout=timeout)


def run_cli_in_netns(setup, *args, timeout=TIMEOUT):
    """Run ``python -m trioudp`` with ``args`` in a new network namespace
    (``unshare -n``) after the ``ip`` commands of ``setup``: nothing it does
    reaches another network. Skips where namespaces cannot be made (not
    root), but fails in CI, which runs as root."""
    missing = netns_missing()
    if missing is not None:
        unavailable(missing)
    script = "; ".join(
        [
            "set -e",
            'PATH="$PATH:/usr/sbin:/sbin"',
            *setup,
            shlex.join([sys.executable, "-m", "trioudp", *args]),
        ]
    )
    return subprocess.run(
        ["unshare", "-n", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def banner_port(process):
    """The port at the end of a server's banner, its first line."""
    line = process.stdout.readline()
    match = re.search(r"listening on [\d.:]+:(\d+)$", line.strip(), re.IGNORECASE)
    assert match, (
        f"unexpected banner {line!r}; stderr: {process.stderr.read() if process.poll() is not None else ''}"
    )
    return int(match.group(1))


def workers_banner(process):
    """The port and the worker pids of a ``--workers`` server's two banner lines."""
    port = banner_port(process)
    workers = process.stdout.readline()
    match_pids = re.search(
        r"^(\d+) workers? shares? the port \(pids ([\d ]+)\)", workers
    )
    assert match_pids, workers
    pids = [int(pid) for pid in match_pids.group(2).split()]
    assert len(pids) == int(match_pids.group(1))
    return port, pids


def finish(process):
    """Wait (bounded) for ``process``: its exit code, stdout and stderr."""
    out, err = process.communicate(timeout=TIMEOUT)
    return process.returncode, out, err


async def start_hello(
    nursery, *, allow_remote_exit=False, host="0.0.0.0", protection=None
):
    return await nursery.start(
        functools.partial(
            _serve.serve_until_exit,
            functools.partial(
                _serve.hello_handler, allow_remote_exit=allow_remote_exit
            ),
            host,
            12345,
            "Server is listening on {host}:{port}",
            on_exit="Server exiting...",
            watch_signals=False,
            protection=protection,
        )
    )
