"""The pure parts of the socket model: Linux's receive-buffer charge, option
encodings and ancillary data (measured against the kernel in
tests/testing/test_conformance.py)."""

import errno
import socket
import struct

import pytest

from trioudp.testing._sockopts import (
    INT_OPTIONS,
    fit_ancillary,
    in_pktinfo,
    int_from_buffer,
    int_to_buffer,
    parse_ip_mreq,
    parse_ipv6_mreq,
    parse_send_ancillary,
    timespec,
    truesize,
)

IP, IP6 = socket.IPPROTO_IP, socket.IPPROTO_IPV6


@pytest.mark.parametrize(
    ("payload", "family", "charge"),
    [
        # (payload, family) -> /proc/net/udp rx_queue for one datagram, Linux 6.x
        (0, socket.AF_INET, 832),
        (197, socket.AF_INET, 832),
        (198, socket.AF_INET, 1280),
        (184, socket.AF_INET6, 832),
        (185, socket.AF_INET6, 1280),
        (646, socket.AF_INET, 2304),
        (1670, socket.AF_INET, 4352),
        (3718, socket.AF_INET, 8448),
        (7814, socket.AF_INET, 16640),
        (16004, socket.AF_INET, 16640),
        (16005, socket.AF_INET, 16837),
        (15992, socket.AF_INET6, 16824),
        (65000, socket.AF_INET, 65832),
    ],
)
def test_truesize_matches_the_kernels_measured_charge(payload, family, charge):
    assert truesize(payload, family) == charge


def test_integer_options_take_four_bytes_or_one_at_the_ip_level():
    ttl = INT_OPTIONS[(IP, socket.IP_TTL)]
    assert int_from_buffer(struct.pack("@i", 9), ttl, IP) == 9
    assert int_from_buffer(b"\x07", ttl, IP) == 7
    reuse = INT_OPTIONS[(socket.SOL_SOCKET, socket.SO_REUSEADDR)]
    with pytest.raises(OSError) as info:
        int_from_buffer(b"\x01", reuse, socket.SOL_SOCKET)
    assert info.value.errno == errno.EINVAL
    assert int_to_buffer(64, 1, IP) == b"@"
    assert int_to_buffer(64, 4, socket.SOL_SOCKET) == b"@\0\0\0"
    assert int_to_buffer(64, 2, socket.SOL_SOCKET) == b"@\0"


def test_option_ranges_and_defaults():
    ttl = INT_OPTIONS[(IP, socket.IP_TTL)]
    assert (ttl.default, ttl.check(-1), ttl.check(255)) == (64, 64, 255)
    for bad in (0, 256):
        with pytest.raises(OSError):
            ttl.check(bad)
    loop = INT_OPTIONS[(IP6, socket.IPV6_MULTICAST_LOOP)]
    with pytest.raises(OSError):
        loop.check(2)
    assert INT_OPTIONS[(socket.SOL_SOCKET, socket.SO_BROADCAST)].check(5) == 1


def test_membership_requests():
    group, interface = socket.inet_aton("239.1.2.3"), socket.inet_aton("10.0.0.1")
    assert parse_ip_mreq(group + interface) == ("239.1.2.3", "10.0.0.1", 0)
    assert parse_ip_mreq(group + interface + struct.pack("@i", 2))[2] == 2
    six = socket.inet_pton(socket.AF_INET6, "ff15::1") + struct.pack("@I", 2)
    assert parse_ipv6_mreq(six) == ("ff15::1", 2)
    for short in (parse_ip_mreq, parse_ipv6_mreq):
        with pytest.raises(OSError):
            short(b"\0" * 7)


def test_ancillary_data_fits_the_buffer_or_is_cut():
    info = (IP, 8, in_pktinfo(1, "127.0.0.1", "127.0.0.1"))
    stamp = (socket.SOL_SOCKET, 35, timespec(1.5))
    assert struct.unpack("@qq", stamp[2]) == (1, 500_000_000)
    room = socket.CMSG_SPACE(16) + socket.CMSG_LEN(12)
    assert fit_ancillary([stamp, info], room) == ([stamp, info], False)
    assert fit_ancillary([stamp, info], room - 1) == ([stamp], True)


def test_send_ancillary_data():
    pktinfo = struct.pack("@i4s4s", 0, socket.inet_aton("127.0.0.2"), bytes(4))
    assert parse_send_ancillary([(IP, 8, pktinfo)], socket.AF_INET) == (
        "127.0.0.2",
        None,
        None,
    )
    six = socket.inet_pton(socket.AF_INET6, "::1") + struct.pack("@I", 0)
    assert parse_send_ancillary([(IP6, 50, six)], socket.AF_INET6)[0] == "::1"
    ttl = (IP, socket.IP_TTL, struct.pack("@i", 3))
    tos = (IP, socket.IP_TOS, b"\x10")
    assert parse_send_ancillary([ttl, tos], socket.AF_INET) == (None, 3, 0x10)
    for wrong in (
        (socket.SOL_SOCKET, 1, b""),
        (IP, socket.IP_TTL, struct.pack("@i", 0)),  # 1..255
        (IP, socket.IP_TTL, b"\x03"),  # an int, not a byte
        (IP, socket.IP_TOS, b"\x10\x00"),
    ):
        with pytest.raises(OSError) as info:
            parse_send_ancillary([wrong], socket.AF_INET)
        assert info.value.errno == errno.EINVAL
