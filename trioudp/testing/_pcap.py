"""Write a trace as a pcapng capture: what crossed the wire, each with its fate.

Pure: it turns trace events into bytes. Readers: ``tcpdump -r``, Wireshark,
``tshark`` (which shows the comments).

What is in the file. One packet record for each datagram that went onto the
virtual wire (a ``send``), one for each extra copy the link made (a
``duplicate``), and one ICMP (or ICMPv6) "port unreachable" packet from the
destination host for each datagram dropped as ``port_unreachable`` (whether
or not the sender is connected and so sees it), with synthesised IP, UDP and
ICMP headers and correct checksums. A datagram that never left its host
(dropped as ``host_unreachable``: no host answered for its address; or
``no_route``: its socket's ``SO_BINDTODEVICE`` sent it where it cannot
arrive) is not a packet on any wire and is not written; the trace
(:meth:`VirtualNetwork.trace_text`) is the complete record, and the capture's
section comment says how many datagrams were left out and why. A datagram
that crossed a link in fragments (above its MTU) is written whole.

Fates. Each packet record carries a comment (pcapng ``opt_comment``) with the
packet number and everything that happened to it, in order, with virtual
times: ``#3 deliver at 0.010000000``, ``#4 drop loss at 0.000000000``. A
multicast or broadcast datagram is one packet record, to the group or
broadcast address, whose comment lists the fate of each host's copy
(``deliver``, or ``drop no_receiver`` where no socket there takes it); it is
written if any copy left its host.

Time. Virtual time 0 (the network's first install) is written as
:data:`PCAP_EPOCH`, 2000-01-01 00:00:00 UTC, so captures of the same seed and
program are byte-identical; pass ``epoch=time.time()`` for wall-clock dates.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._trace import TraceEvent

__all__ = ["PCAP_EPOCH", "ip_udp_packet", "write_pcap"]

#: Unix time that virtual time 0 is written as: 2000-01-01 00:00:00 UTC.
PCAP_EPOCH = 946_684_800

_LINKTYPE_RAW = 101  # raw IPv4/IPv6, no link-layer header
_SNAPLEN = 262_144
_UDP, _ICMP, _ICMPV6 = 17, 1, 58
# Fates decided before the datagram left its host: never on the wire.
_NEVER_SENT = frozenset({"host_unreachable", "no_route"})
# Linux quotes at most this much of the offending packet in an ICMP error.
_ICMP_QUOTE = {4: 576 - 28, 6: 1280 - 48}


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo_header(
    src: ipaddress.IPv4Address | ipaddress.IPv6Address,
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address,
    protocol: int,
    length: int,
) -> bytes:
    if src.version == 4:
        return src.packed + dst.packed + struct.pack("!BBH", 0, protocol, length)
    return src.packed + dst.packed + struct.pack("!IxxxB", length, protocol)


def _ip_packet(
    src: ipaddress.IPv4Address | ipaddress.IPv6Address,
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address,
    protocol: int,
    body: bytes,
    ident: int,
) -> bytes:
    if src.version == 6:
        head = struct.pack(
            "!IHBB16s16s", 6 << 28, len(body), protocol, 64, src.packed, dst.packed
        )
        return head + body
    head = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(body),
        ident & 0xFFFF,
        0,
        64,
        protocol,
        0,
        src.packed,
        dst.packed,
    )
    return head[:10] + struct.pack("!H", _checksum(head)) + head[12:] + body


def ip_udp_packet(
    src: tuple[str, int], dst: tuple[str, int], payload: bytes, ident: int = 0
) -> bytes:
    """An IPv4 or IPv6 packet carrying a UDP datagram, checksums included.

    Example:
        >>> packet = ip_udp_packet(("127.0.0.1", 1), ("127.0.0.1", 2), b"hi")
        >>> len(packet), packet[0] >> 4
        (30, 4)
    """
    src_ip, dst_ip = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    length = 8 + len(payload)
    header = struct.pack("!HHHH", src[1], dst[1], length, 0)
    pseudo = _pseudo_header(src_ip, dst_ip, _UDP, length)
    checksum = _checksum(pseudo + header + payload) or 0xFFFF
    udp = header[:6] + struct.pack("!H", checksum) + payload
    return _ip_packet(src_ip, dst_ip, _UDP, udp, ident)


def _port_unreachable(event: TraceEvent) -> bytes:
    """The ICMP error the destination host sends back for ``event``'s datagram."""
    offending = ip_udp_packet(event.src, event.dst, event.payload, event.packet)
    # The error goes from the datagram's destination back to its source.
    src_ip = ipaddress.ip_address(event.dst[0])
    dst_ip = ipaddress.ip_address(event.src[0])
    quote = offending[: _ICMP_QUOTE[src_ip.version]]
    if src_ip.version == 4:
        body = struct.pack("!BBHI", 3, 3, 0, 0) + quote
        checksum = _checksum(body)
        protocol = _ICMP
    else:
        body = struct.pack("!BBHI", 1, 4, 0, 0) + quote
        pseudo = _pseudo_header(src_ip, dst_ip, _ICMPV6, len(body))
        checksum = _checksum(pseudo + body)
        protocol = _ICMPV6
    body = body[:2] + struct.pack("!H", checksum) + body[4:]
    return _ip_packet(src_ip, dst_ip, protocol, body, event.packet)


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _padded(value)


