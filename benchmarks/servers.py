"""Reference UDP echo servers for benchmarks/echo.py (each binds 127.0.0.1:--port).

Kinds: trio_naive (one recvfrom/sendto loop on trio.socket), trio_task (the
same, with a task started for each datagram's reply), anyio (its UDP socket
on the trio backend), asyncio and uvloop (DatagramProtocol), stdlib (a
blocking loop), and trioudp's two
handler forms without protection: trioudp_async (``async def`` +
``await datagram.reply``) and trioudp_responder (a :class:`trioudp.Responder`).
trioudp as users run it is measured as ``python -m trioudp echo``, with
protection off (``--rate-limit 0 --amplification-factor 0``), as here.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from typing import cast

import trio


async def trio_naive(port: int) -> None:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", port))
    while True:
        data, address = await sock.recvfrom(65536)
        await sock.sendto(data, address)


async def trio_task(port: int) -> None:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", port))
    async with trio.open_nursery() as nursery:
        while True:
            data, address = await sock.recvfrom(65536)
            nursery.start_soon(sock.sendto, data, address)


async def anyio_echo(port: int) -> None:
    import anyio

    async with await anyio.create_udp_socket(
        local_host="127.0.0.1", local_port=port
    ) as sock:
        async for data, address in sock:
            await sock.sendto(data, *address)


async def trioudp_echo(port: int, form: str) -> None:
    import trioudp

    async def echo(datagram: trioudp.Datagram) -> None:
        await datagram.reply(datagram.data)

    def respond(datagram: trioudp.Datagram) -> bytes:
        return datagram.data

    handler = echo if form == "async" else trioudp.Responder(respond)
    await trioudp.serve_udp(handler, port, host="127.0.0.1")


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport.
        self.transport = cast("asyncio.DatagramTransport", transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


async def asyncio_echo(port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", port))
    await asyncio.Event().wait()


def stdlib_echo(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))
        while True:
            data, address = sock.recvfrom(65536)
            sock.sendto(data, address)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "kind",
        choices=[
            "trio_naive",
            "trio_task",
            "anyio",
            "asyncio",
            "uvloop",
            "stdlib",
            "trioudp_async",
            "trioudp_responder",
        ],
    )
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        if args.kind == "trio_naive":
            trio.run(trio_naive, args.port)
        elif args.kind == "trio_task":
            trio.run(trio_task, args.port)
        elif args.kind == "anyio":
            trio.run(anyio_echo, args.port)
        elif args.kind.startswith("trioudp_"):
            trio.run(trioudp_echo, args.port, args.kind.removeprefix("trioudp_"))
        elif args.kind == "asyncio":
            asyncio.run(asyncio_echo(args.port))
        elif args.kind == "uvloop":
            import uvloop

            uvloop.run(asyncio_echo(args.port))
        else:
            stdlib_echo(args.port)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
