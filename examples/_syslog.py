"""Syslog messages (RFC 3164 and RFC 5424) parsed into plain dicts.

Pure: no I/O and no Trio. :func:`parse_untrusted` takes whatever a peer sent
and either returns a dict or raises :class:`MalformedMessage`, nothing else;
:func:`json_line` writes a record as one line of JSON.

Bytes that are not UTF-8 and control characters other than tab and newline
become U+FFFD: 3 bytes of UTF-8 each. JSON would spell a control character
in 6 bytes (``\\u001b``), and a program that prints a decoded message
would hand it to a terminal. A record's line thus holds at most 3 bytes for
each byte of the datagram, plus its keys (see :data:`KEYS_SIZE`).
"""

from __future__ import annotations

import json
import re

__all__ = ["KEYS_SIZE", "MalformedMessage", "json_line", "parse_untrusted"]


class MalformedMessage(ValueError):
    """The datagram is not a syslog message this parser understands."""


_PRI = re.compile(rb"<(\d{1,3})>")
# RFC 3164: "Mmm dd hh:mm:ss HOSTNAME TAG[PID]: MSG" (dd is space-padded).
_BSD_TIMESTAMP = re.compile(
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ 0-3]\d \d\d:\d\d:\d\d "
)
_TAG = re.compile(r"([^\s:\[\]]{1,48})(?:\[([^\]\s]{1,32})\])?: ?")
_SD_ELEMENT = re.compile(
    r'\[([^\s=\]"]{1,32})((?: [^\s=\]"]{1,32}="(?:[^"\\]|\\.)*")*)\]'
)
_SD_PARAM = re.compile(r' ([^\s=\]"]{1,32})="((?:[^"\\]|\\.)*)"')
_SD_ESCAPE = re.compile(r"\\([\"\\\]])")
# C0 controls but tab and newline, DEL, and C1 controls.
_CONTROLS = dict.fromkeys(
    [*range(0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)], "\ufffd"
)
#: Bytes a record's JSON line may hold beyond 3 for each byte of the
#: datagram and the peer's address: its keys, quotes and separators.
KEYS_SIZE = 200


def _nil(field: str) -> str | None:
    return None if field == "-" else field


def _priority(data: bytes) -> tuple[int, int, bytes]:
    match = _PRI.match(data)
    if match is None or int(match[1]) > 191 or match[1][:1] == b"0" != match[1]:
        msg = "no <PRI> in 0..191 at the start"
        raise MalformedMessage(msg)
    facility, severity = divmod(int(match[1]), 8)
    return facility, severity, data[match.end() :]


def _structured_data(text: str) -> tuple[dict[str, dict[str, str]] | None, str]:
    """The STRUCTURED-DATA field at the start of ``text``, and the rest."""
    if text.startswith("-"):
        return None, text[1:]
    elements: dict[str, dict[str, str]] = {}
    position = 0
    while (element := _SD_ELEMENT.match(text, position)) is not None:
        elements[element[1]] = {
            name: _SD_ESCAPE.sub(r"\1", value)
            for name, value in _SD_PARAM.findall(element[2])
        }
        position = element.end()
    if not elements:
        msg = "STRUCTURED-DATA is neither '-' nor [id param=\"value\"]"
        raise MalformedMessage(msg)
    return elements, text[position:]


def _rfc5424(facility: int, severity: int, text: str) -> dict[str, object]:
    # VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD [SP MSG]
    fields = text.split(" ", 6)
    if len(fields) < 7 or not all(fields[:6]):
        msg = "RFC 5424 header has fewer than 7 fields"
        raise MalformedMessage(msg)
    _version, timestamp, hostname, app, pid, msgid, rest = fields
    structured_data, rest = _structured_data(rest)
    if rest and not rest.startswith(" "):
        msg = "no space after STRUCTURED-DATA"
        raise MalformedMessage(msg)
    return {
        "format": "rfc5424",
        "facility": facility,
        "severity": severity,
        "timestamp": _nil(timestamp),
        "hostname": _nil(hostname),
        "app": _nil(app),
        "pid": _nil(pid),
        "msgid": _nil(msgid),
        "structured_data": structured_data,
        "msg": rest[1:].removeprefix("\ufeff"),
    }


def _rfc3164(facility: int, severity: int, text: str) -> dict[str, object]:
    timestamp = hostname = None
    stamp = _BSD_TIMESTAMP.match(text)
    if stamp is not None:
        timestamp = stamp[0].strip()
        hostname, _, text = text[stamp.end() :].partition(" ")
    tag = _TAG.match(text)
    app = pid = None
    if tag is not None:
        app, pid, text = tag[1], tag[2], text[tag.end() :]
    return {
        "format": "rfc3164",
        "facility": facility,
        "severity": severity,
        "timestamp": timestamp,
        "hostname": hostname or None,
        "app": app,
        "pid": pid,
        "msg": text,
    }


def parse_untrusted(data: bytes) -> dict[str, object]:
    """One syslog datagram as a dict; raises only :class:`MalformedMessage`.

    Keys: ``format`` (``"rfc3164"``/``"rfc5424"``), ``facility`` and
    ``severity`` (numbers), ``timestamp``, ``hostname``, ``app``, ``pid``,
    ``msg``, and for RFC 5424 ``msgid`` and ``structured_data`` (``{id:
    {param: value}}``); absent fields are None.

    Example:
        >>> parse_untrusted(b"<156>Nov 26 04:32:34 vm myapp[42]: hi")["app"]
        'myapp'
    """
    facility, severity, rest = _priority(data)
    text = rest.decode("utf-8", "replace").rstrip("\r\n\x00").translate(_CONTROLS)
    if text.startswith("1 "):
        return _rfc5424(facility, severity, text)
    return _rfc3164(facility, severity, text)


def json_line(peer: str, message: dict[str, object]) -> str:
    """``message`` from ``peer`` as one line of JSON, ``peer`` first, not
    ASCII-escaped: at most ``3 * len(datagram) + len(peer) + KEYS_SIZE``
    bytes of UTF-8.

    Example:
        >>> json_line("192.0.2.7", parse_untrusted(b"<13>hi\\x1b[2J"))[:40]
        '{"peer": "192.0.2.7", "format": "rfc3164'
    """
    return json.dumps({"peer": peer, **message}, ensure_ascii=False)
