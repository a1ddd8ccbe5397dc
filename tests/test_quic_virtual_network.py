"""QUIC over a terrible virtual network: it completes, it replays exactly in
fresh processes, and its capture reads as QUIC in Wireshark."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import ROOT, system_tool, unavailable
from .quic_support import pki
from .quic_terrible_network import LINKS, SIZE, run


def fresh_process(seed: int) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "tests.quic_terrible_network", str(seed), str(pki())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_handshake_and_a_megabyte_survive_loss_duplication_and_reordering():
    assert LINKS["loss"] == LINKS["duplicate"] == LINKS["reorder"] == 0.2
    assert SIZE == 1_000_000
    result = run(11, pki())
    assert result["intact"]
    assert result["dropped"]["loss"] > 0.15 * result["sent"]
    assert result["duplicated"] > 0.15 * result["sent"]


def test_the_same_seed_replays_the_same_trace_in_fresh_processes():
    first, second = fresh_process(5), fresh_process(5)
    assert first["intact"]
    assert first == second
    assert fresh_process(6)["trace_sha256"] != first["trace_sha256"]


def test_the_capture_reads_as_quic_in_tshark(tmp_path):
    tshark = system_tool("tshark")
    if tshark is None:
        unavailable("tshark is not installed (Debian: tshark; .ci/run installs it)")
    path = tmp_path / "quic.pcapng"
    written = run(3, pki(), path)["pcap_packets"]
    shown = subprocess.run(
        [
            tshark,
            "-r",
            str(path),
            "-Y",
            "quic",
            "-T",
            "fields",
            "-e",
            "quic.long.packet_type",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.splitlines()
    # Every packet that crossed the wire is QUIC (ICMP reports aside).
    assert len(shown) > 0.95 * written
    # Long-header types: 0 Initial, 2 Handshake, 3 Retry; short headers: "".
    assert {"0", "2", "3", ""} <= set(shown)
