import ipaddress
import math
from collections import OrderedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

import trioudp
import trioudp._limits
import trioudp._outbox
from trioudp import AccessList, AmplificationGuard, LoopGuard, RateLimit, RateLimiter
from trioudp._limits import ReplyBudget, _take_token, prefix_key


def test_prefixes_group_neighbours():
    assert prefix_key("192.0.2.1", 24, 56) == prefix_key("192.0.2.254", 24, 56)
    assert prefix_key("192.0.2.1", 24, 56) != prefix_key("192.0.3.1", 24, 56)
    assert prefix_key("2001:db8:0:1::1", 24, 56) == prefix_key(
        "2001:db8:0:ff::2", 24, 56
    )
    assert prefix_key("2001:db8:0:100::1", 24, 56) != prefix_key("2001:db8::1", 24, 56)
    assert prefix_key("::ffff:192.0.2.9", 24, 56) == prefix_key("192.0.2.1", 24, 56)


def test_token_bucket_exact():
    limiter = RateLimiter(RateLimit(rate=10, burst=5))
    assert [limiter.allow("198.51.100.1", 0.0) for _ in range(7)] == [True] * 5 + [
        False
    ] * 2
    assert limiter.allow("198.51.100.1", 0.05) is False  # half a token
    assert limiter.allow("198.51.100.1", 0.1) is True  # one token refilled
    assert (
        limiter.allow("203.0.113.1", 0.1) is True
    )  # another prefix has its own bucket


def test_exempt_networks_are_never_limited():
    limiter = RateLimiter(RateLimit(rate=1, burst=1, exempt=["127.0.0.0/8"]))
    assert all(limiter.allow("127.0.0.1", 0.0) for _ in range(100))
    assert len(limiter) == 0


@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                ["127.0.0.", "10.1.1.", "::ffff:127.0.0.", "::ffff:10.1.1."]
            ),
            st.integers(0, 3),
        ),
        min_size=1,
        max_size=60,
    ),
    st.integers(1, 8),
)
def test_the_key_cache_changes_no_verdict(sources, kept):
    """Bucket keys (and exemptions) kept by source, the table emptied when
    full: every verdict is what parsing each datagram's address gives."""
    policy = RateLimit(rate=1, burst=2, ipv4_prefix=32, exempt=["127.0.0.0/8"])
    limiter = RateLimiter(policy)
    buckets = OrderedDict()
    saved, trioudp._limits._KEYS_KEPT = trioudp._limits._KEYS_KEPT, kept
    try:
        for i, (prefix, last) in enumerate(sources):
            ip, now = f"{prefix}{last}", i / 4
            expected = trioudp._limits._in_networks(ip, policy.exempt) or _take_token(
                buckets, prefix_key(ip, 32, 56), now, burst=2, rate=1, table_size=65536
            )
            assert limiter.allow(ip, now) == expected
            assert len(limiter._keys) <= kept
    finally:
        trioudp._limits._KEYS_KEPT = saved


def test_a_source_address_is_parsed_once_not_per_datagram(monkeypatch):
    parsed = []
    in_networks = trioudp._limits._in_networks
    monkeypatch.setattr(
        "trioudp._limits._in_networks",
        lambda ip, networks: parsed.append(ip) or in_networks(ip, networks),
    )
    limiter = RateLimiter(RateLimit(rate=1, burst=1, exempt=["127.0.0.0/8"]))
    assert all(limiter.allow("127.0.0.1", 0.0) for _ in range(50))
    assert [limiter.allow("10.0.0.1", 0.0) for _ in range(3)] == [True, False, False]
    assert parsed == ["127.0.0.1", "10.0.0.1"]


def test_the_key_cache_is_bounded(monkeypatch):
    monkeypatch.setattr("trioudp._limits._KEYS_KEPT", 8)
    limiter = RateLimiter(RateLimit(rate=1, burst=1, exempt=["127.0.0.0/8"]))
    for number in range(100):
        assert limiter.allow(f"127.0.{number}.1", 0.0)
        limiter.allow(f"10.0.{number}.1", 0.0)
        assert len(limiter._keys) <= 8


@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=300))
def test_table_size_is_a_hard_bound(addresses):
    limiter = RateLimiter(RateLimit(rate=1, burst=1, table_size=16, ipv4_prefix=32))
    for i, number in enumerate(addresses):
        limiter.allow(str(ipaddress.IPv4Address(number)), float(i))
        assert len(limiter) <= 16


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"rate": 0, "burst": 1}, "rate must be"),
        ({"rate": 1, "burst": 0.5}, "burst must be"),
        ({"rate": 1, "burst": 1, "ipv4_prefix": 33}, "ipv4_prefix must be in 1..32"),
        ({"rate": 1, "burst": 1, "table_size": 0}, "table_size"),
    ],
)
def test_bad_rate_limits(settings, fragment):
    with pytest.raises(ValueError, match=fragment):
        RateLimit(**settings)


