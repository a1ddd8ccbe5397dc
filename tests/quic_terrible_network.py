"""A QUIC handshake and a 1 MB upload over a terrible virtual network.

The link loses, duplicates and reorders 20% of datagrams each way. The
client uploads 1 MB on one stream; the server answers with its SHA-256.
Run in-process (``run``) or as a program, for the fresh-process check::

    python -m tests.quic_terrible_network SEED PKI_DIR [PCAP]

which prints one JSON object: the digest check, the trace's SHA-256, and the
network's counters. Same seed and certificates, same output.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import trio
import trio.testing
from aioquic.quic.configuration import QuicConfiguration

import trioudp.quic
from trioudp.testing import VirtualNetwork

SIZE = 1_000_000
#: Port 443, so that Wireshark's QUIC dissector claims the capture's packets.
PORT = 443
LINKS = {"latency": 0.02, "loss": 0.2, "duplicate": 0.2, "reorder": 0.2}


def configurations(pki: Path) -> tuple[QuicConfiguration, QuicConfiguration]:
    settings = {"alpn_protocols": ["upload"], "idle_timeout": 600.0}
    server = QuicConfiguration(is_client=False, **settings)
    server.load_cert_chain(pki / "cert.pem", pki / "key.pem")
    client = QuicConfiguration(is_client=True, server_name="localhost", **settings)
    client.load_verify_locations(str(pki / "ca.pem"))
    return server, client


async def digest(connection: trioudp.quic.QUICConnection) -> None:
    async with await connection.accept_stream() as stream:
        hashed = hashlib.sha256()
        async for data in stream:
            hashed.update(data)
        await stream.send_all(hashed.digest())


async def upload(pki: Path) -> dict[str, Any]:
    server_config, client_config = configurations(pki)
    payload = bytes(i * 7 % 251 for i in range(SIZE))
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                trioudp.quic.serve_quic,
                digest,
                PORT,
                host="127.0.0.1",
                configuration=server_config,
            )
        )
        start = trio.current_time()
        async with (
            trioudp.quic.open_quic_connection(
                "127.0.0.1", PORT, configuration=client_config
            ) as connection,
            await connection.open_stream() as stream,
        ):
            handshake = trio.current_time() - start
            await stream.send_all(payload)
            await stream.send_eof()
            answer = b"".join([data async for data in stream])
        elapsed = trio.current_time() - start
        await server.shutdown(grace=1.0)
    return {
        "intact": answer == hashlib.sha256(payload).digest(),
        "handshake_seconds": round(handshake, 6),
        "seconds": round(elapsed, 6),
    }


def run(seed: int, pki: Path, pcap: Path | None = None) -> dict[str, Any]:
    """The scenario on a fresh network seeded with ``seed``."""
    net = VirtualNetwork(seed, trace_limit=None, **LINKS)

    async def main() -> dict[str, Any]:
        with net.install():
            return await upload(pki)

    result = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    if pcap is not None:
        result["pcap_packets"] = net.write_pcap(pcap)
    stats = net.stats
    return result | {
        "trace_sha256": hashlib.sha256(net.trace_text().encode()).hexdigest(),
        "sent": stats.sent,
        "delivered": stats.delivered,
        "duplicated": stats.duplicated,
        "dropped": stats.dropped,
    }


if __name__ == "__main__":
    arguments = sys.argv[1:]
    pcap_path = Path(arguments[2]) if len(arguments) > 2 else None
    print(json.dumps(run(int(arguments[0]), Path(arguments[1]), pcap_path)))
