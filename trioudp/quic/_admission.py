"""What a QUIC server does with a datagram no connection of its owns: no I/O.

The server asks :func:`admit` before it creates any state for a packet whose
destination connection ID it does not know. The answer is one of a few
stateless replies (Version Negotiation, Retry, stateless reset), a new
connection, or a drop with a reason the server counts. Every reply it allows
is smaller than the datagram that asked for it, so no forged source gets more
bytes back than it sent (the 3x limit of RFC 9000, section 8, holds with room
to spare); connections do the same accounting themselves (aioquic enforces
the limit until the client's address is validated).
"""

from __future__ import annotations

import enum
import os

import attrs
from aioquic import buffer as aioquic_buffer
from aioquic.quic.packet import (
    QuicHeader,
    QuicPacketType,
    QuicProtocolVersion,
    pull_quic_header,
)

__all__ = [
    "MIN_INITIAL_SIZE",
    "Action",
    "BadPacket",
    "Decision",
    "admit",
    "parse_header_untrusted",
    "stateless_reset",
]

#: Clients pad their first Initial to at least this (RFC 9000, section 14.1);
#: servers answer nothing smaller, which bounds what a forged one can draw.
MIN_INITIAL_SIZE = 1200
#: The smallest stateless reset: 5 unpredictable bytes after the first, and
#: the 16-byte token (RFC 9000, section 10.3).
MIN_RESET_SIZE = 21
#: A reset as long as a short packet with a 20-byte connection ID, to look
#: like one (RFC 9000, section 10.3, recommends at least 41).
RESET_SIZE = 41


class BadPacket(Exception):  # named as trio's _dtls.py names it
    """A datagram that is not a QUIC packet one could answer."""


#: The versions whose packets aioquic parses beyond the invariant fields.
_PARSED_VERSIONS = frozenset(
    int(version) for version in QuicProtocolVersion if version != 0
)


def parse_header_untrusted(data: bytes, cid_length: int) -> QuicHeader:
    """aioquic's header parser, raising only :class:`BadPacket`.

    Example:
        >>> parse_header_untrusted(b"\\x40" + bytes(8) + b"rest", 8).destination_cid
        b'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00'
    """
    try:
        return pull_quic_header(
            aioquic_buffer.Buffer(data=data), host_cid_length=cid_length
        )
    except (ValueError, IndexError, KeyError) as exc:
        if (
            len(data) >= 5
            and data[0] & 0x80
            and int.from_bytes(data[1:5], "big") not in _PARSED_VERSIONS
        ):
            return _invariant_header_untrusted(data)
        raise BadPacket(str(exc)) from None


def _invariant_header_untrusted(data: bytes) -> QuicHeader:
    """The fields every QUIC version's long header shares (RFC 8999, 5.1):
    version and connection IDs, all a Version Negotiation reply needs.
    aioquic parses the rest as version 1 lays it out, which fails for other
    versions' packets; for those, only the version is looked at after this.
    """
    if len(data) < 7:
        msg = "too short for a long header"
        raise BadPacket(msg)
    version = int.from_bytes(data[1:5], "big")
    dcid_end = 6 + data[5]
    if len(data) <= dcid_end:
        msg = "truncated destination connection ID"
        raise BadPacket(msg)
    scid_end = dcid_end + 1 + data[dcid_end]
    if len(data) < scid_end:
        msg = "truncated source connection ID"
        raise BadPacket(msg)
    return QuicHeader(
        version=version,
        packet_type=QuicPacketType.VERSION_NEGOTIATION
        if version == 0
        else QuicPacketType.INITIAL,
        packet_length=len(data),
        destination_cid=data[6:dcid_end],
        source_cid=data[dcid_end + 1 : scid_end],
        token=b"",
        integrity_tag=b"",
        supported_versions=[],
    )


class Action(enum.Enum):
    """What to do with a packet for an unknown connection."""

    ACCEPT = "accept"
    CHECK_TOKEN = "check_token"
    RETRY = "retry"
    VERSION_NEGOTIATION = "version_negotiation"
    STATELESS_RESET = "stateless_reset"
    DROP = "drop"


