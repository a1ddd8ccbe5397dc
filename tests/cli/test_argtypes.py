import argparse

import pytest

from trioudp._cli._argtypes import number, port


@pytest.mark.parametrize(
    ("kind", "bounds", "text", "value"),
    [
        (float, {"above": 0}, "1.5", 1.5),
        (float, {"above": 0}, "1e-9", 1e-9),
        (int, {"minimum": 0}, "0", 0),
        (int, {"minimum": 8, "maximum": 65507}, "65507", 65507),
        (float, {"minimum": 1, "zero_is_off": True}, "0", 0.0),
        (float, {"minimum": 1, "zero_is_off": True}, "1", 1.0),
    ],
)
def test_good_values(kind, bounds, text, value):
    parsed = number(kind, **bounds)(text)
    assert (parsed, type(parsed)) == (value, kind)


@pytest.mark.parametrize(
    ("kind", "bounds", "text", "message"),
    [
        (float, {"above": 0}, "inf", "must be a number > 0, not 'inf'"),
        (float, {"above": 0}, "nan", "must be a number > 0, not 'nan'"),
        (float, {"above": 0}, "0", "must be a number > 0, not '0'"),
        (float, {"above": 0}, "soon", "must be a number > 0, not 'soon'"),
        (int, {"minimum": 1}, "1.5", "must be an integer >= 1, not '1.5'"),
        (
            int,
            {"minimum": 8, "maximum": 65507},
            "4",
            "must be an integer >= 8 and <= 65507, not '4'",
        ),
        (
            float,
            {"minimum": 1, "zero_is_off": True},
            "0.5",
            "must be 0 (off) or a number >= 1, not '0.5'",
        ),
        (
            float,
            {"above": 0, "maximum": 1e9, "zero_is_off": True},
            "inf",
            "must be 0 (off) or a number > 0 and <= 1000000000, not 'inf'",
        ),
    ],
)
def test_bad_values_are_argument_type_errors_naming_the_value(
    kind, bounds, text, message
):
    with pytest.raises(argparse.ArgumentTypeError) as info:
        number(kind, **bounds)(text)
    assert str(info.value) == message


@pytest.mark.parametrize("text", ["abc", "-1", "65536", "1.0", ""])
def test_bad_ports(text):
    with pytest.raises(argparse.ArgumentTypeError) as info:
        port(text)
    assert str(info.value) == f"port must be in 0..65535, not {text!r}"
