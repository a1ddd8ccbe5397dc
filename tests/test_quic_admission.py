"""Admission: the decisions about packets no connection owns, as a table."""

from __future__ import annotations

import pytest
from aioquic.quic.packet import QuicHeader, QuicPacketType

from trioudp.quic._admission import (
    Action,
    BadPacket,
    admit,
    parse_header_untrusted,
    stateless_reset,
)


def header(packet_type=QuicPacketType.INITIAL, version=1, token=b""):
    return QuicHeader(
        version=version,
        packet_type=packet_type,
        packet_length=1200,
        destination_cid=bytes(8),
        source_cid=bytes(8),
        token=token,
        integrity_tag=b"",
        supported_versions=[],
    )


def decide(packet, size=1200, **settings):
    defaults = {
        "supported_versions": [1],
        "stopping": False,
        "connections": 0,
        "max_connections": 10,
        "handshakes": 0,
        "max_handshakes": 10,
        "retry_threshold": 0,
    }
    decision = admit(packet, size, **(defaults | settings))
    return decision.reason or decision.action.value


@pytest.mark.parametrize(
    ("packet", "size", "settings", "expected"),
    [
        (
            header(version=None, packet_type=QuicPacketType.ONE_RTT),
            22,
            {},
            "stateless_reset",
        ),
        (
            header(version=None, packet_type=QuicPacketType.ONE_RTT),
            21,
            {},
            "short_unknown",
        ),
        (
            header(version=0, packet_type=QuicPacketType.VERSION_NEGOTIATION),
            1200,
            {},
            "version_negotiation",
        ),
        (header(version=7), 1200, {}, Action.VERSION_NEGOTIATION.value),
        (header(version=7), 1199, {}, "unsupported_version"),
        (header(packet_type=QuicPacketType.HANDSHAKE), 1200, {}, "unknown_connection"),
        (header(), 1199, {}, "initial_too_small"),
        (header(), 1200, {"stopping": True}, "stopping"),
        (header(), 1200, {"connections": 10}, "connection_limit"),
        (header(), 1200, {"handshakes": 10}, "handshake_limit"),
        (header(), 1200, {}, "retry"),
        (header(token=b"t"), 1200, {}, "check_token"),
        (header(), 1200, {"retry_threshold": None}, "accept"),
        (header(), 1200, {"retry_threshold": 3, "handshakes": 2}, "accept"),
        (header(), 1200, {"retry_threshold": 3, "handshakes": 3}, "retry"),
    ],
)
def test_admission(packet, size, settings, expected):
    assert decide(packet, size, **settings) == expected


def test_headers_of_other_versions_are_read_by_the_invariant_fields():
    data = b"\xc0" + (0x1A2A3A4A).to_bytes(4, "big") + b"\x05abcde\x03xyz" + bytes(50)
    parsed = parse_header_untrusted(data, 8)
    assert (parsed.version, parsed.destination_cid, parsed.source_cid) == (
        0x1A2A3A4A,
        b"abcde",
        b"xyz",
    )


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" + bytes(20),  # the fixed bit is zero
        b"\xc0\x00\x00\x00\x01\x08abc",  # version 1, truncated
        b"\xc0\x1a\x2a\x3a\x4a\x09abc",  # another version, truncated
    ],
)
def test_malformed_headers_raise_only_bad_packet(data):
    with pytest.raises(BadPacket):
        parse_header_untrusted(data, 8)


def test_a_stateless_reset_is_always_shorter_than_its_trigger():
    for trigger in range(22, 100):
        reset = stateless_reset(b"t" * 16, trigger)
        assert reset is not None
        assert 21 <= len(reset) < trigger
        assert len(reset) <= 41
