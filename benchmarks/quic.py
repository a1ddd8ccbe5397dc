"""trioudp.quic against aioquic's own asyncio layer (and on uvloop), side by
side, in one run.

Each cell starts a fresh server of one stack pinned to CPU 0 and runs a
client of the same stack pinned to CPU 1, in separate processes, on
127.0.0.1: the server and the client are both trioudp's (``serve_quic`` and
``open_quic_connection`` on Trio), or both aioquic's (``aioquic.asyncio``'s
``serve`` and ``connect`` on asyncio, or on uvloop). The QUIC engine is the
same aioquic ``QuicConnection`` everywhere, with the same configuration and
certificate, so what differs is the layer around it: the I/O, the timers,
the streams. Each side is written the way its documentation shows (trioudp:
a task per stream, ``async with`` the stream; aioquic: a stream handler and
its ``StreamReader``/``StreamWriter``).

Scenarios, one client and one connection at a time:

- ``handshakes``: connections per second, each opened, its handshake
  completed, and closed. Neither server asks for address validation (no
  Retry: aioquic's ``serve`` default; trioudp's ``retry_threshold=None``).
  aioquic's ``connect()`` waits out the closing period after its
  CONNECTION_CLOSE (three probe timeouts, tens of milliseconds on loopback)
  before it returns, and trioudp's does not: so the aioquic client here is
  ``connect()``'s own steps but that last wait; both send their
  CONNECTION_CLOSE and go on.
- ``upload`` and ``download``: seconds to move 1 MB over a fresh stream of
  one established connection, to the server (which answers the byte count)
  or from it; the median of the transfers made in ``--duration``.
- ``requests``: 64-byte request/response round trips per second on one
  connection, each on a fresh bidirectional stream (the request and its
  FIN, then the echoed reply and its FIN), one at a time.

Each cell also reports the CPU time each side used per operation (the
server's from /proc, the client's its own): on a shared machine these vary
less than the rates. Ratios are to aioquic on asyncio in the same round;
each cell is the median of ``--repeat`` rounds, the stacks interleaved.

Run:  python benchmarks/quic.py                 (about a minute)
      python benchmarks/quic.py --repeat 5 --duration 2 --json quic.json
      python benchmarks/figures.py --record quic=quic.json

Needs the ``quic`` and ``bench`` extras (aioquic, uvloop) and trustme.
Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import trio
import trustme
from _results import add_json_option, write_json
from aioquic.asyncio import connect, serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

import trioudp.quic

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from contextlib import AbstractAsyncContextManager

HERE = Path(__file__).resolve().parent
STACKS = ("trioudp", "aioquic", "aioquic_uvloop")
BASELINE = "aioquic"
SCENARIOS = ("handshakes", "upload", "download", "requests")
#: What each scenario's figure is, and whether more is better.
UNITS = {
    "handshakes": ("handshakes/s", True),
    "upload": ("seconds per MB", False),
    "download": ("seconds per MB", False),
    "requests": ("round trips/s", True),
}
ALPN = "bench"
TRANSFER = 1 << 20
REQUEST = 64

#: What a client reports: its figures (rates, or seconds per transfer), the
#: operations it made and the CPU seconds it used for them.
Figures = dict[str, Any]
_T = TypeVar("_T")


# ---- the protocol both stacks serve --------------------------------------------


def answer(request: bytes) -> bytes:
    """What the server sends back on a stream, once the request's FIN came:
    ``get N`` asks for N bytes, a request over 1 KiB is answered with its
    length, a smaller one is echoed.

    Example:
        >>> answer(b"get 3"), answer(bytes(2000)), answer(b"ping")
        (b'xxx', b'2000', b'ping')
    """
    if request.startswith(b"get "):
        return b"x" * int(request[4:])
    if len(request) > 1024:
        return str(len(request)).encode()
    return request


def configuration(pki: Path, *, is_client: bool) -> QuicConfiguration:
    config = QuicConfiguration(
        is_client=is_client, alpn_protocols=[ALPN], server_name="localhost"
    )
    if is_client:
        config.load_verify_locations(str(pki / "ca.pem"))
    else:
        config.load_cert_chain(pki / "cert.pem", pki / "key.pem")
    return config


def make_pki(directory: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    issued = ca.issue_cert("localhost", "127.0.0.1")
    issued.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    issued.private_key_pem.write_to_path(str(directory / "key.pem"))


# ---- trioudp -------------------------------------------------------------------


async def trioudp_server(pki: Path) -> None:
    async def serve_stream(stream: trioudp.quic.QUICStream) -> None:
        async with stream:
            request = b"".join([data async for data in stream])
            await stream.send_all(answer(request))

    async def handler(connection: trioudp.quic.QUICConnection) -> None:
        async with trio.open_nursery() as nursery:
            try:
                while True:
                    nursery.start_soon(serve_stream, await connection.accept_stream())
            except (trioudp.quic.ConnectionClosed, trio.ClosedResourceError):
                nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                trioudp.quic.serve_quic,
                handler,
                0,
                host="127.0.0.1",
                configuration=configuration(pki, is_client=False),
                retry_threshold=None,
            )
        )
        print(server.port, flush=True)


async def trioudp_client(
    pki: Path, port: int, scenario: str, seconds: float
) -> Figures:
    config = configuration(pki, is_client=True)

    def connect_trioudp() -> AbstractAsyncContextManager[trioudp.quic.QUICConnection]:
        return trioudp.quic.open_quic_connection(
            "127.0.0.1", port, configuration=config
        )

    if scenario == "handshakes":
        return await _handshakes(connect_trioudp, seconds)

    async def exchange(
        connection: trioudp.quic.QUICConnection, request: bytes
    ) -> bytes:
        async with await connection.open_stream() as stream:
            await stream.send_all(request)
            await stream.send_eof()
            return b"".join([data async for data in stream])

    async with connect_trioudp() as connection:
        return await _exchanges(
            functools.partial(exchange, connection), scenario, seconds
        )


# ---- aioquic on asyncio (or uvloop) --------------------------------------------


async def aioquic_server(pki: Path) -> None:
    tasks: set[asyncio.Task[None]] = set()

    def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def serve_stream() -> None:
            writer.write(answer(await reader.read()))
            writer.write_eof()

        task = asyncio.ensure_future(serve_stream())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await serve(
        "127.0.0.1",
        0,
        configuration=configuration(pki, is_client=False),
        stream_handler=handle,
    )
    print(server._transport.get_extra_info("sockname")[1], flush=True)
    await asyncio.Event().wait()


@asynccontextmanager
async def aioquic_connect(
    port: int, config: QuicConfiguration, *, linger: bool
) -> AsyncIterator[QuicConnectionProtocol]:
    """aioquic's ``connect()``; with ``linger=False`` without its last step,
    the wait for the end of the closing period."""
    if linger:
        async with connect("127.0.0.1", port, configuration=config) as protocol:
            yield protocol
        return
    # connect()'s own steps (aioquic 1.2 to 1.7), but for the final
    # ``await protocol.wait_closed()``.
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", 0, 0, 0))
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: QuicConnectionProtocol(QuicConnection(configuration=config)),
        sock=sock,
    )
    try:
        protocol.connect(("::ffff:127.0.0.1", port, 0, 0), transmit=True)
        await protocol.wait_connected()
        yield protocol
    finally:
        protocol.close()
        transport.close()


async def aioquic_client(
    pki: Path, port: int, scenario: str, seconds: float
) -> Figures:
    config = configuration(pki, is_client=True)
    if scenario == "handshakes":
        return await _handshakes(
            lambda: aioquic_connect(port, config, linger=False), seconds
        )

    async def exchange(protocol: QuicConnectionProtocol, request: bytes) -> bytes:
        reader, writer = await protocol.create_stream()
        writer.write(request)
        writer.write_eof()
        return await reader.read()

    async with aioquic_connect(port, config, linger=True) as protocol:
        return await _exchanges(
            functools.partial(exchange, protocol), scenario, seconds
        )


# ---- the measurements, the same code for every stack ----------------------------


async def _handshakes(
    connect_once: Callable[[], AbstractAsyncContextManager[object]], seconds: float
) -> Figures:
    """Connections made one after another for ``seconds``: [rate]."""
    made = 0
    cpu = time.process_time()
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        async with connect_once():
            made += 1
    rate = made / (time.perf_counter() - start)
    return {"values": [rate], "operations": made, "cpu_s": time.process_time() - cpu}


async def _exchanges(
    exchange: Callable[[bytes], Awaitable[bytes]], scenario: str, seconds: float
) -> Figures:
    """``requests``: [round trips per second]; ``upload``/``download``: the
    seconds of each 1 MB transfer made in ``seconds``."""
    cpu = time.process_time()
    if scenario == "requests":
        request = bytes(REQUEST)
        done = 0
        start = time.perf_counter()
        end = start + seconds
        while time.perf_counter() < end:
            reply = await exchange(request)
            assert reply == request, reply
            done += 1
        rate = done / (time.perf_counter() - start)
        return {
            "values": [rate],
            "operations": done,
            "cpu_s": time.process_time() - cpu,
        }
    if scenario == "upload":
        request, expected = bytes(TRANSFER), str(TRANSFER).encode()
    else:
        request, expected = f"get {TRANSFER}".encode(), b"x" * TRANSFER
    times: list[float] = []
    end = time.perf_counter() + seconds
    while not times or time.perf_counter() < end:
        start = time.perf_counter()
        reply = await exchange(request)
        times.append(time.perf_counter() - start)
        assert reply == expected, len(reply)
    return {
        "values": times,
        "operations": len(times),
        "cpu_s": time.process_time() - cpu,
    }


# ---- one process of a cell -------------------------------------------------------


def run_stack(stack: str, main: Callable[..., Awaitable[_T]], *args: object) -> _T:
    """Run ``main(*args)`` on the stack's event loop."""
    if stack == "trioudp":
        return trio.run(main, *args)

    async def coroutine() -> _T:
        return await main(*args)

    if stack == "aioquic_uvloop":
        import uvloop

        return uvloop.run(coroutine())
    return asyncio.run(coroutine())


