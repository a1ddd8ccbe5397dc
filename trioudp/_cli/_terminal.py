"""Peer bytes made safe to print on a terminal. No I/O.

A datagram's payload is chosen by whoever sent it. Printed raw, an ESC
sequence can clear the screen, retitle the window or write the clipboard
(OSC 52), BEL rings, and CR or LF forge whole lines of output (a fake
``Received exit from ...``). :func:`printable` is the one function the CLI
prints peer data through, and it shows only the first :data:`SHOWN` bytes
of a longer datagram: escaped, a byte can take 4 characters, and one line
must not fill a pipe or a screen.
"""

from __future__ import annotations

import codecs

__all__ = ["SHOWN", "printable"]

#: Bytes of peer data shown at most (2 KiB of text, escaped); the rest is
#: counted: ``... (20000 bytes)``.
SHOWN = 512

#: Code points never printed as they are: C0 controls (ESC, BEL, CR, LF,
#: TAB, ...), DEL and C1 controls (the 8-bit CSI and OSC among them), the
#: Unicode line and paragraph separators, and the bidirectional formatting
#: characters that reorder what a line appears to say.
_ESCAPED = [
    *range(0x20),  # C0
    0x7F,  # DEL
    *range(0x80, 0xA0),  # C1
    0x2028,  # line separator
    0x2029,  # paragraph separator
    *(0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)),
]
_TABLE = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" for code in _ESCAPED
}


def printable(data: bytes) -> str:
    """``data`` as one line of text that no terminal acts on.

    Valid UTF-8 is kept as it is (accents, CJK, emoji); bytes that are not
    UTF-8 and every control character are shown escaped, as ``\\xff``,
    ``\\x1b`` or ``\\u202e``. Of more than :data:`SHOWN` bytes, the first
    :data:`SHOWN` are shown (a character they cut short is left out),
    followed by ``... (N bytes)``.

    Example:
        >>> printable("héllo\\x1b[2J\\r\\n".encode() + b"\\xff")
        'héllo\\\\x1b[2J\\\\x0d\\\\x0a\\\\xff'
        >>> printable(b"x" * 600)[-20:]
        'xxxxx... (600 bytes)'
    """
    if len(data) <= SHOWN:
        return data.decode("utf-8", "backslashreplace").translate(_TABLE)
    decoder = codecs.getincrementaldecoder("utf-8")("backslashreplace")
    head = decoder.decode(data[:SHOWN], final=False)
    return f"{head.translate(_TABLE)}... ({len(data)} bytes)"
