"""Interop with aioquic's own asyncio client and server (another event loop,
another process), on loopback."""

from __future__ import annotations

import functools
import json
import subprocess
import sys

import pytest
import trio

from .conftest import ROOT
from .quic_support import ALPN, connect, pki, quic_server

PEER = str(ROOT / "tests" / "interop" / "aioquic_peer.py")
SIZE = 300_000


async def test_aioquics_asyncio_client_echoes_through_our_server():
    async with quic_server() as server:
        with trio.fail_after(60):
            done = await trio.run_process(
                [
                    sys.executable,
                    PEER,
                    "client",
                    str(pki()),
                    ALPN,
                    str(server.port),
                    str(SIZE),
                ],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        assert done.returncode == 0, done.stderr.decode()
        result = json.loads(done.stdout)
        assert result == result | {"echoed": SIZE, "intact": True, "alpn": ALPN}
        stats = server.stats
        assert (stats.retries, stats.established, stats.handler_errors) == (1, 1, 0)


@pytest.mark.parametrize("retry", [False, True])
async def test_our_client_echoes_through_aioquics_asyncio_server(retry):
    payload = bytes(i % 251 for i in range(SIZE))
    command = [sys.executable, PEER, "server", str(pki()), ALPN]
    async with trio.open_nursery() as nursery:
        process = await nursery.start(
            functools.partial(
                trio.run_process,
                command + (["retry"] if retry else []),
                stdout=subprocess.PIPE,
                check=False,
            )
        )
        try:
            with trio.fail_after(60):
                line = b""
                while not line.endswith(b"\n"):
                    line += await process.stdout.receive_some(100)
                async with (
                    connect(int(line)) as connection,
                    await connection.open_stream() as stream,
                ):
                    assert connection.alpn_protocol == ALPN
                    async with trio.open_nursery() as io:

                        async def send():
                            await stream.send_all(payload)
                            await stream.send_eof()

                        io.start_soon(send)
                        echoed = b"".join([data async for data in stream])
                assert echoed == payload
        finally:
            process.kill()
