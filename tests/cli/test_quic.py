"""``trioudp quic-echo`` and ``trioudp quic-send``: real processes on
loopback, port 0, every wait bounded."""

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import ROOT
from ..quic_support import pki
from ..workers.helpers import DEADLINE
from .helpers import banner_port, finish, run_cli, spawn_cli, workers_banner

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="worker steering is Linux's"
)

WARNING_LINES = 8


def self_signed_path(server):
    """The certificate a quic-echo that made its own names in its warning."""
    lines = [server.stderr.readline() for _ in range(WARNING_LINES)]
    text = "".join(lines)
    assert "SELF-SIGNED" in text, text
    match = re.search(r"--ca (\S+cert\.pem) ", text)
    assert match, text
    return Path(match.group(1))


def test_quic_echo_makes_a_certificate_says_so_and_quic_send_trusting_it_is_answered():
    server = spawn_cli("quic-echo", "--port", "0")
    try:
        port = banner_port(server)
        cert = self_signed_path(server)
        assert cert.is_file()
        sent = run_cli("quic-send", "--ca", str(cert), "--port", str(port), "ping")
        assert (sent.returncode, sent.stderr) == (0, "")
        assert sent.stdout == "Received ping from server (4 bytes, ALPN echo)\n"
        # By name too: the certificate is for localhost.
        sent = run_cli("quic-send", "--ca", str(cert), "--host", "localhost",
                       "--port", str(port))  # fmt: skip
        assert sent.stdout.startswith("Received Hello, QUIC! from server"), sent
        # Without being told to trust it, a client refuses it.
        refused = run_cli("quic-send", "--port", str(port))
        assert refused.returncode == 1
        assert "certificate" in refused.stderr
        server.send_signal(signal.SIGTERM)
        code, _, err = finish(server)
    finally:
        server.kill()
    assert code == 128 + signal.SIGTERM
    assert "Received SIGTERM, shutting down..." in err
    assert "totals: connections 3, established 2, handshakes failed 1" in err
    assert not cert.parent.exists()  # made for the run, gone with it


def test_quic_echo_serves_the_certificate_it_is_given_without_a_warning():
    server = spawn_cli(
        "quic-echo", "--port", "0", "--alpn", "hq-test",
        "--certificate", str(pki() / "cert.pem"), "--key", str(pki() / "key.pem"),
    )  # fmt: skip
    try:
        port = banner_port(server)
        sent = run_cli(
            "quic-send", "--ca", str(pki() / "ca.pem"), "--host", "localhost",
            "--port", str(port), "--alpn", "hq-test", "hello",
        )  # fmt: skip
        assert sent.stdout == "Received hello from server (5 bytes, ALPN hq-test)\n"
        server.send_signal(signal.SIGINT)
        code, _, err = finish(server)
    finally:
        server.kill()
    assert code == 128 + signal.SIGINT
    assert "SELF-SIGNED" not in err


def test_quic_echo_with_workers_answers_counts_and_stops():
    server = spawn_cli("quic-echo", "--port", "0", "--workers", "2")
    try:
        port, pids = workers_banner(server)
        assert len(pids) == 2
        cert = self_signed_path(server)
        for i in range(6):
            sent = run_cli("quic-send", "--ca", str(cert), "--port", str(port),
                           f"m{i}")  # fmt: skip
            assert sent.stdout.startswith(f"Received m{i} from server"), sent
        server.send_signal(signal.SIGUSR1)
        line = server.stderr.readline()
        assert line.startswith("totals of 2 workers: received "), line
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=DEADLINE)
    finally:
        server.kill()
    assert server.returncode == 128 + signal.SIGINT
    assert "totals of 2 workers: received" in err
    assert not cert.parent.exists()


def test_quic_send_gives_up_after_its_timeout():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # takes datagrams, answers none
        port = silent.getsockname()[1]
        sent = run_cli("quic-send", "--insecure", "--port", str(port),
                       "--timeout", "0.5")  # fmt: skip
    assert sent.returncode == 1
    assert sent.stderr == "trioudp quic-send: no answer within 0.5 s\n"


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["quic-echo", "--certificate", "cert.pem"], 2, "--certificate and --key"),
        (["quic-send", "--ca", "ca.pem", "--insecure"], 2, "not allowed with"),
        (["quic-send", "--timeout", "0"], 2, "must be a number > 0"),
    ],
)
def test_quic_commands_refuse_what_cannot_work(args, code, says):
    result = run_cli(*args)
    assert result.returncode == code
    assert says in result.stderr


@pytest.mark.parametrize("command", ["quic-echo", "quic-send"])
def test_quic_commands_without_aioquic_say_what_to_install(command):
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['aioquic'] = None;"
            " from trioudp._cli import main; sys.exit(main(sys.argv[1:]))",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"trioudp {command}: error: needs the quic extra (aioquic):"
        " pip install 'trioudp[quic]'\n"
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["quic-send", "--ca", "{missing}"],
            r"cannot load --ca \S+ \(No such file or directory\)",
        ),
        (["quic-send", "--ca", "{not_pem}"], r"cannot load --ca \S+ \(Unable to load"),
        (
            ["quic-echo", "--certificate", "{not_pem}"],
            r"give --certificate and --key together",
        ),
        (
            ["quic-echo", "--certificate", "{not_pem}", "--key", "{not_pem}"],
            r"cannot load --certificate \S+ with --key \S+ \(Unable to load",
        ),
    ],
)
def test_files_that_do_not_load_are_usage_errors_naming_the_command(
    tmp_path, args, says
):
    """Checked before anything starts: exit 2, the command's usage, and what
    to give instead; no traceback (a bad --ca waited out its timeout, a bad
    certificate raised ValueError from the server)."""
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("not a certificate\n")
    paths = {"missing": tmp_path / "missing.pem", "not_pem": not_pem}
    result = run_cli(*[arg.format(**paths) for arg in args])
    assert result.returncode == 2
    assert result.stderr.startswith(f"usage: trioudp {args[0]} ")
    assert re.search(f"trioudp {args[0]}: error: {says}", result.stderr)
    assert "Traceback" not in result.stderr
