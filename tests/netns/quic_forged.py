"""QUIC Initials from forged sources, inside a fresh network namespace.

Run as ``unshare -n python tests/netns/quic_forged.py SCENARIO`` (see
``tests/test_quic_amplification.py``). A QUIC server listens on v0
(192.0.2.1); a neighbour injects real client Initials into v1 whose sources
are addresses nobody there owns: 192.0.2.77 and, for floods, addresses of
198.18.0.0/15 routed back out through v1. Every frame the server sends out
of v0 is captured on v1, so the bytes sent to each forged source can be set
against the bytes received from it. Prints one JSON object; nothing leaves
the namespace.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import socket
import struct
import sys
from pathlib import Path
from typing import Any

import trio
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import trio.lowlevel
from scenarios import V0_IPV4, Neighbour, add_veth, ipv4_udp, mac, sh

import trioudp.quic

FORGED = "192.0.2.77"
FLOOD_NETWORK = ipaddress.ip_network("198.18.0.0/15")
ETH_P_ALL = 0x0003


def initial(pki: Path, port: int) -> bytes:
    """A real client's first datagram (an Initial with its ClientHello)."""
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=["forged"], server_name="localhost"
    )
    configuration.load_verify_locations(str(pki / "ca.pem"))
    engine = QuicConnection(configuration=configuration)
    engine.connect((V0_IPV4, port), now=0.0)
    return engine.datagrams_to_send(now=0.0)[0][0]


class Capture:
    """Every IPv4/UDP frame v0 sends, as seen on v1: bytes per destination."""

    def __init__(self) -> None:
        self._raw = socket.socket(
            socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)
        )
        self._raw.bind(("v1", 0))
        self._raw.setblocking(False)
        self._from = mac("v0")
        self.sent: dict[tuple[str, int], int] = {}
        self.datagrams = 0

    def drain(self) -> None:
        while True:
            try:
                frame = self._raw.recv(65536)
            except BlockingIOError:
                return
            if frame[6:12] != self._from or frame[12:14] != b"\x08\x00":
                continue
            ip = frame[14:]
            if ip[9] != 17:  # UDP only
                continue
            header = (ip[0] & 0x0F) * 4
            destination = socket.inet_ntoa(ip[16:20])
            port, length = struct.unpack("!2xH H", ip[header : header + 6])
            key = (destination, port)
            self.sent[key] = self.sent.get(key, 0) + length - 8
            self.datagrams += 1


async def scenario(
    pki: Path, *, retry: bool, sources: int, per_source: int, seconds: float
) -> dict[str, Any]:
    add_veth()
    v1 = mac("v1").hex(":")
    sh(
        f"ip neigh add {FORGED} lladdr {v1} dev v0 nud permanent",
        f"ip neigh add 192.0.2.2 lladdr {v1} dev v0 nud permanent",
        f"ip route add {FLOOD_NETWORK} via 192.0.2.2 dev v0",
    )
    configuration = QuicConfiguration(is_client=False, alpn_protocols=["forged"])
    configuration.load_cert_chain(pki / "cert.pem", pki / "key.pem")
    capture = Capture()
    neighbour = Neighbour()

    async def never(connection: trioudp.quic.QUICConnection) -> None:
        raise AssertionError("a forged source completed a handshake")

    received: dict[tuple[str, int], int] = {}
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                trioudp.quic.serve_quic,
                never,
                0,
                host=V0_IPV4,
                configuration=configuration,
                retry_threshold=0 if retry else None,
                max_handshakes=50,
            )
        )
        hosts = (
            [FORGED]
            if sources == 1
            else [str(FLOOD_NETWORK[i + 1]) for i in range(sources)]
        )
        for host in hosts:
            for n in range(per_source):
                payload = initial(pki, server.port)
                source = (host, 40000 + n)
                neighbour.send(ipv4_udp(host, V0_IPV4, source[1], server.port, payload))
                received[source] = received.get(source, 0) + len(payload)
            await trio.lowlevel.checkpoint()
            capture.drain()
        with trio.move_on_after(seconds):  # retransmissions (PTO) run meanwhile
            while True:
                await trio.sleep(0.05)
                capture.drain()
        stats = server.stats
        nursery.cancel_scope.cancel()
    capture.drain()
    forged = {key: capture.sent.get(key, 0) for key in received}
    ratios = [forged[key] / received[key] for key in received]
    return {
        "received_bytes": sum(received.values()),
        "sent_bytes": sum(forged.values()),
        "sent_datagrams": capture.datagrams,
        "max_ratio": max(ratios),
        "answered_sources": sum(1 for value in forged.values() if value),
        "retries": stats.retries,
        "accepted": stats.accepted,
        "established": stats.established,
        "dropped": stats.dropped,
        "withheld": stats.amplification_withheld,
    }


if __name__ == "__main__":
    name, pki_dir = sys.argv[1], Path(sys.argv[2])
    settings = {
        "retry": {"retry": True, "sources": 1, "per_source": 5, "seconds": 3.0},
        "no_retry": {"retry": False, "sources": 1, "per_source": 1, "seconds": 5.0},
        "flood": {"retry": False, "sources": 300, "per_source": 1, "seconds": 3.0},
        "flood_retry": {"retry": True, "sources": 300, "per_source": 1, "seconds": 1.0},
    }[name]
    print(json.dumps(trio.run(functools.partial(scenario, pki_dir, **settings))))
