"""Retry tokens: only the address, connection ID and time they were issued
for pass."""

from __future__ import annotations

import pytest

from trioudp.quic._tokens import TOKEN_LIFETIME, BadToken, RetryTokens, encode_address

PEER = ("192.0.2.7", 4433)


def issue(tokens: RetryTokens) -> bytes:
    return tokens.issue(PEER, odcid=b"original", rscid=b"retrysrc", now=100.0)


def test_a_token_returns_the_original_connection_id():
    tokens = RetryTokens()
    assert tokens.check(issue(tokens), PEER, dcid=b"retrysrc", now=101.0) == b"original"


@pytest.mark.parametrize(
    ("address", "dcid", "now", "reason"),
    [
        (("192.0.2.8", 4433), b"retrysrc", 101.0, "another address"),
        (("192.0.2.7", 4434), b"retrysrc", 101.0, "another address"),
        (PEER, b"otherdst", 101.0, "another connection ID"),
        (PEER, b"retrysrc", 100.0 + TOKEN_LIFETIME + 0.01, "expired"),
        (PEER, b"retrysrc", 99.0, "expired"),
    ],
)
def test_a_token_for_anything_else_is_refused(address, dcid, now, reason):
    tokens = RetryTokens()
    with pytest.raises(BadToken, match=reason):
        tokens.check(issue(tokens), address, dcid=dcid, now=now)


def test_tokens_of_another_server_or_tampered_ones_are_refused():
    token = issue(RetryTokens())
    with pytest.raises(BadToken, match="not issued here"):
        RetryTokens().check(token, PEER, dcid=b"retrysrc", now=101.0)
    tokens = RetryTokens()
    token = bytearray(issue(tokens))
    token[-1] ^= 1
    with pytest.raises(BadToken, match="not issued here"):
        tokens.check(bytes(token), PEER, dcid=b"retrysrc", now=101.0)
    with pytest.raises(BadToken, match="too short"):
        tokens.check(b"short", PEER, dcid=b"retrysrc", now=101.0)


def test_ipv4_mapped_addresses_are_their_ipv4_address():
    assert encode_address(("::ffff:192.0.2.7", 1)) == encode_address(("192.0.2.7", 1))
    assert encode_address(("2001:db8::1", 1)) != encode_address(("2001:db8::2", 1))