def test_amplification_guard_allows_k_times_what_was_received():
    guard = AmplificationGuard(factor=3)
    peer = ("192.0.2.1", 4000)
    guard.on_receive(peer, 100)
    assert guard.may_send(peer, 200)
    assert guard.may_send(peer, 100)
    assert not guard.may_send(peer, 1)
    guard.on_receive(peer, 1)  # counts as a UDP header's 8 bytes: 24 more may go
    assert not guard.may_send(peer, 25)
    assert guard.may_send(peer, 24)
    guard.validate(peer)
    assert guard.may_send(peer, 10**9)


def test_unknown_peers_get_nothing_and_empty_datagrams_a_little():
    guard = AmplificationGuard()
    assert not guard.may_send(("192.0.2.9", 1), 1)
    guard.on_receive(("192.0.2.9", 1), 0)
    assert guard.may_send(("192.0.2.9", 1), 24)


@given(
    st.lists(
        st.tuples(st.integers(0, 50), st.integers(0, 5000), st.integers(0, 5000)),
        max_size=200,
    )
)
def test_guard_never_lets_more_than_k_times_through(events):
    guard = AmplificationGuard(factor=3, table_size=1000)
    received: dict[int, int] = {}
    sent: dict[int, int] = {}
    for peer_number, size_in, size_out in events:
        peer = ("192.0.2.1", peer_number)
        guard.on_receive(peer, size_in)
        received[peer_number] = received.get(peer_number, 0) + max(size_in, 8)
        if guard.may_send(peer, size_out):
            sent[peer_number] = sent.get(peer_number, 0) + size_out
        assert sent.get(peer_number, 0) <= 3 * received[peer_number]
    assert len(guard) <= 1000


def test_bad_guard_settings():
    with pytest.raises(ValueError, match="factor must be"):
        AmplificationGuard(factor=0.5)
    with pytest.raises(ValueError, match="table_size"):
        AmplificationGuard(table_size=0)


def test_access_lists():
    acl = AccessList(allow=["10.0.0.0/8", "2001:db8::/32"], deny=["10.6.0.0/16"])
    assert acl.admits("10.1.1.1")
    assert acl.admits("2001:db8::5")
    assert acl.admits("::ffff:10.1.1.1")
    assert not acl.admits("10.6.1.1")
    assert not acl.admits("192.0.2.1")
    assert AccessList(deny=["192.0.2.0/24"]).admits("198.51.100.1")
    assert AccessList().admits("192.0.2.1")