def role(argv: list[str]) -> None:
    """``server STACK PKI``: serve until killed, after printing the port;
    ``client STACK PKI PORT SCENARIO SECONDS``: print the figures as JSON."""
    kind, stack, pki = argv[0], argv[1], Path(argv[2])
    trioudp_stack = stack == "trioudp"
    if kind == "server":
        run_stack(stack, trioudp_server if trioudp_stack else aioquic_server, pki)
        return
    port, scenario, seconds = int(argv[3]), argv[4], float(argv[5])
    client = trioudp_client if trioudp_stack else aioquic_client
    print(json.dumps(run_stack(stack, client, pki, port, scenario, seconds)))


# ---- the orchestrator ----------------------------------------------------------


def pinned(cpu: int, command: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(cpu), *command]
    return command


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_cell(stack: str, scenario: str, pki: Path, seconds: float) -> dict[str, float]:
    """One server and one client of ``stack``: the cell's figure (a rate, or
    the median seconds of a transfer), and the CPU each side used per
    operation, in microseconds."""
    me = [sys.executable, str(Path(__file__).resolve())]
    server = subprocess.Popen(
        pinned(0, [*me, "server", stack, str(pki)]), stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        if not port:
            msg = f"the {stack} server did not start"
            raise RuntimeError(msg)
        server_cpu = cpu_seconds(server.pid)
        output = subprocess.run(
            pinned(1, [*me, "client", stack, str(pki), port, scenario, str(seconds)]),
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        ).stdout
        server_cpu = cpu_seconds(server.pid) - server_cpu
    finally:
        server.kill()
        server.wait(timeout=10)
    figures = json.loads(output)
    operations = figures["operations"]
    return {
        "value": float(statistics.median(figures["values"])),
        "server_cpu_us": server_cpu / operations * 1e6,
        "client_cpu_us": figures["cpu_s"] / operations * 1e6,
    }


def ratio(scenario: str, value: float, baseline: float) -> float:
    """How many times better than the baseline (for times: baseline / value).

    Example:
        >>> ratio("requests", 3000.0, 1500.0), ratio("upload", 0.1, 0.2)
        (2.0, 2.0)
    """
    more_is_better = UNITS[scenario][1]
    return value / baseline if more_is_better else baseline / value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per cell")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds; each cell reports its median"
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--stacks", default=",".join(STACKS))
    add_json_option(parser)
    args = parser.parse_args()
    stacks, scenarios = args.stacks.split(","), args.scenarios.split(",")
    rounds: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        pki = Path(scratch)
        make_pki(pki)
        for number in range(args.repeat):
            for scenario in scenarios:
                for stack in stacks:
                    print(
                        f"round {number + 1}/{args.repeat} {scenario:>10} {stack} ...",
                        file=sys.stderr,
                    )
                    cell = run_cell(stack, scenario, pki, args.duration)
                    rounds.setdefault((scenario, stack), []).append(cell)
    cells = [
        {
            "scenario": scenario,
            "stack": stack,
            **{
                key: statistics.median(cell[key] for cell in results)
                for key in results[0]
            },
            "all_values": [cell["value"] for cell in results],
        }
        for (scenario, stack), results in rounds.items()
    ]
    print(
        f"| scenario | stack | figure | unit | x {BASELINE} | CPU us/op server | client |"
    )
    print("|---|---|--:|---|--:|--:|--:|")
    for scenario in scenarios:
        row = {c["stack"]: c for c in cells if c["scenario"] == scenario}
        for stack, cell in row.items():
            value = cell["value"]
            times = (
                f"{ratio(scenario, value, row[BASELINE]['value']):.2f}"
                if BASELINE in row
                else "-"
            )
            print(
                f"| {scenario} | {stack} | {value:,.4g} | {UNITS[scenario][0]}"
                f" | {times} | {cell['server_cpu_us']:,.0f}"
                f" | {cell['client_cpu_us']:,.0f} |"
            )
    settings = {
        "duration_s": args.duration,
        "repeat": args.repeat,
        "transfer_bytes": TRANSFER,
        "request_bytes": REQUEST,
        "baseline": BASELINE,
        "units": {name: UNITS[name] for name in scenarios},
    }
    write_json(args.json, {"settings": settings, "cells": cells})


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("server", "client"):
        role(sys.argv[1:])
    else:
        main()
