"""The console every line of the command line goes through: a line never
blocks, lines a reader does not take in time are dropped and counted, the
end is bounded, a reader that left is not an error, and the files the
process was given keep their blocking mode."""

import contextlib
import fcntl
import os
import pty

import pytest
import trio

from trioudp._cli import _console
from trioudp._cli._console import CLOSED, DRAIN, GONE, Console, LineWriter

PAGE = os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def small_pipe():
    """A pipe of one page, its write end non-blocking: (read end, write end)."""
    read, write = os.pipe()
    fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, PAGE)
    os.set_blocking(write, False)
    yield read, write
    for fd in (read, write):
        with contextlib.suppress(OSError):  # a test closed it
            os.close(fd)


def read_all(fd):
    os.set_blocking(fd, False)
    data = bytearray()
    try:
        while chunk := os.read(fd, 1 << 16):
            data += chunk
    except BlockingIOError:
        pass
    return bytes(data)


async def test_lines_a_reader_does_not_take_are_dropped_counted_and_the_end_bounded(
    small_pipe, autojump_clock
):
    read, write = small_pipe
    writer = LineWriter(limit=10_000)
    line = "x" * 99  # 100 bytes with its newline
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.write_to, write)
        for _ in range(500):
            writer.line(line)  # never blocks, never a checkpoint
            await trio.lowlevel.checkpoint()
        # The page is full and 10,000 bytes wait, no more (those being
        # written among them: one batch or two, as the tasks ran): the rest
        # was dropped.
        accepted = 500 - writer.dropped
        assert PAGE + 10_000 - 300 < accepted * 100 <= PAGE + 10_000
        started = trio.current_time()
        await writer.aclose()
        assert trio.current_time() - started == DRAIN  # then it gave up
    written = read_all(read)
    complete = written.count(b"\n")
    assert complete + writer.dropped == 500
    assert set(written.split(b"\n")[:complete]) == {b"x" * 99}
    writer.line(line)  # after the end: dropped too
    assert complete + writer.dropped == 501


async def test_lines_waiting_at_the_end_are_written_for_a_reader_that_reads(
    small_pipe,
):
    read, write = small_pipe
    writer = LineWriter()
    got = bytearray()

    async def reader():
        while len(got) < 300 * 100:
            await trio.lowlevel.wait_readable(read)
            got.extend(os.read(read, 1 << 16))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.write_to, write)
            for index in range(300):
                writer.line(f"{index:>99}")
            nursery.start_soon(reader)
            await writer.aclose()
    assert writer.dropped == 0
    assert got.decode().split() == [str(index) for index in range(300)]


async def test_a_reader_that_closes_its_end_is_no_error_and_nothing_is_counted(
    small_pipe,
):
    read, write = small_pipe
    writer = LineWriter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.write_to, write)
        os.close(read)
        writer.line("to nobody")
        with trio.fail_after(5):
            await writer.gone.wait()
        writer.line("discarded")
        await writer.aclose()
    assert writer.dropped == 0


@pytest.mark.parametrize("where", [CLOSED, GONE])
async def test_nowhere_to_write_discards_lines_and_only_a_gone_reader_says_so(where):
    writer = LineWriter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.write_to, where)
        writer.line("nowhere")
        await writer.aclose()
    assert writer.dropped == 0
    assert writer.gone.is_set() == (where == GONE)


def test_a_pipe_or_terminal_is_written_through_a_file_of_its_own():
    # Non-blocking mode belongs to the open file: set on the one the process
    # was given, it would be set for the shell and the other processes that
    # share it (the --workers, a terminal's stdin), which may not expect it.
    read, write = os.pipe()
    main, terminal = pty.openpty()
    try:
        for fd in (write, terminal):
            with (
                os.fdopen(os.dup(fd), "w") as stream,
                _console._descriptor(stream) as own,
            ):
                assert own not in (CLOSED, GONE, fd)
                assert not os.get_blocking(own)
                assert os.get_blocking(fd)
                os.write(own, b"through\n")
        assert os.read(read, 100) == b"through\n"
        assert os.read(main, 100).replace(b"\r", b"") == b"through\n"
    finally:
        for fd in (read, write, main, terminal):
            os.close(fd)


def test_a_file_is_written_at_its_own_offset_and_a_pipe_without_reader_is_gone(
    tmp_path,
):
    with (tmp_path / "out").open("a") as file:
        file.write("before\n")
        file.flush()
        with _console._descriptor(file) as own:
            os.write(own, b"during\n")
        file.write("after\n")
    assert (tmp_path / "out").read_text() == "before\nduring\nafter\n"
    # A named pipe cannot be opened anew without a reader (an unnamed one
    # can: its writes then fail with EPIPE, as the writer expects).
    os.mkfifo(tmp_path / "fifo")
    read = os.open(tmp_path / "fifo", os.O_RDONLY | os.O_NONBLOCK)
    write = os.open(tmp_path / "fifo", os.O_WRONLY)
    os.close(read)
    with os.fdopen(write, "w") as stream, _console._descriptor(stream) as own:
        assert own == GONE
    with _console._descriptor(None) as own:
        assert own == CLOSED


async def test_the_counters_note_names_what_was_dropped_and_the_end_what_it_did_not(
    small_pipe, autojump_clock
):
    console = Console("trioudp test")
    assert console.dropped_note() == ""
    console.out.dropped = 3
    console.err.dropped = 1
    assert console.dropped_note() == ", stdout lines dropped 3, stderr lines dropped 1"
    read, write = small_pipe
    async with trio.open_nursery() as nursery:
        nursery.start_soon(console.out.write_to, CLOSED)
        nursery.start_soon(console.err.write_to, write)
        await console.aclose()
    assert read_all(read) == b""  # named on the counters line already
    console = Console("trioudp test")
    console.out.dropped = 2
    async with trio.open_nursery() as nursery:
        nursery.start_soon(console.out.write_to, CLOSED)
        nursery.start_soon(console.err.write_to, write)
        await console.aclose()
    assert read_all(read) == (
        b"trioudp test: 2 lines of output dropped: stdout was not read (lines"
        b" waiting at the end get 1 s)\n"
    )


def test_without_a_console_lines_are_printed_as_they_come(capsys):
    _console.say("out")
    _console.warn("err")
    assert capsys.readouterr() == ("out\n", "err\n")
