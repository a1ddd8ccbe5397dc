"""trioudp._interfaces: this host's addresses, from netlink messages, and a
table read again on a bounded schedule."""

import errno
import logging
import socket
import struct
import sys

import pytest

from trioudp._interfaces import (
    AddressBook,
    HostAddresses,
    parse_addresses,
    read_host_addresses,
)


def _rtattr(kind, value):
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + bytes(-length % 4)


def _newaddr(family, prefix, index, **attributes):
    kinds = {"address": 1, "local": 2, "broadcast": 4}
    body = struct.pack("=BBBBI", family, prefix, 0, 0, index)
    for name, text in attributes.items():
        body += _rtattr(kinds[name], socket.inet_pton(family, text))
    return struct.pack("=IHHII", 16 + len(body), 20, 2, 1, 0) + body


DONE = struct.pack("=IHHII", 20, 3, 2, 1, 0) + bytes(4)


def test_netlink_addresses_are_parsed_to_entries():
    """What ``ip addr`` reads: a point-to-point IPv4 address (IFA_LOCAL is
    the host's, IFA_ADDRESS the peer's), one with a broadcast address, and
    an IPv6 one; then the end of the dump."""
    messages = (
        _newaddr(socket.AF_INET, 8, 1, address="127.0.0.1", local="127.0.0.1")
        + _newaddr(
            socket.AF_INET,
            24,
            2,
            address="10.9.0.1",
            local="10.9.0.1",
            broadcast="10.9.0.255",
        )
        + _newaddr(socket.AF_INET, 32, 3, address="10.0.0.2", local="10.0.0.1")
        + _newaddr(socket.AF_INET6, 64, 2, address="fd00:9::1")
    )
    assert parse_addresses(messages) == (
        [
            (1, "127.0.0.1", 8, None),
            (2, "10.9.0.1", 24, "10.9.0.255"),
            (3, "10.0.0.1", 32, None),
            (2, "fd00:9::1", 64, None),
        ],
        False,
    )
    assert parse_addresses(messages + DONE)[1] is True


def test_a_netlink_error_is_raised():
    error = struct.pack("=IHHII", 36, 2, 0, 1, 0) + struct.pack("=i", -errno.EPERM)
    with pytest.raises(PermissionError):
        parse_addresses(error + bytes(16))


def test_the_table_knows_own_and_broadcast_addresses_in_both_forms():
    table = HostAddresses.of(
        [(2, "10.9.0.1", 24, "10.9.0.255"), (2, "fd00:9::1", 64, None)],
        ephemeral=(40000, 50000),
    )
    assert table.own == {"10.9.0.1", "::ffff:10.9.0.1", "fd00:9::1"}
    assert table.broadcast == {"10.9.0.255", "::ffff:10.9.0.255"}
    assert table.ephemeral == (40000, 50000)


@pytest.mark.parametrize(
    ("host", "index", "on_link"),
    [
        ("10.9.0.77", 2, True),
        ("::ffff:10.9.0.77", 2, True),
        ("10.9.0.77", 3, False),  # that subnet is not on interface 3
        ("10.9.1.77", 2, False),
        ("fd00:9::77", 2, True),
        ("fd00:8::77", 2, False),
        ("fe80::1", 5, True),  # link-local: on every link
        ("not an address", 2, False),
    ],
)
def test_on_link_is_judged_per_interface(host, index, on_link):
    table = HostAddresses.of(
        [(2, "10.9.0.1", 24, "10.9.0.255"), (2, "fd00:9::1", 64, None)]
    )
    assert table.on_link(host, index) is on_link


@pytest.mark.skipif(sys.platform != "linux", reason="rtnetlink is Linux's")
def test_this_hosts_addresses_are_read_from_the_kernel():
    """Read-only: the dump ``ip addr`` makes; loopback is always there."""
    table = read_host_addresses()
    assert table is not None
    assert "127.0.0.1" in table.own
    assert table.on_link("127.0.0.9", socket.if_nametoindex("lo"))
    low, high = table.ephemeral
    assert 0 < low <= high <= 65535


def test_the_book_reads_again_when_due_and_keeps_the_last_table_on_failure(caplog):
    now = [0.0]
    tables = [HostAddresses.of([(1, "127.0.0.1", 8, None)])]
    failures = []

    def read():
        if failures:
            raise OSError(errno.EMFILE, "Too many open files")
        return tables[-1]

    book = AddressBook(read, every=1.0, clock=lambda: now[0])
    first = book.current()
    tables.append(HostAddresses.of([(2, "10.9.0.1", 24, None)]))
    now[0] = 0.5
    assert book.current() is first  # not due yet
    now[0] = 1.0
    assert book.current() is tables[-1]
    failures.append(True)
    with caplog.at_level(logging.WARNING, logger="trioudp"):
        for second in range(2, 6):
            now[0] = float(second)
            assert book.current() is tables[-1]
    assert book.failures == 4
    # Logged at powers of two of the failures: 1, 2 and 4.
    assert len(caplog.records) == 3


def test_the_first_reading_raises():
    def read():
        raise OSError(errno.EMFILE, "Too many open files")

    with pytest.raises(OSError, match="Too many open files"):
        AddressBook(read)
