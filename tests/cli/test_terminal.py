import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioudp._cli._terminal import SHOWN, printable

HOSTILE = {
    "clear screen": (b"\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),
    "OSC 52 clipboard": (b"\x1b]52;c;ZXZpbA==\x07", "\\x1b]52;c;ZXZpbA==\\x07"),
    "window title": (b"\x1b]0;pwned\x1b\\", "\\x1b]0;pwned\\x1b\\"),
    "fake line via CR": (
        b"hi\rReceived exit from ('127.0.0.1', 1)",
        "hi\\x0dReceived exit from ('127.0.0.1', 1)",
    ),
    "fake line via LF": (b"hi\nServer exiting...", "hi\\x0aServer exiting..."),
    "BEL and DEL": (b"\x07\x7f", "\\x07\\x7f"),
    "C1 CSI as UTF-8": ("\u009b2J".encode(), "\\x9b2J"),
    "C1 CSI as a raw byte": (b"\x9b2J", "\\x9b2J"),
    "NUL and TAB": (b"a\x00b\tc", "a\\x00b\\x09c"),
    "right-to-left override": ("abc\u202edcba".encode(), "abc\\u202edcba"),
    "line separator": ("a\u2028b".encode(), "a\\u2028b"),
}


@pytest.mark.parametrize(("payload", "shown"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_payloads_are_escaped_visibly(payload, shown):
    assert printable(payload) == shown


def test_printable_utf8_is_kept_as_is():
    text = "Hello, server! héllo 日本語 👍🏽 \\x1b as typed"
    assert printable(text.encode()) == text


def test_bytes_that_are_not_utf8_are_escaped():
    assert printable(b"look\xff\xfe") == "look\\xff\\xfe"


@given(st.binary(max_size=200))
def test_no_control_character_ever_reaches_the_terminal(data):
    for char in printable(data):
        assert unicodedata.category(char) not in ("Cc", "Zl", "Zp"), repr(char)


@given(
    st.text(
        st.characters(
            blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Cf"),
        )
    )
)
def test_text_without_controls_is_unchanged(text):
    assert printable(text.encode()) == text


def test_a_long_datagram_shows_its_first_bytes_and_its_size():
    assert printable(b"x" * SHOWN) == "x" * SHOWN
    assert printable(b"x" * (SHOWN + 1)) == "x" * SHOWN + f"... ({SHOWN + 1} bytes)"
    # Escaped, 4 characters a byte: one 65,507-byte datagram, 2 KiB of text.
    assert len(printable(b"\xff" * 65_507)) == 4 * SHOWN + len("... (65507 bytes)")


def test_a_character_cut_short_is_left_out_not_escaped():
    data = b"a" * (SHOWN - 1) + "€".encode()
    assert printable(data) == "a" * (SHOWN - 1) + f"... ({SHOWN + 2} bytes)"


@given(st.binary(min_size=SHOWN, max_size=2 * SHOWN))
def test_no_control_character_in_a_cut_datagram_either(data):
    for char in printable(data):
        assert unicodedata.category(char) not in ("Cc", "Zl", "Zp"), repr(char)
