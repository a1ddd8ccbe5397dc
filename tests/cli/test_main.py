"""The entry point: errors become exit codes, and ``python -m trioudp`` and
the console script are the same program."""

import os
import re
import signal
import subprocess
import sys

import trio
import trio.testing

import trioudp
from trioudp._cli import _parser, main

from ..conftest import ROOT
from .helpers import (
    TIMEOUT,
    run_cli,
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