def _block(kind: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)


def _fate(event: TraceEvent) -> str:
    reason = f" {event.reason}" if event.reason else ""
    return f"{event.kind}{reason} at {event.time:.9f}"


def write_pcap(
    file: BinaryIO, events: Iterable[TraceEvent], *, epoch: float = PCAP_EPOCH
) -> int:
    """Write a trace as pcapng: the wire's packets, each with its fate.

    Returns how many packet records were written. See the module notes for
    what is in the file; :meth:`VirtualNetwork.write_pcap` is the usual way
    in.

    Args:
        file: a binary file open for writing.
        events: a whole trace, in order (fates are gathered per packet).
        epoch: the Unix time that virtual time 0 is written as.

    Example:
        >>> import io
        >>> from trioudp.testing import TraceEvent
        >>> sent = TraceEvent(time=0.0, kind="send", packet=1, src=("127.0.0.1", 1),
        ...                   dst=("127.0.0.1", 2), size=2, payload=b"hi")
        >>> write_pcap(io.BytesIO(), [sent])
        1
    """
    events = list(events)
    fates: dict[int, list[str]] = {}
    kept_home: dict[int, str] = {}  # packet -> why (a copy of) it stayed home
    left: set[int] = set()  # packets that reached the wire, at least one copy
    for event in events:
        if event.kind == "send":
            continue
        fates.setdefault(event.packet, []).append(_fate(event))
        if event.kind == "drop" and event.reason in _NEVER_SENT:
            kept_home.setdefault(event.packet, event.reason)
        elif event.kind not in ("hold", "release"):
            left.add(event.packet)
    # A multicast or broadcast datagram is one packet on the wire even when
    # its copy for one host stays home (that link's MTU): only a datagram
    # none of whose copies left is not written.
    grounded = {number for number in kept_home if number not in left}
    never_sent: dict[str, int] = {}
    for number in grounded:
        reason = kept_home[number]
        never_sent[reason] = never_sent.get(reason, 0) + 1
    records = []
    for event in events:
        if event.kind in ("send", "duplicate"):
            if event.packet in grounded:
                continue
            packet = ip_udp_packet(event.src, event.dst, event.payload, event.packet)
            what = "sent" if event.kind == "send" else "duplicate copy"
            comment = "; ".join(
                [f"#{event.packet} {what}", *fates.get(event.packet, [])]
            )
        elif event.kind == "drop" and event.reason == "port_unreachable":
            packet = _port_unreachable(event)
            reported = any(f.startswith("icmp ") for f in fates[event.packet])
            comment = f"#{event.packet} ICMP port unreachable, back to its sender" + (
                "; reported to the connected sender"
                if reported
                else "; not reported: Linux reports it to connected sockets only"
            )
        else:
            continue
        records.append((event.time, packet, comment))

    left_out = ", ".join(
        f"{n} for {reason}" for reason, n in sorted(never_sent.items())
    )
    section_comment = (
        "trioudp VirtualNetwork capture; virtual time 0 is"
        f" {epoch:.9f} s after the Unix epoch; datagrams that never left their"
        f" host are not written ({left_out or 'none'}): see the trace"
    )
    file.write(
        _block(
            0x0A0D0D0A,
            struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
            + _option(1, section_comment.encode())
            + _option(0, b""),
        )
    )
    file.write(
        _block(
            1,
            struct.pack("<HHI", _LINKTYPE_RAW, 0, _SNAPLEN)
            + _option(2, b"trioudp-virtual")  # if_name
            + _option(9, bytes([9]))  # if_tsresol: nanoseconds
            + _option(0, b""),
        )
    )
    base = round(epoch * 1e9)
    for time, packet, comment in records:
        stamp = base + max(0, round(time * 1e9))
        captured = packet[:_SNAPLEN]
        file.write(
            _block(
                6,
                struct.pack(
                    "<IIIII",
                    0,
                    stamp >> 32,
                    stamp & 0xFFFFFFFF,
                    len(captured),
                    len(packet),
                )
                + _padded(captured)
                + _option(1, comment.encode())
                + _option(0, b""),
            )
        )
    return len(records)
