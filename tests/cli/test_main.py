"""The entry point: errors become exit codes, and ``python -m trioudp`` and
the console script are the same program."""

import errno
import os
import re
import signal
import subprocess
import sys

import trio
import trio.testing

import trioudp
from trioudp._cli import _parser, _serve, main
from trioudp._cli._main import cli_worker
from trioudp._cli._supervise import WORKER_TARGET
from trioudp._workers._protocol import WorkerSettings

from ..conftest import ROOT
from .helpers import (
    TIMEOUT,
    run_cli,
    run_cli_in_netns,
)


def test_main_reports_errors_inside_exception_groups(monkeypatch, capsys):
    async def failing(args):
        async with trio.open_nursery():
            raise trioudp.RequestTimeout(("127.0.0.1", 1), 1, 0.5)

    monkeypatch.setattr(_parser, "demo_command", failing)
    assert main(["demo"]) == 1
    assert "trioudp demo: error: no reply from" in capsys.readouterr().err


def test_python_dash_m_and_console_script_agree():
    result = run_cli("--help")
    assert result.returncode == 0
    script = os.path.join(os.path.dirname(sys.executable), "trioudp")
    if os.path.exists(script):
        direct = subprocess.run(
            [script, "--help"],
            capture_output=True,
            text=True,
            check=False,
            timeout=TIMEOUT,
        )
        assert direct.stdout == result.stdout


def test_the_cli_reference_lists_the_exit_codes_the_cli_returns():
    page = (ROOT / "docs" / "reference" / "cli.rst").read_text()
    section = re.search(r"Exit codes\n-+\n\n(.*?)\n\n", page, re.DOTALL)
    assert section, "the CLI reference states the exit codes"
    text = " ".join(section.group(1).split())
    for code, meaning in [
        (0, "success"),
        (1, "network failure"),
        (2, "bad usage"),
        (128 + signal.SIGINT, "interrupted (Ctrl-C, SIGINT)"),
        (128 + signal.SIGTERM, "stopped by SIGTERM"),
    ]:
        assert f"{code} {meaning}" in text


# ---- errors that say what to do -------------------------------------------------

LOOPBACK_ONLY = ["ip link set lo up"]
#: A namespace with one IPv4 network, 10.98.0.0/24, on a veth pair.
ONE_NETWORK = [
    *LOOPBACK_ONLY,
    "ip link add v0 type veth peer name v1",
    "ip addr add 10.98.0.1/24 dev v0",
    "ip link set v0 up",
    "ip link set v1 up",
]


def test_sending_to_a_broadcast_address_without_broadcast_says_to_add_it():
    # The kernel refuses before anything is sent (no SO_BROADCAST), and the
    # namespace has no way out anyway.
    result = run_cli_in_netns(ONE_NETWORK, "send", "--host", "10.98.0.255")
    assert result.returncode == 1
    assert result.stderr == (
        "trioudp send: error: cannot send to 10.98.0.255: Permission denied"
        " (is it a broadcast address? add --broadcast to send to one)\n"
    )


def test_joining_a_group_no_route_leads_to_says_to_name_an_interface():
    result = run_cli_in_netns(
        LOOPBACK_ONLY, "listen", "--group", "239.1.2.3", "--port", "0"
    )
    assert result.returncode == 1
    assert result.stderr == (
        "trioudp listen: error: cannot join 239.1.2.3: No such device (no route"
        " picks an interface for the group: name one with --interface, or add"
        " a route for it)\n"
    )


async def test_a_worker_reports_errors_inside_exception_groups(monkeypatch, capfd):
    async def failing(args, worker):
        async with trio.open_nursery():
            raise trioudp.BindError("127.0.0.1", 1, OSError(errno.EADDRINUSE, "busy"))

    monkeypatch.setitem(_serve.SERVER_COMMANDS, "echo", failing)
    worker = trioudp.Worker(
        WorkerSettings(
            target=WORKER_TARGET,
            index=0,
            count=2,
            port=0,
            args=("echo", "--port", "0", "--workers", "2"),
            grace=1.0,
            control_fd=-1,
            report_fd=-1,
        )
    )
    assert await cli_worker(worker) == 1
    assert capfd.readouterr().err == (
        "trioudp echo: error: cannot bind UDP socket to '127.0.0.1' port 1: busy"
        " (another socket already uses it; pick another port, or 0 for any free"
        " one)\n"
    )
