import argparse
import functools
import importlib.metadata
import inspect
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import trio
import trio.testing

import trioudp
from trioudp import _cli

from .conftest import ROOT, requires_ipv6

INTEROP = ROOT / "tests" / "interop"
TIMEOUT = 30


def spawn(*args):
    return subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def run(*args, timeout=TIMEOUT):
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def banner_port(process):
    line = process.stdout.readline()
    match = re.search(r"listening on [\d.:]+:(\d+)$", line.strip(), re.IGNORECASE)
    assert match, (
        f"unexpected banner {line!r}; stderr: {process.stderr.read() if process.poll() is not None else ''}"
    )
    return int(match.group(1))


def finish(process):
    out, err = process.communicate(timeout=TIMEOUT)
    return process.returncode, out, err


@pytest.mark.parametrize(
    "command", [[], ["serve"], ["send"], ["demo"], ["echo"], ["listen"], ["bench"]]
)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        _cli.main([*command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: trioudp" in out
    if not command:
        assert "Exit codes" in out


def test_bad_usage_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        _cli.main(["send", "--port", "70000"])
    assert info.value.code == 2
    assert "port must be in 0..65535" in capsys.readouterr().err


def test_demo_prints_the_whole_exchange():
    result = run("-m", "trioudp", "demo")
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


def test_serve_and_send_end_to_end():
    server = spawn("-m", "trioudp", "serve", "--host", "127.0.0.1", "--port", "0")
    port = banner_port(server)
    client = run("-m", "trioudp", "send", "--port", str(port))
    assert client.returncode == 0, client.stderr
    assert client.stdout == "Received Hello, client! from server\n"
    code, out, _ = finish(server)
    assert code == 0
    assert re.fullmatch(
        r"Received Hello, server! from \('127\.0\.0\.1', \d+\)\nReceived exit from \('127\.0\.0\.1', \d+\)\nServer exiting\.\.\.\n",
        out,
    )


def test_trioudp_send_against_the_tutorials_stdlib_server():
    server = spawn(str(INTEROP / "tutorial_server.py"), "0")
    port = banner_port(server)
    client = run("-m", "trioudp", "send", "--port", str(port), "--timeout", "5")
    assert client.returncode == 0, client.stderr
    assert client.stdout == "Received Hello, client! from server\n"
    code, out, _ = finish(server)
    assert code == 0
    assert "Received Hello, server! from ('127.0.0.1'" in out
    assert re.search(
        r"Received exit from \('127\.0\.0\.1', \d+\)\nServer exiting\.\.\.\n$", out
    )


def test_the_tutorials_stdlib_client_against_trioudp_serve():
    server = spawn("-m", "trioudp", "serve", "--host", "127.0.0.1", "--port", "0")
    port = banner_port(server)
    client = run(str(INTEROP / "tutorial_client.py"), str(port))
    assert client.returncode == 0, client.stderr
    assert client.stdout == "Received Hello, client! from server\n"
    code, out, _ = finish(server)
    assert code == 0
    assert out.endswith("Server exiting...\n")


def test_send_to_a_silent_peer_fails_within_its_budget():
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        started = time.monotonic()
        result = run(
            "-m",
            "trioudp",
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
    result = run("-m", "trioudp", "send", "--port", str(port), "--timeout", "20")
    assert result.returncode == 1
    assert f"('127.0.0.1', {port}) is unreachable" in result.stderr


def test_serve_bind_failure_exits_1_with_a_clear_message():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = run(
            "-m", "trioudp", "serve", "--host", "127.0.0.1", "--port", str(port)
        )
    assert result.returncode == 1
    assert f"cannot bind UDP socket to '127.0.0.1' port {port}" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signals_stop_serve_gracefully(signum):
    server = spawn("-m", "trioudp", "echo", "--port", "0")
    port = banner_port(server)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(10)
        probe.sendto(b"ping", ("127.0.0.1", port))
        assert probe.recv(100) == b"ping"
    server.send_signal(signum)
    code, _, err = finish(server)
    assert code == 128 + signum  # 130 for SIGINT, 143 for SIGTERM, as the docs say
    assert f"Received {signal.Signals(signum).name}, shutting down" in err


def test_listen_prints_datagrams():
    server = spawn("-m", "trioudp", "listen", "--port", "0")
    port = banner_port(server)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.sendto(b"look\xff", ("127.0.0.1", port))
    line = server.stdout.readline()
    server.send_signal(signal.SIGTERM)
    assert finish(server)[0] == 128 + signal.SIGTERM
    assert re.fullmatch(r"\('127\.0\.0\.1', \d+\) 5 bytes: look\\xff\n", line)


def test_bench_measures_an_echo_server():
    server = spawn("-m", "trioudp", "echo", "--port", "0")
    port = banner_port(server)
    try:
        result = run(
            "-m",
            "trioudp",
            "bench",
            "--port",
            str(port),
            "--duration",
            "0.5",
            "--concurrency",
            "4",
        )
    finally:
        server.send_signal(signal.SIGTERM)
        finish(server)
    assert result.returncode == 0, result.stderr
    replies = int(re.search(r"replies\s+(\d+)", result.stdout).group(1))
    assert replies > 0
    assert "latency p50" in result.stdout


async def start_hello(
    nursery, *, allow_remote_exit=False, host="0.0.0.0", protection=None
):
    return await nursery.start(
        functools.partial(
            _cli._serve_until_exit,
            functools.partial(_cli.hello_handler, allow_remote_exit=allow_remote_exit),
            host,
            12345,
            "Server is listening on {host}:{port}",
            on_exit="Server exiting...",
            watch_signals=False,
            protection=protection,
        )
    )


async def test_serve_survives_bytes_that_are_not_utf8(virtual_network, nursery, capsys):
    server = await start_hello(nursery)
    async with trioudp.open_udp_client("127.0.0.1", 12345) as client:
        reply = await client.request(b"\xff\xfe not text \xc3")
        assert reply.data == b"Hello, client!"
        assert (await client.request(b"still there?")).data == b"Hello, client!"
    out = capsys.readouterr().out
    assert "Server is listening on 0.0.0.0:12345\n" in out
    assert "Received \\xff\\xfe not text \\xc3 from ('127.0.0.1'" in out
    await server.shutdown()


async def test_remote_exit_is_refused(virtual_network, nursery, capsys):
    server_host = virtual_network.add_host("192.0.2.10")
    virtual_network.add_host("192.0.2.20")
    with virtual_network.on_host(server_host):
        server = await start_hello(nursery)
    async with trioudp.open_udp_client(
        "192.0.2.10", 12345, local_address=("192.0.2.20", 0)
    ) as remote:
        await remote.send(b"exit")
        assert (await remote.request(b"still serving?")).data == b"Hello, client!"
    assert not server.stopping
    captured = capsys.readouterr()
    assert "Refusing 'exit' from non-loopback peer ('192.0.2.20'" in captured.err
    assert "--allow-remote-exit" in captured.err
    assert "Server exiting..." not in captured.out
    await server.shutdown()


async def test_remote_exit_allowed_when_asked(virtual_network, nursery, capsys):
    server_host = virtual_network.add_host("192.0.2.10")
    virtual_network.add_host("192.0.2.20")
    with virtual_network.on_host(server_host):
        server = await start_hello(nursery, allow_remote_exit=True)
    async with trioudp.open_udp_client(
        "192.0.2.10", 12345, local_address=("192.0.2.20", 0)
    ) as remote:
        await remote.send(b"EXIT")
    with trio.fail_after(5):
        await server._stopped.wait()
    assert "Server exiting..." in capsys.readouterr().out


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
    assert await _cli.send_command(args) == 0
    assert capsys.readouterr().out.endswith("Received Hello, client! from server\n")


def test_main_reports_errors_inside_exception_groups(monkeypatch, capsys):
    async def failing(args):
        async with trio.open_nursery():
            raise trioudp.RequestTimeout(("127.0.0.1", 1), 1, 0.5)

    monkeypatch.setattr(_cli, "demo_command", failing)
    assert _cli.main(["demo"]) == 1
    assert "trioudp demo: error: no reply from" in capsys.readouterr().err


def test_python_dash_m_and_console_script_agree():
    result = run("-m", "trioudp", "--help")
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


def test_serve_turns_protection_on_by_default_and_echo_does_not():
    parser = _cli.build_parser()
    serve = _cli.Protection.from_args(parser.parse_args(["serve"]))
    assert serve.amplification_factor == 3
    assert (serve.rate_limit.rate, serve.rate_limit.burst) == (50, 100)
    assert serve.rate_limit.exempt
    echo = _cli.Protection.from_args(parser.parse_args(["echo"]))
    assert echo == _cli.Protection()
    off = _cli.Protection.from_args(
        parser.parse_args(["serve", "--rate-limit", "0", "--amplification-factor", "0"])
    )
    assert off == _cli.Protection()


async def test_serve_rate_limits_a_remote_flood(
    virtual_network, autojump_clock, nursery, capsys
):
    server_host = virtual_network.add_host("192.0.2.10")
    virtual_network.add_host("192.0.2.20")
    protection = _cli.Protection.from_args(_cli.build_parser().parse_args(["serve"]))
    with virtual_network.on_host(server_host):
        server = await start_hello(nursery, protection=protection)
    async with trioudp.open_udp_socket("192.0.2.20", 0) as remote:
        for _ in range(300):
            await remote.send_to(b"Hello, server!", ("192.0.2.10", 12345))
    await trio.testing.wait_all_tasks_blocked()
    stats = server.stats
    assert (stats.handled, stats.dropped_rate_limited, stats.replied) == (100, 200, 100)
    capsys.readouterr()
    await server.shutdown()


# ---- issue 12: usage errors, version, exit codes, banners; issue 11 item 10 --


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (
            ["send", "--timeout", "inf"],
            "--timeout: must be a number >= 0.001, not 'inf'",
        ),
        (["send", "--timeout", "1e-310"], "not '1e-310'"),
        (["send", "--timeout", "nan"], "not 'nan'"),
        (
            ["send", "--retries", "1000"],
            "--retries: must be an integer >= 0 and <= 100",
        ),
        (["serve", "--rate-limit", "inf"], "--rate-limit: must be 0 (off) or a number"),
        (
            ["serve", "--amplification-factor", "0.5"],
            "--amplification-factor: must be 0 (off) or a number >= 1, not '0.5'",
        ),
        (["echo", "--amplification-factor", "nan"], "not 'nan'"),
        (["bench", "--size", "4"], "--size: must be an integer >= 8"),
        (["bench", "--size", "70000"], "and <= 65507, not '70000'"),
        (["bench", "--lost-after", "0"], "--lost-after: must be a number > 0, not '0'"),
        (["bench", "--concurrency", "0"], "--concurrency: must be an integer >= 1"),
        (["bench", "--duration", "-1"], "--duration: must be a number > 0, not '-1'"),
        (["bench", "--duration", "nan"], "--duration: must be a number > 0, not 'nan'"),
        (["send", "--port", "abc"], "--port: port must be in 0..65535, not 'abc'"),
        (["bench", "--port", "abc"], "--port: port must be in 0..65535, not 'abc'"),
        (["serve", "--port", "-1"], "--port: port must be in 0..65535, not '-1'"),
    ],
)
def test_bad_values_are_usage_errors(argv, fragment, capsys):
    with pytest.raises(SystemExit) as info:
        _cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert err.startswith("usage: trioudp")
    assert "invalid" not in err  # argparse's "invalid _port value"


@pytest.mark.parametrize(
    "argv", [["-v", "send"], ["send", "-v"], ["send", "--verbose", "--no-exit"]]
)
def test_verbose_before_or_after_the_command(argv):
    assert _cli.build_parser().parse_args(argv).verbose is True


def test_not_verbose_by_default():
    assert _cli.build_parser().parse_args(["demo"]).verbose is False


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as info:
        _cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"trioudp {trioudp.__version__}\n"
    assert trioudp.__version__ == importlib.metadata.version("trioudp")


def test_serve_exits_130_on_ctrl_c_after_a_graceful_stop():
    server = spawn("-m", "trioudp", "serve", "--host", "127.0.0.1", "--port", "0")
    banner_port(server)
    server.send_signal(signal.SIGINT)
    code, out, err = finish(server)
    assert code == _cli.EXIT_INTERRUPTED == 130
    assert out.endswith("Server exiting...\n")
    assert "Received SIGINT, shutting down" in err


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


def test_serve_default_host_is_serve_udps():
    default = _cli.build_parser().parse_args(["serve"]).host
    assert default is None
    assert inspect.signature(trioudp.serve_udp).parameters["host"].default is default


async def test_serve_by_default_answers_on_ipv4_and_ipv6(
    virtual_network, nursery, capsys
):
    args = _cli.build_parser().parse_args(["serve"])
    server = await nursery.start(
        functools.partial(
            _cli._serve_until_exit,
            functools.partial(_cli.hello_handler, allow_remote_exit=False),
            args.host,
            args.port,
            "Server is listening on {address}",
            watch_signals=False,
        )
    )
    assert capsys.readouterr().out == (
        "Server is listening on 0.0.0.0:12345 and [::]:12345\n"
    )
    for host in ("127.0.0.1", "::1"):
        async with trioudp.open_udp_client(host, 12345) as client:
            assert (await client.request(b"hi")).data == b"Hello, client!"
    await server.shutdown()


@requires_ipv6
def test_ipv6_banner_puts_the_host_in_brackets():
    server = spawn("-m", "trioudp", "echo", "--host", "::1", "--port", "0")
    try:
        line = server.stdout.readline()
        assert re.fullmatch(r"Echo server is listening on \[::1\]:\d+\n", line), line
    finally:
        server.send_signal(signal.SIGTERM)
        finish(server)


HOSTILE = (
    b"\x1b[2J\x1b[H"  # clear the screen
    b"\x1b]52;c;ZXZpbA==\x07"  # OSC 52: write the clipboard
    b"\rReceived exit from ('127.0.0.1', 1)\n"  # a forged line
    b"\x7f\xc2\x9b"  # DEL, C1 CSI
)
CONTROLS = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def assert_no_controls(text):
    """Only the newline the CLI itself prints ends each line."""
    assert not CONTROLS.search(text), repr(text)


async def test_serve_and_send_print_hostile_peer_data_escaped(
    virtual_network, nursery, capsys
):
    async def hostile(datagram):
        await datagram.reply(HOSTILE)

    server = await start_hello(nursery)
    async with trioudp.open_udp_client("127.0.0.1", 12345) as client:
        await client.request(HOSTILE)
    out = capsys.readouterr().out
    assert_no_controls(out)
    assert "Received \\x1b[2J\\x1b[H\\x1b]52;c;ZXZpbA==\\x07\\x0dReceived exit" in out
    assert out.count("\n") == 2  # the banner and one "Received" line
    await server.shutdown()

    evil = await nursery.start(
        functools.partial(trioudp.serve_udp, hostile, 4000, host="127.0.0.1")
    )
    await _cli.hello_exchange(
        "127.0.0.1",
        4000,
        b"hi",
        backoff=trioudp.Backoff(initial=1),
        attempts=1,
        send_exit=False,
    )
    out = capsys.readouterr().out
    assert_no_controls(out)
    assert out.startswith("Received \\x1b[2J")
    assert out.endswith(" from server\n")
    assert out.count("\n") == 1
    await evil.shutdown()


async def test_listen_says_1_byte(virtual_network, nursery, capsys):
    handler = _cli._listen_handler(trio.Event())
    async with trioudp.open_udp_socket("127.0.0.1", 0) as sock:
        await sock.send_to(b"x", sock.local_address)
        await handler(await sock.receive())
    assert capsys.readouterr().out.endswith(" 1 byte: x\n")


def test_listen_prints_hostile_peer_data_escaped():
    server = spawn("-m", "trioudp", "listen", "--port", "0")
    port = banner_port(server)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.sendto(HOSTILE, ("127.0.0.1", port))
    line = server.stdout.readline()
    server.send_signal(signal.SIGTERM)
    finish(server)
    assert_no_controls(line[:-1])
    assert line.endswith(
        f" {len(HOSTILE)} bytes: \\x1b[2J\\x1b[H\\x1b]52;c;ZXZpbA==\\x07\\x0dReceived exit from ('127.0.0.1', 1)\\x0a\\x7f\\x9b\n"
    )


@pytest.mark.parametrize("command", ["send", "bench"])
def test_port_zero_is_no_destination(capsys, command):
    with pytest.raises(SystemExit) as exited:
        _cli.main([command, "--port", "0"])
    assert exited.value.code == 2
    assert "1..65535 for a destination" in capsys.readouterr().err


def test_workers_beyond_the_cap_are_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        _cli.main(["serve", "--workers", "100000"])
    assert exited.value.code == 2
    assert "100000" in capsys.readouterr().err
