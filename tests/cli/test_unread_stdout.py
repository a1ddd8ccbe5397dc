"""``trioudp serve`` and ``trioudp listen`` print each datagram. With a
blocking write, once the pipe to a reader that does not read was full (64
KiB on Linux; a terminal stopped with Ctrl-S, a slow pager), the whole
server stopped, and SIGTERM was not even seen; not UTF-8 was printed
escaped, 4 characters a byte, so one 20,000-byte datagram of ``0xff`` filled
the pipe. Now every line is queued for a writer that never blocks (lines
not read in time are dropped and counted) and a datagram's line shows at
most its first 512 bytes. Stdout may be a pipe, a file, a terminal, closed,
or a pipe whose reader left."""

import functools
import os
import pty
import re
import signal
import subprocess
import sys

import pytest
import trio

from trioudp._cli._console import LIMIT

from ..realprocs import WAIT, running, trioudp_command
from .helpers import ROOT, TIMEOUT


@pytest.mark.parametrize("command", ["serve", "listen"])
async def test_an_unread_stdout_neither_stops_the_server_nor_delays_sigterm(command):
    async with running(trioudp_command(command, "--port", "0")) as server:
        port = await server.port_from_banner("stdout")
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
            await sock.connect(("127.0.0.1", port))
            await sock.send(b"\xff" * 20_000)
            await sock.send(b"probe")
            if command == "serve":
                with trio.fail_after(3):
                    while await sock.recv(100) != b"Hello, client!":
                        pass
        with trio.fail_after(3):
            code, _, err = await server.stop_leaving_stdout_unread()
        line = await server.stdout.line()
    assert code == 143
    assert "totals: received 2," in err
    assert "\\xff... (20000 bytes)" in line
    assert len(line) < 4 * 512 + 60


def dropped(line):
    found = re.search(r", stdout lines dropped (\d+)$", line)
    return int(found.group(1)) if found else 0


async def test_lines_not_read_are_dropped_counted_and_the_exit_is_bounded():
    # Each line is over 2 KiB: enough of them fill the pipe and twice the
    # writer's limit; every datagram is still answered at once.
    count = 2 * (LIMIT + (1 << 16)) // (4 * 512)
    async with running(trioudp_command("serve", "--port", "0")) as server:
        port = await server.port_from_banner("stdout")
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
            await sock.connect(("127.0.0.1", port))
            for _ in range(count):
                await sock.send(b"\xff" * 512)
                with trio.fail_after(WAIT):
                    assert await sock.recv(100) == b"Hello, client!"
        server.process.send_signal(signal.SIGUSR1)
        usr1 = await server.stderr.line()
        code, seconds, err = await server.stop_leaving_stdout_unread()
        written = (await server.stdout.rest()).count("\n")
    assert code == 143
    assert seconds < 5  # 1 s for stdout, at most, and the graceful stop
    assert dropped(usr1) > 0
    final = err.splitlines()[-1]
    assert final.startswith(f"totals: received {count}, handled {count},")
    assert dropped(usr1) <= dropped(final)
    assert written + dropped(final) == 1 + count  # the banner and a line each
    assert "of output dropped" not in err  # the counters line said it


async def test_a_reader_that_closes_its_end_stops_the_server_quietly():
    async with running(trioudp_command("listen", "--port", "0")) as server:
        port = await server.port_from_banner("stdout")
        await server.process.stdout.aclose()
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
            await sock.sendto(b"to nobody", ("127.0.0.1", port))
        err = await server.stderr.rest()
        with trio.fail_after(WAIT):
            code = await server.process.wait()
    assert code == 1
    assert err.startswith("totals: received 1,")
    assert len(err.splitlines()) == 1  # no error, no traceback


def demo(stdout, **options):
    """``trioudp demo`` to ``stdout``: its exit code and stderr."""
    process = subprocess.Popen(
        [sys.executable, "-m", "trioudp", "demo"],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        **options,
    )
    if stdout == subprocess.PIPE:
        process.stdout.close()  # long before it prints
    _, err = process.communicate(timeout=TIMEOUT)
    return process.returncode, err


def test_a_client_whose_reader_left_exits_quietly_and_one_without_stdout_succeeds():
    assert demo(subprocess.PIPE) == (1, "")
    # Closed from the start (>&-): print() wrote nothing, and nor does it.
    closed = {"preexec_fn": lambda: os.close(1)}
    assert demo(subprocess.DEVNULL, **closed) == (0, "")


def test_stdout_may_be_a_file(tmp_path):
    with (tmp_path / "out").open("w") as file:
        assert demo(file) == (0, "")
    lines = (tmp_path / "out").read_text().splitlines()
    assert lines[0].startswith("Server is listening on 127.0.0.1:")
    assert (
        lines[1:]
        == [
            "Received Hello, server! from ('127.0.0.1', " + lines[1].split("', ")[1],
            "Received Hello, client! from server",
            "Received exit from ('127.0.0.1', " + lines[3].split("', ")[1],
            "Server exiting...",
        ][: len(lines) - 1]
    )
    assert len(lines) == 5


async def test_a_terminal_is_left_as_it_was_while_the_server_writes_to_it():
    # The terminal's open file is shared with the shell (and stdin): made
    # non-blocking, the shell's next read would fail.
    main, terminal = pty.openpty()
    try:
        async with trio.open_nursery() as nursery:
            process = await nursery.start(
                functools.partial(
                    trio.run_process,
                    trioudp_command("listen", "--port", "0"),
                    stdout=terminal,
                    stderr=subprocess.DEVNULL,
                    check=False,
                )
            )
            output = bytearray()
            with trio.fail_after(WAIT):
                while b"\n" not in output:
                    await trio.lowlevel.wait_readable(main)
                    output += os.read(main, 1000)
            assert os.get_blocking(terminal)
            port = int(re.search(rb":(\d+)\r?\n", output).group(1))
            with trio.socket.socket(
                trio.socket.AF_INET, trio.socket.SOCK_DGRAM
            ) as sock:
                await sock.sendto(b"hi \x1b[2J", ("127.0.0.1", port))
            with trio.fail_after(WAIT):
                while not output.endswith(b"\n") or output.count(b"\n") < 2:
                    await trio.lowlevel.wait_readable(main)
                    output += os.read(main, 1000)
            assert os.get_blocking(terminal)
            process.terminate()
    finally:
        os.close(main)
        os.close(terminal)
    assert output.splitlines()[1].endswith(b" 7 bytes: hi \\x1b[2J")
