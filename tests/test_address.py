import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioudp import DatagramTooLarge, InvalidAddress
from trioudp._address import (
    check_address,
    check_payload,
    check_port,
    is_loopback,
    max_payload,
    numeric_family,
)


def test_max_payload_per_family():
    assert max_payload(socket.AF_INET) == 65_507
    assert max_payload(socket.AF_INET6) == 65_527


@pytest.mark.parametrize("data", [b"", b"x", bytearray(b"ab"), memoryview(b"abc")])
def test_payload_accepts_bytes_like(data):
    assert check_payload(data, 10) is data


@pytest.mark.parametrize(
    ("value", "name"), [("text", "str"), (5, "int"), (None, "NoneType")]
)
def test_payload_rejects_non_bytes_naming_the_type(value, name):
    with pytest.raises(TypeError, match=f"not {name}"):
        check_payload(value, 10)


def test_payload_str_error_suggests_encode():
    with pytest.raises(TypeError, match=r"encode\(\)"):
        check_payload("hello", 10)


def test_payload_over_limit():
    with pytest.raises(DatagramTooLarge) as info:
        check_payload(b"x" * 11, 10)
    assert (info.value.size, info.value.limit) == (11, 10)
    assert isinstance(info.value, ValueError)


def test_memoryview_size_counts_bytes():
    view = memoryview(bytearray(16)).cast("I")
    with pytest.raises(DatagramTooLarge):
        check_payload(view, 15)


@pytest.mark.parametrize("port", [-1, 65536, 1.5, "80", True, None])
def test_bad_ports(port):
    with pytest.raises(InvalidAddress, match="port must be in 0..65535"):
        check_port(port)


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("127.0.0.1:9", "tuple"),
        (("127.0.0.1",), "1 items"),
        (("", 9), "non-empty"),
        ((b"127.0.0.1", 9), "non-empty str"),
        (("127.0.0.1", 70000), "port must be"),
    ],
)
def test_bad_addresses(address, fragment):
    with pytest.raises(InvalidAddress, match=fragment):
        check_address(address)


def test_good_addresses():
    assert check_address(("::1", 5, 0, 0)) == ("::1", 5)
    assert check_address(("example.test", 0)) == ("example.test", 0)


def test_numeric_family():
    assert numeric_family("10.1.2.3") == socket.AF_INET
    assert numeric_family("fe80::1%lo") == socket.AF_INET6
    assert numeric_family("example.test") is None


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("localhost", False),
        ("2001:db8::1", False),
    ],
)
def test_is_loopback(host, expected):
    assert is_loopback(host) is expected


@given(st.binary(max_size=2048), st.integers(min_value=0, max_value=2048))
def test_payload_check_is_exact(data, limit):
    if len(data) <= limit:
        assert check_payload(data, limit) == data
    else:
        with pytest.raises(DatagramTooLarge):
            check_payload(data, limit)


@given(
    st.one_of(
        st.none(),
        st.integers(),
        st.text(),
        st.binary(),
        st.tuples(st.text(), st.integers()),
    )
)
def test_check_address_only_accepts_host_port_tuples(value):
    try:
        host, port = check_address(value)
    except InvalidAddress:
        return
    assert isinstance(value, tuple)
    assert host
    assert 0 <= port <= 65535


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=65_507))
def test_any_payload_size_round_trips_through_the_parsers(data):
    from trioudp._address import check_payload

    assert check_payload(data, 65_507) == data