def test_a_spoofed_flood_never_evicts_a_validated_peer():
    """71,000 distinct spoofed sources used to push a validated peer out of
    the table, after which its replies were withheld."""
    guard = AmplificationGuard(factor=3, table_size=65_536)
    guard.on_receive(("192.0.2.1", 5000), 100)
    guard.validate(("192.0.2.1", 5000))
    for i in range(71_000):
        guard.on_receive((f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", 53), 40)
    assert guard.may_send(("192.0.2.1", 5000), 1_000_000)
    assert len(guard) == 65_536 + 1  # both tables stay bounded


def test_validated_peers_have_a_bounded_table_of_their_own():
    guard = AmplificationGuard(factor=3, table_size=2)
    for port in (1, 2, 3):
        guard.validate(("192.0.2.1", port))
    assert len(guard) == 2
    assert guard.may_send(("192.0.2.1", 3), 10**6)
    assert not guard.may_send(("192.0.2.1", 1), 1)  # least recent, evicted


def test_ipv4_mapped_sources_are_judged_as_their_ipv4_form_everywhere():
    """A dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d: access lists,
    rate-limit prefixes and exemptions judge them as a.b.c.d."""
    acl = AccessList(allow=["192.0.2.0/24"], deny=["192.0.2.66/32"])
    assert acl.admits("::ffff:192.0.2.5")
    assert not acl.admits("::ffff:192.0.2.66")
    assert not acl.admits("::ffff:198.51.100.1")
    limiter = RateLimiter(RateLimit(rate=1, burst=1, exempt=["127.0.0.0/8"]))
    assert limiter.allow("192.0.2.1", now=0.0)
    assert not limiter.allow("::ffff:192.0.2.9", now=0.0)  # same /24, same bucket
    assert all(limiter.allow("::ffff:127.0.0.1", now=0.0) for _ in range(5))


@pytest.mark.parametrize(
    ("make", "error", "fragment"),
    [
        (lambda: RateLimit(rate=1, burst=1, ipv4_prefix=24.5), TypeError, "ipv4_prefix must be an int, not float 24.5"),
        (lambda: RateLimit(rate=1, burst=1, ipv6_prefix="56"), TypeError, "ipv6_prefix must be an int, not str '56'"),
        (lambda: RateLimit(rate=1, burst=1, ipv6_prefix=129), ValueError, "ipv6_prefix must be in 1..128, not 129"),
        (lambda: RateLimit(rate=1, burst=1, table_size=1.5), TypeError, "table_size must be an int"),
        (lambda: RateLimit(rate=1, burst=1, log_only="no"), TypeError, "log_only must be True or False, not 'no'"),
        (lambda: RateLimit(rate=True, burst=1), ValueError, "rate must be a positive number"),
        (lambda: RateLimit(rate=1, burst=1, exempt="127.0.0.0/8"), TypeError, "exempt must be a list of networks"),
        (lambda: AccessList(allow="10.0.0.0/8"), TypeError, "allow must be a list of networks .* not str '10.0.0.0/8'"),
        (lambda: AccessList(deny=ipaddress.ip_network("192.0.2.0/30")), TypeError, "deny must be a list of networks"),
        (lambda: AccessList(allow=["10.0.0.0/33"]), ValueError, "10.0.0.0/33"),
        (lambda: trioudp.AmplificationGuard(factor="3"), TypeError, "factor must be a number, not '3'"),
        (lambda: trioudp.AmplificationGuard(factor=math.nan), ValueError, "factor must be a number, not nan"),
        (lambda: trioudp.AmplificationGuard(table_size=1.5), TypeError, "table_size must be an int"),
    ],
)  # fmt: skip
def test_protection_settings_are_checked_when_made(make, error, fragment):
    with pytest.raises(error, match=fragment):
        make()


# ---- the loop guard -----------------------------------------------------------


def test_a_peer_from_a_service_port_gets_a_budget_of_replies():
    budget = ReplyBudget(LoopGuard(burst=3, rate=2))
    peer = ("192.0.2.7", 7)
    assert [budget.allow(peer, 0.0) for _ in range(4)] == [True] * 3 + [False]
    assert budget.allow(peer, 0.25) is False  # half a reply refilled
    assert budget.allow(peer, 0.5) is True
    assert budget.allow(("192.0.2.8", 7), 0.5) is True  # each peer its own


@pytest.mark.parametrize(
    "peer",
    [
        ("192.0.2.7", 32768),  # a client's port
        ("127.0.0.1", 7),  # loopback: nothing from outside reaches it as such
        ("::ffff:127.0.0.1", 7),
        ("::1", 7),
    ],
)
def test_clients_and_loopback_have_no_budget(peer):
    budget = ReplyBudget(LoopGuard(burst=1))
    assert all(budget.allow(peer, 0.0) for _ in range(100))
    assert len(budget) == 0


def test_a_validated_peer_has_no_budget_and_the_tables_are_bounded():
    budget = ReplyBudget(LoopGuard(burst=1, table_size=2))
    budget.allow(("192.0.2.1", 7), 0.0)
    budget.validate(("192.0.2.1", 7))
    assert all(budget.allow(("192.0.2.1", 7), 0.0) for _ in range(10))
    for host in range(2, 10):
        budget.allow((f"192.0.2.{host}", 7), 0.0)
        budget.validate((f"192.0.3.{host}", 7))
    assert len(budget) == 4


@pytest.mark.parametrize(
    ("settings", "error", "fragment"),
    [
        ({"burst": 0}, ValueError, "burst must be >= 1"),
        ({"burst": 1.5}, TypeError, "burst must be an int"),
        ({"rate": 0}, ValueError, "rate must be a number > 0, not 0"),
        ({"rate": math.inf}, ValueError, "rate must be a finite number"),
        ({"ports_below": 0}, ValueError, "ports_below must be in 1..65536"),
        ({"table_size": 0}, ValueError, "table_size must be >= 1"),
    ],
)
def test_loop_guard_settings_are_checked(settings, error, fragment):
    with pytest.raises(error, match=fragment):
        LoopGuard(**settings)


def test_the_amplification_guard_counts_the_bytes_that_would_leave():
    """A bytes subclass whose len() says 1 was counted as 1 byte."""

    class Small(bytes):
        def __len__(self):
            return 1

    guard = AmplificationGuard(factor=3)
    guard.on_receive(("192.0.2.1", 4000), 10)
    outbox = trioudp._outbox.Outbox(None, None, max_payload=65507, where="test")
    outbox.guard = guard
    outbox._reply_nowait(Small(b"x" * 100), ("192.0.2.1", 4000))
    assert outbox.dropped_amplification == 1
