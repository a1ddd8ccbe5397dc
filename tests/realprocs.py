"""Real programs (servers, third-party clients) under Trio, for the tests
that drive them: every wait bounded by ``trio.fail_after``."""

from __future__ import annotations

import fcntl
import functools
import importlib.util
import os
import re
import signal
import struct
import subprocess
import sys
import termios
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from .conftest import ROOT

if TYPE_CHECKING:
    import types
    from collections.abc import AsyncIterator, Sequence

WAIT = 20  # seconds any one step may take on a loaded machine


class Lines:
    """Lines of text from one of a process's output streams."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self.eof = False

    async def line(self) -> str:
        """The next line (without its newline); EOFError at the end."""
        with trio.fail_after(WAIT):
            while b"\n" not in self._buffer:
                chunk = await self._stream.receive_some()
                if not chunk:
                    self.eof = True
                    raise EOFError(self._buffer.decode(errors="replace"))
                self._buffer += chunk
        line, _, self._buffer[:] = bytes(self._buffer).partition(b"\n")
        return line.decode()

    async def rest(self) -> str:
        """Everything until the end of the stream."""
        with trio.fail_after(WAIT):
            while chunk := await self._stream.receive_some():
                self._buffer += chunk
        rest = self._buffer.decode()
        self._buffer.clear()
        return rest


class Running:
    """A program started by :func:`running`."""

    def __init__(self, process: trio.Process) -> None:
        assert process.stdout is not None
        assert process.stderr is not None
        self.process = process
        self.stdout = Lines(process.stdout)
        self.stderr = Lines(process.stderr)

    async def port_from_banner(self, stream: str = "stderr") -> int:
        """The port at the end of the program's first line on ``stream``."""
        line = await getattr(self, stream).line()
        found = re.search(r":(\d+)$", line)
        assert found, line
        return int(found.group(1))

    async def stop_leaving_stdout_unread(
        self, signum: int = signal.SIGTERM
    ) -> tuple[int, float, str]:
        """Signal the program and wait for its end reading only its stderr:
        its exit code, the seconds it took, and the rest of its stderr."""
        started = trio.current_time()
        self.process.send_signal(signum)
        err = await self.stderr.rest()
        with trio.fail_after(WAIT):
            code = await self.process.wait()
        return code, trio.current_time() - started, err

    async def stdout_is_full(self) -> None:
        """Wait (bounded) until the pipe of the program's stdout is full,
        to a page: a write may leave the last page of a pipe part empty."""
        fd = self.process.stdout.fileno()  # type: ignore[union-attr]
        full = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) - os.sysconf("SC_PAGE_SIZE")
        with trio.fail_after(WAIT):
            while _waiting_in(fd) <= full:  # noqa: ASYNC110 (no event for this)
                await trio.sleep(0.01)

    async def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str, str]:
        """Signal the program; its exit code and the rest of its output."""
        self.process.send_signal(signum)
        out: list[str] = []
        err: list[str] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: _into(out, self.stdout.rest()))
            nursery.start_soon(lambda: _into(err, self.stderr.rest()))
        with trio.fail_after(WAIT):
            code = await self.process.wait()
        return code, out[0], err[0]


def _waiting_in(fd: int) -> int:
    """Bytes waiting to be read from a pipe."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, bytes(4)))[0]


async def _into(box: list[str], awaitable: object) -> None:
    box.append(await awaitable)  # type: ignore[misc]


@asynccontextmanager
async def running(command: Sequence[str]) -> AsyncIterator[Running]:
    """Run ``command`` for the block; kill it if it is still running after."""
    async with trio.open_nursery() as nursery:
        process = await nursery.start(
            functools.partial(
                trio.run_process,
                list(command),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                check=False,
                cwd=ROOT,
                deliver_cancel=_terminate_then_kill,
            )
        )
        try:
            yield Running(process)
        finally:
            nursery.cancel_scope.cancel()


async def _terminate_then_kill(process: trio.Process) -> None:
    # trio's default warns before its SIGKILL, and under filterwarnings=error
    # the warning ends the cancellation first: a program that ignores SIGTERM
    # (blocked in a write, say) would then hang the test instead of failing it.
    process.terminate()
    with trio.move_on_after(5):
        await process.wait()
    process.kill()


def example(name: str, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "examples" / name), *args]


def trioudp_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "trioudp", *args]


async def run(
    command: Sequence[str], stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    """Run a program to its end (bounded), capturing its output."""
    with trio.fail_after(WAIT):
        return await trio.run_process(
            list(command),
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
        )


def example_module(name: str) -> types.ModuleType:
    """An example's pure helper module (``examples/_NAME.py``), imported
    without putting examples/ on ``sys.path``."""
    path = ROOT / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"examples_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclass-like machinery looks it up
    spec.loader.exec_module(module)
    return module