@attrs.frozen
class Decision:
    """An :class:`Action`, and for a drop the reason counted.

    Example:
        >>> Decision(Action.DROP, "too_small")
        Decision(action=<Action.DROP: 'drop'>, reason='too_small')
    """

    action: Action
    reason: str = ""


_VERSION_NEGOTIATION = Decision(Action.VERSION_NEGOTIATION)
_RETRY = Decision(Action.RETRY)
_ACCEPT = Decision(Action.ACCEPT)
_CHECK_TOKEN = Decision(Action.CHECK_TOKEN)
_RESET = Decision(Action.STATELESS_RESET)


def admit(
    header: QuicHeader,
    size: int,
    *,
    supported_versions: list[int],
    stopping: bool,
    connections: int,
    max_connections: int,
    handshakes: int,
    max_handshakes: int,
    retry_threshold: int | None,
) -> Decision:
    """Decide about a datagram of ``size`` bytes whose first packet has
    ``header`` and whose destination connection ID no connection owns.

    ``retry_threshold``: demand a Retry token once this many handshakes are
    in progress (0: always; None: never).

    Example:
        >>> from aioquic.quic.packet import QuicHeader, QuicPacketType
        >>> h = QuicHeader(version=1, packet_type=QuicPacketType.INITIAL,
        ...     packet_length=1200, destination_cid=bytes(8), source_cid=bytes(8),
        ...     token=b"", integrity_tag=b"", supported_versions=[])
        >>> admit(h, 1200, supported_versions=[1], stopping=False, connections=0,
        ...     max_connections=10, handshakes=0, max_handshakes=10,
        ...     retry_threshold=0).action
        <Action.RETRY: 'retry'>
    """
    if header.version is None:  # a short header: a connection we do not know
        if size > MIN_RESET_SIZE:
            return _RESET
        return Decision(Action.DROP, "short_unknown")
    if header.packet_type == QuicPacketType.VERSION_NEGOTIATION:
        # Never answered: two servers could be made to answer each other.
        return Decision(Action.DROP, "version_negotiation")
    if header.version not in supported_versions:
        if size >= MIN_INITIAL_SIZE:
            return _VERSION_NEGOTIATION
        return Decision(Action.DROP, "unsupported_version")
    if header.packet_type != QuicPacketType.INITIAL:
        return Decision(Action.DROP, "unknown_connection")
    if size < MIN_INITIAL_SIZE:
        return Decision(Action.DROP, "initial_too_small")
    if stopping:
        return Decision(Action.DROP, "stopping")
    if connections >= max_connections:
        return Decision(Action.DROP, "connection_limit")
    if handshakes >= max_handshakes:
        return Decision(Action.DROP, "handshake_limit")
    if header.token:
        return _CHECK_TOKEN
    if retry_threshold is not None and handshakes >= retry_threshold:
        return _RETRY
    return _ACCEPT


def stateless_reset(token: bytes, trigger_size: int) -> bytes | None:
    """A stateless reset carrying ``token``, shorter than the ``trigger_size``
    bytes that drew it (so two endpoints cannot loop), or None if a reset
    that short would be too small to be one (RFC 9000, section 10.3.3).

    aioquic does not build these; the format is a short header's first byte
    (fixed bit set) and unpredictable bytes, then the token.

    Example:
        >>> packet = stateless_reset(bytes(16), 100)
        >>> len(packet), packet[0] & 0xC0, packet[-16:] == bytes(16)
        (41, 64, True)
        >>> stateless_reset(bytes(16), 21) is None
        True
    """
    size = min(RESET_SIZE, trigger_size - 1)
    if size < MIN_RESET_SIZE:
        return None
    unpredictable = bytearray(os.urandom(size - len(token)))
    unpredictable[0] = 0x40 | (unpredictable[0] & 0x3F)
    return bytes(unpredictable) + token
