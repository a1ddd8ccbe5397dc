import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioudp._cli._terminal import printable

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
