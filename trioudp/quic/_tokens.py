"""Retry tokens: a server's proof that a client can receive at its address.

A token is opaque to the client (RFC 9000, section 8.1.2), so its format is
the server's: an AES-GCM sealed record of the client's address, the
connection IDs of the Retry exchange and the time it was issued, under a key
only this server holds. aioquic has a handler of its own, but its API changed
between releases (RSA in 1.2, AES-GCM with other arguments in 1.7); this one
is the same everywhere. No I/O, no clock: ``now`` comes from the caller.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from typing import cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["BadToken", "RetryTokens", "encode_address"]

#: Seconds a Retry token stays valid: the client returns it within a round
#: trip, so a few seconds are ample (RFC 9000, section 8.1.4).
TOKEN_LIFETIME = 10.0
_NONCE = 12
_TIME = struct.Struct("!q")


class BadToken(Exception):  # a reason, as trio's _dtls.py's BadPacket
    """A token that does not prove the address: forged, expired, for another
    address or another connection ID."""


def encode_address(address: tuple[object, ...]) -> bytes:
    """An IP address and port as bytes (IPv4-mapped addresses as IPv4).

    Example:
        >>> encode_address(("127.0.0.1", 443)).hex()
        '7f00000101bb'
    """
    ip = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    port = cast("int", address[1])
    return ip.packed + port.to_bytes(2, "big")


def _opaque(data: bytes) -> bytes:
    return bytes([len(data)]) + data


class RetryTokens:
    """Issue and check Retry tokens under one random key.

    Example:
        >>> tokens = RetryTokens()
        >>> token = tokens.issue(("127.0.0.1", 5000), odcid=b"o" * 8, rscid=b"r" * 8, now=0.0)
        >>> tokens.check(token, ("127.0.0.1", 5000), dcid=b"r" * 8, now=1.0)
        b'oooooooo'
    """

    def __init__(
        self, key: bytes | None = None, lifetime: float = TOKEN_LIFETIME
    ) -> None:
        self._aead = AESGCM(
            key if key is not None else AESGCM.generate_key(bit_length=128)
        )
        self._lifetime = lifetime

    def issue(
        self, address: tuple[object, ...], *, odcid: bytes, rscid: bytes, now: float
    ) -> bytes:
        """A token for a client at ``address`` whose first Initial went to
        ``odcid``, told by the Retry to use ``rscid``."""
        plain = (
            _opaque(encode_address(address))
            + _opaque(odcid)
            + _opaque(rscid)
            + _TIME.pack(round(now * 1000))
        )
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, plain, None)

    def check(
        self, token: bytes, address: tuple[object, ...], *, dcid: bytes, now: float
    ) -> bytes:
        """The original destination connection ID a valid token carries.

        Raises:
            BadToken: the token is not one of ours, is for another address
                or connection ID, or has expired.
        """
        if len(token) <= _NONCE:
            msg = "too short"
            raise BadToken(msg)
        try:
            plain = self._aead.decrypt(token[:_NONCE], token[_NONCE:], None)
        except InvalidTag:
            msg = "not issued here"
            raise BadToken(msg) from None
        fields = []
        rest = plain
        for _ in range(3):
            size = rest[0]
            fields.append(rest[1 : 1 + size])
            rest = rest[1 + size :]
        (issued_ms,) = _TIME.unpack(rest)
        encoded, odcid, rscid = fields
        if encoded != encode_address(address):
            msg = "issued to another address"
            raise BadToken(msg)
        if dcid != rscid:
            msg = "issued for another connection ID"
            raise BadToken(msg)
        # Issue times are kept to the millisecond: allow for the rounding.
        if not -0.001 <= now - issued_ms / 1000 <= self._lifetime:
            msg = "expired"
            raise BadToken(msg)
        return odcid
