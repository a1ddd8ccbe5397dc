"""aioquic's own asyncio client and server, as the other end of interop tests.

python tests/interop/aioquic_peer.py server PKI_DIR ALPN [retry]
    serves a stream echo on 127.0.0.1, prints its port, runs until killed
python tests/interop/aioquic_peer.py client PKI_DIR ALPN PORT SIZE
    echoes SIZE bytes through 127.0.0.1:PORT, prints one JSON line
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from pathlib import Path

from aioquic.asyncio import connect, serve
from aioquic.quic.configuration import QuicConfiguration


async def run_server(pki: Path, alpn: str, retry: bool) -> None:
    configuration = QuicConfiguration(is_client=False, alpn_protocols=[alpn])
    configuration.load_cert_chain(pki / "cert.pem", pki / "key.pem")

    def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def echo() -> None:
            writer.write(await reader.read())
            writer.write_eof()

        asyncio.ensure_future(echo())  # noqa: RUF006 (the connection holds it)

    server = await serve(
        "127.0.0.1", 0, configuration=configuration, stream_handler=handle, retry=retry
    )
    print(server._transport.get_extra_info("sockname")[1], flush=True)
    await asyncio.Event().wait()


async def run_client(pki: Path, alpn: str, port: int, size: int) -> None:
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=[alpn], server_name="localhost"
    )
    configuration.load_verify_locations(str(pki / "ca.pem"))
    payload = bytes(i % 251 for i in range(size))
    async with connect("127.0.0.1", port, configuration=configuration) as protocol:
        reader, writer = await protocol.create_stream()
        writer.write(payload)
        writer.write_eof()
        echoed = await reader.read()
        alpn_used = protocol._quic.tls.alpn_negotiated
    print(
        json.dumps(
            {
                "echoed": len(echoed),
                "intact": echoed == payload,
                "sha256": hashlib.sha256(echoed).hexdigest(),
                "alpn": alpn_used,
            }
        )
    )


if __name__ == "__main__":
    role, pki_dir, alpn_name, *rest = sys.argv[1:]
    if role == "server":
        asyncio.run(run_server(Path(pki_dir), alpn_name, rest == ["retry"]))
    else:
        asyncio.run(run_client(Path(pki_dir), alpn_name, int(rest[0]), int(rest[1])))
