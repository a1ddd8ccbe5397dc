"""The application tests/test_quic_workers.py runs in worker processes: a QUIC
server on the pool's sockets whose every stream is answered with
``<pid> <what the stream carried>``.

``worker.args`` is ``(pki_directory,)``: the certificate and key the test's
clients trust (tests/quic_support.py makes them in the test's process).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import trio
from aioquic.quic.configuration import QuicConfiguration

import trioudp
import trioudp.quic

ALPN = "trioudp-test"


async def answer(stream: trioudp.quic.QUICStream) -> None:
    async with stream:
        data = b"".join([chunk async for chunk in stream])
        await stream.send_all(b"%d %s" % (os.getpid(), data))


async def handler(connection: trioudp.quic.QUICConnection) -> None:
    async with trio.open_nursery() as nursery:
        try:
            while True:
                nursery.start_soon(answer, await connection.accept_stream())
        except (trioudp.quic.ConnectionClosed, trio.ClosedResourceError):
            nursery.cancel_scope.cancel()


async def serve(worker: trioudp.Worker) -> None:
    pki = Path(worker.args[0])
    configuration = QuicConfiguration(is_client=False, alpn_protocols=[ALPN])
    configuration.load_cert_chain(pki / "cert.pem", pki / "key.pem")
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                trioudp.quic.serve_quic_sockets,
                handler,
                worker.sockets,
                configuration=configuration,
                worker=worker,
            )
        )
        worker.serving(server)
