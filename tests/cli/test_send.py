"""The client commands (``send``, ``demo``): against trioudp's server, the
tutorial's stdlib server, a silent peer and a closed port."""

import argparse
import logging
import re
import socket
import time

import pytest
import trio

import trioudp
from trioudp._cli import _send, build_parser

from .helpers import (
    INTEROP,
    banner_port,
    finish,
    run_cli,
    spawn,
    start_hello,
)


def test_demo_prints_the_whole_exchange():
    result = run_cli("demo")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"Server is listening on 127\.0\.0\.1:\d+", lines[0])
    assert re.fullmatch(
        r"Received Hello, server! from \('127\.0\.0\.1', \d+\)", lines[1]
    )
    assert lines[2] == "Received Hello, client! from server"
    assert re.fullmatch(r"Received exit from \('127\.0\.0\.1', \d+\)", lines[3])
    assert lines[4] == "Server exiting..."
    assert len(lines) == 5


def test_trioudp_send_against_the_tutorials_stdlib_server():
    server = spawn(str(INTEROP / "tutorial_server.py"), "0")
    port = banner_port(server)
    client = run_cli("send", "--port", str(port), "--timeout", "5")
    assert client.returncode == 0, client.stderr
    assert client.stdout == "Received Hello, client! from server\n"
    code, out, _ = finish(server)
    assert code == 0
    assert "Received Hello, server! from ('127.0.0.1'" in out
    assert re.search(
        r"Received exit from \('127\.0\.0\.1', \d+\)\nServer exiting\.\.\.\n$", out
    )


def test_send_to_a_silent_peer_fails_within_its_budget():
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        started = time.monotonic()
        result = run_cli(
            "send",
            "--port",
            str(port),
            "--timeout",
            "1.0",
            "--retries",
            "2",
        )
        elapsed = time.monotonic() - started
        assert silent.recv(100) == b"Hello, server!"
    assert result.returncode == 1
    assert f"no reply from ('127.0.0.1', {port}) after 3 attempts" in result.stderr
    assert result.stdout == ""
    assert 1.0 <= elapsed < 10


def test_send_to_a_closed_port_fails_at_once():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_cli("send", "--port", str(port), "--timeout", "20")
    assert result.returncode == 1
    assert f"('127.0.0.1', {port}) is unreachable" in result.stderr


async def test_send_command_in_process(virtual_network, nursery, capsys):
    await start_hello(nursery)
    args = argparse.Namespace(
        host="localhost",
        port=12345,
        message="hi there",
        timeout=1.0,
        retries=0,
        no_exit=True,
        broadcast=False,
    )
    assert await _send.send_command(args) == 0
    assert capsys.readouterr().out.endswith("Received Hello, client! from server\n")


async def test_send_gives_up_exactly_at_its_timeout_and_logs_its_attempts(
    virtual_network, autojump_clock, caplog
):
    caplog.set_level(logging.DEBUG, logger="trioudp")
    async with trioudp.open_udp_socket("127.0.0.1", 0) as silent:
        port = silent.local_address[1]
        args = build_parser().parse_args(["send", "--port", str(port)])
        start = trio.current_time()
        with pytest.raises(trioudp.RequestTimeout) as info:
            await _send.send_command(args)
        assert trio.current_time() - start == pytest.approx(args.timeout, abs=1e-9)
    assert info.value.attempts == 3
    assert (
        f"sending 14 bytes to ('127.0.0.1', {port}): up to 3 attempts, waiting"
        " 0.143 s for the first reply, up to 1 s in all" in caplog.text
    )
    assert "3 datagrams sent (2 retransmitted) in 1.000 s" in caplog.text
