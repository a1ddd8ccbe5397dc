"""QUIC for Trio on trioudp, with aioquic's ``QuicConnection`` as the engine.

Needs the ``quic`` extra (``pip install 'trioudp[quic]'``, which brings
aioquic); ``import trioudp`` works without it.

Example::

    import functools, trio, trioudp.quic
    from aioquic.quic.configuration import QuicConfiguration

    async def echo(connection: trioudp.quic.QUICConnection) -> None:
        async with await connection.accept_stream() as stream:
            async for data in stream:
                await stream.send_all(data)

    async def main() -> None:
        server_config = QuicConfiguration(is_client=False, alpn_protocols=["echo"])
        server_config.load_cert_chain("cert.pem", "key.pem")
        client_config = QuicConfiguration(is_client=True, alpn_protocols=["echo"])
        client_config.load_verify_locations("ca.pem")
        async with trio.open_nursery() as nursery:
            server = await nursery.start(functools.partial(
                trioudp.quic.serve_quic, echo, 0, host="127.0.0.1",
                configuration=server_config))
            async with trioudp.quic.open_quic_connection(
                "localhost", server.port, configuration=client_config
            ) as connection:
                async with await connection.open_stream() as stream:
                    await stream.send_all(b"Hello, QUIC!")
                    await stream.send_eof()
                    print(await stream.receive_some())
            await server.shutdown()
"""

try:
    import aioquic  # noqa: F401
except ImportError as exc:  # pragma: no cover (the test extra brings aioquic)
    msg = (
        "trioudp.quic needs aioquic, its QUIC protocol engine: install the"
        " quic extra with pip install 'trioudp[quic]'"
    )
    raise ImportError(msg, name=exc.name) from exc

from ._client import open_quic_connection as open_quic_connection
from ._connection import QUICConnection as QUICConnection
from ._errors import ConnectionClosed as ConnectionClosed
from ._errors import QUICError as QUICError
from ._errors import SendingStopped as SendingStopped
from ._errors import StreamReset as StreamReset
from ._pool import worker_sockets as worker_sockets
from ._serve import serve_quic as serve_quic
from ._serve import serve_quic_sockets as serve_quic_sockets
from ._server import QUICServer as QUICServer
from ._server import QUICServerStats as QUICServerStats
from ._stream import QUICStream as QUICStream

__all__ = [
    "ConnectionClosed",
    "QUICConnection",
    "QUICError",
    "QUICServer",
    "QUICServerStats",
    "QUICStream",
    "SendingStopped",
    "StreamReset",
    "open_quic_connection",
    "serve_quic",
    "serve_quic_sockets",
    "worker_sockets",
]
