"""Hosts: their addresses (with prefixes), who owns loopback, and lookups by
address or name."""

import pytest

from trioudp.testing import VirtualNetwork


@pytest.mark.parametrize(
    ("addresses", "error", "fragment"),
    [
        ("db.test", ValueError, "numeric IPs"),
        ("10.0.0.3/x", ValueError, "numeric IPs"),
        ("127.0.0.1", ValueError, "belongs to"),  # localhost's own
        ("127.0.0.2", ValueError, "belongs to"),  # all of 127/8 is localhost's
        ([], ValueError, "at least one address"),
    ],
)
def test_host_addresses_are_numeric_and_owned_once(addresses, error, fragment):
    with pytest.raises(error, match=fragment):
        VirtualNetwork().add_host(addresses)


def test_addresses_with_prefixes_and_loopback_ownership():
    net = VirtualNetwork()
    host = net.add_host(["10.0.0.2/24", "fd00::2/64"], name="db")
    assert host.addresses == ("10.0.0.2", "fd00::2")
    net.add_address(host, "10.0.1.2")
    assert net.host("10.0.1.2") is host
    assert net.host("127.3.4.5") is net.localhost
    with pytest.raises(KeyError, match="no host"):
        net.host("10.9.9.9")
