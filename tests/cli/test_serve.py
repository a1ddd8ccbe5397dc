"""The server commands (``serve``, ``echo``, ``listen``): as real processes
on loopback, and in process on the virtual network."""

import functools
import re
import signal
import socket

import pytest
import trio
import trio.testing

import trioudp
from trioudp._cli import _send, _serve, build_parser
from trioudp._cli._output import EXIT_INTERRUPTED

from ..conftest import requires_ipv6
from .helpers import (
    INTEROP,
    banner_port,
    finish,
    run,
    run_cli,
    spawn_cli,
    start_hello,
)


def test_serve_and_send_end_to_end():
    server = spawn_cli("serve", "--host", "127.0.0.1", "--port", "0")
    port = banner_port(server)
    client = run_cli("send", "--port", str(port))
    assert client.returncode == 0, client.stderr
    assert client.stdout == "Received Hello, client! from server\n"
    code, out, _ = finish(server)
    assert code == 0
    assert re.fullmatch(
        r"Received Hello, server! from \('127\.0\.0\.1', \d+\)\nReceived exit from \('127\.0\.0\.1', \d+\)\nServer exiting\.\.\.\n",
        out,
    )


def test_the_tutorials_stdlib_client_against_trioudp_serve():
    server = spawn_cli("serve", "--host", "127.0.0.1", "--port", "0")
    port = banner_port(server)
    client = run(str(INTEROP / "tutorial_client.py"), str(port))
    assert client.returncode == 0, client.stderr
    assert client.stdout == "Received Hello, client! from server\n"
    code, out, _ = finish(server)
    assert code == 0
    assert out.endswith("Server exiting...\n")


def test_serve_bind_failure_exits_1_with_a_clear_message():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = run_cli("serve", "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == 1
    assert f"cannot bind UDP socket to '127.0.0.1' port {port}" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signals_stop_serve_gracefully(signum):
    server = spawn_cli("echo", "--port", "0")
    port = banner_port(server)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(10)
        probe.sendto(b"ping", ("127.0.0.1", port))
        assert probe.recv(100) == b"ping"
    server.send_signal(signum)
    code, _, err = finish(server)
    assert code == 128 + signum  # 130 for SIGINT, 143 for SIGTERM, as the docs say
    assert f"Received {signal.Signals(signum).name}, shutting down" in err


@pytest.mark.parametrize(
    ("command", "reply"), [("serve", b"Hello, client!"), ("echo", b"ping")]
)
def test_sigusr1_prints_a_single_servers_counters_as_its_exit_does(command, reply):
    server = spawn_cli(command, "--port", "0")
    try:
        port = banner_port(server)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.settimeout(10)
            probe.sendto(b"ping", ("127.0.0.1", port))
            assert probe.recv(100) == reply
        server.send_signal(signal.SIGUSR1)
        line = server.stderr.readline()
        server.send_signal(signal.SIGTERM)
        code, _, err = finish(server)
    finally:
        server.kill()
    totals = (
        "totals: received 1, handled 1, replied 1, dropped 0, handler errors 0,"
        " kernel drops 0"
    )
    assert line == f"{totals}\n"
    assert code == 128 + signal.SIGTERM, err  # not killed by SIGUSR1 (138)
    assert err.endswith(f"Received SIGTERM, shutting down...\n{totals}\n")


def test_verbose_logs_what_was_bound_and_each_datagram():
    server = spawn_cli("-v", "echo", "--port", "0")
    try:
        port = banner_port(server)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.settimeout(10)
            probe.bind(("127.0.0.1", 0))
            probe.sendto(b"ping", ("127.0.0.1", port))
            assert probe.recv(100) == b"ping"
            source = probe.getsockname()[1]
        server.send_signal(signal.SIGTERM)
        _, _, err = finish(server)
    finally:
        server.kill()
    assert f"DEBUG trioudp: bound 127.0.0.1:{port}\n" in err
    assert f"DEBUG trioudp: datagram from ('127.0.0.1', {source}): 4 bytes\n" in err


def test_serve_exits_130_on_ctrl_c_after_a_graceful_stop():
    server = spawn_cli("serve", "--host", "127.0.0.1", "--port", "0")
    banner_port(server)
    server.send_signal(signal.SIGINT)
    code, out, err = finish(server)
    assert code == EXIT_INTERRUPTED == 130
    assert out.endswith("Server exiting...\n")
    assert "Received SIGINT, shutting down" in err


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


@pytest.mark.parametrize("command", ["serve", "echo"])
def test_servers_turn_protection_on_by_default(command):
    parser = build_parser()
    protection = _serve.Protection.from_args(parser.parse_args([command]))
    assert protection.amplification_factor == 3
    assert (protection.rate_limit.rate, protection.rate_limit.burst) == (50, 100)
    assert protection.rate_limit.exempt
    off = _serve.Protection.from_args(
        parser.parse_args([command, "--rate-limit", "0", "--amplification-factor", "0"])
    )
    assert off == _serve.Protection()


async def test_serve_rate_limits_a_remote_flood(
    virtual_network, autojump_clock, nursery, capsys
):
    server_host = virtual_network.add_host("192.0.2.10")
    virtual_network.add_host("192.0.2.20")
    protection = _serve.Protection.from_args(build_parser().parse_args(["serve"]))
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


@pytest.mark.parametrize(
    ("argv", "banner", "answered"),
    [
        ([], "127.0.0.1:12345", ["127.0.0.1"]),
        (["--host", "::"], "[::]:12345", ["127.0.0.1", "::1"]),
    ],
)
async def test_serve_answers_on_loopback_by_default_and_everywhere_when_asked(
    virtual_network, nursery, capsys, argv, banner, answered
):
    args = build_parser().parse_args(["serve", *argv])
    server = await nursery.start(
        functools.partial(
            _serve.serve_until_exit,
            functools.partial(_serve.hello_handler, allow_remote_exit=False),
            args.host,
            args.port,
            "Server is listening on {address}",
            watch_signals=False,
        )
    )
    assert capsys.readouterr().out == f"Server is listening on {banner}\n"
    for host in answered:
        async with trioudp.open_udp_client(host, 12345) as client:
            assert (await client.request(b"hi")).data == b"Hello, client!"
    await server.shutdown()


@requires_ipv6
def test_ipv6_banner_puts_the_host_in_brackets():
    server = spawn_cli("echo", "--host", "::1", "--port", "0")
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
    await _send.hello_exchange(
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
    handler = _serve._listen_handler(trio.Event())
    async with trioudp.open_udp_socket("127.0.0.1", 0) as sock:
        await sock.send_to(b"x", sock.local_address)
        await handler(await sock.receive())
    assert capsys.readouterr().out.endswith(" 1 byte: x\n")


@pytest.mark.parametrize(
    ("payload", "shown"),
    [
        (b"look\xff", "look\\xff"),
        (
            HOSTILE,
            "\\x1b[2J\\x1b[H\\x1b]52;c;ZXZpbA==\\x07\\x0dReceived exit from"
            " ('127.0.0.1', 1)\\x0a\\x7f\\x9b",
        ),
    ],
)
def test_listen_prints_datagrams_escaped(payload, shown):
    server = spawn_cli("listen", "--port", "0")
    port = banner_port(server)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.sendto(payload, ("127.0.0.1", port))
    line = server.stdout.readline()
    server.send_signal(signal.SIGTERM)
    assert finish(server)[0] == 128 + signal.SIGTERM
    assert_no_controls(line[:-1])
    assert re.fullmatch(
        rf"\('127\.0\.0\.1', \d+\) {len(payload)} bytes: {re.escape(shown)}\n", line
    )
