"""Write a trace as a pcapng capture: what crossed the wire, each with its fate.

Pure: it turns trace events into bytes. Readers: ``tcpdump -r``, Wireshark,
``tshark`` (which shows the comments).

What is in the file. One packet record for each datagram that went onto the
virtual wire (a ``send``), one for each extra copy the link made (a
``duplicate``), and one ICMP (or ICMPv6) "port unreachable" packet from the
destination host for each datagram dropped as ``port_unreachable`` (whether
or not the sender is connected and so sees it), with synthesised IP, UDP and
ICMP headers and correct checksums. A datagram that never left its host
(dropped as ``host_unreachable``: no host answered for its address;
``no_route``: its socket's ``SO_BINDTODEVICE`` sent it where it cannot
arrive; or ``queue``: tail dropped by its link's full queue) is not a packet
on any wire and is not written; the trace (:meth:`VirtualNetwork.trace_text`)
is the complete record, and the capture's section comment says how many
datagrams were left out and why. A datagram that crossed a link in
fragments (above its MTU) is written whole. A datagram whose bytes a rule
changed has a second record, the ``corrupted copy``, with the bytes that
arrive.

Network events (crash, restart, partition, heal, a flapping link going down
or up) are no packets: each is one more comment of the section header,
``at 2.000000000: crash db: ...``, in order (the first
:data:`MAX_EVENT_COMMENTS`, then how many more the trace has).

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

Memory. The capture streams: two passes over the trace, the first linking
each datagram's fates in arrays of integers, the second writing each record
as it goes, so that writing a million-datagram trace holds little more than
the trace itself.
"""

from __future__ import annotations

import socket
import struct
from array import array
from operator import itemgetter
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from ._model import Endpoint
    from ._trace import TraceEvent

__all__ = [
    "MAX_EVENT_COMMENTS",
    "PCAP_EPOCH",
    "ip_udp_packet",
    "write_entries",
    "write_pcap",
]

#: Unix time that virtual time 0 is written as: 2000-01-01 00:00:00 UTC.
PCAP_EPOCH = 946_684_800

_LINKTYPE_RAW = 101  # raw IPv4/IPv6, no link-layer header
_SNAPLEN = 262_144
_UDP, _ICMP, _ICMPV6 = 17, 1, 58
# Fates decided before the datagram left its host: never on the wire.
_NEVER_SENT = ("host_unreachable", "no_route", "queue")
#: How many network events the section header lists, at most.
MAX_EVENT_COMMENTS = 1000
# The events that put a packet on the wire, and what its record calls it.
_RECORDED = {
    "send": "sent",
    "duplicate": "duplicate copy",
    "corrupt": "corrupted copy",
}
# Linux quotes at most this much of the offending packet in an ICMP error.
_ICMP_QUOTE = {4: 576 - 28, 6: 1280 - 48}
_PACKET_HEADER = struct.Struct("<IIIIIII")  # block type, length, then EPB fields
_COMMENT_OPTION = struct.Struct("<HH")
_END_OF_OPTIONS_AND_LENGTH = struct.Struct("<II")
_PADDING = (b"", b"\0\0\0", b"\0\0", b"\0")  # by length % 4
_IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
_IPV6_HEADER = struct.Struct("!IHBB16s16s")
_UDP_HEADER = struct.Struct("!HHHH")
_PSEUDO_V4 = struct.Struct("!4s4sBBH")
_IPV4_UDP = struct.Struct("!BBHHHBBH4s4sHHHH")
_IPV6_UDP = struct.Struct("!IHBB16s16sHHHH")
_PSEUDO_V6 = struct.Struct("!16s16sIxxxB")

#: A trace entry as ``_trace`` stores it: (clock time, kind, packet id, src,
#: dst, payload, reason).
_Entry = tuple[float, str, int, "Endpoint", "Endpoint", bytes, "str | None"]


def _checksum(data: bytes) -> int:
    """The Internet checksum: the ones' complement of the ones' complement
    sum of 16-bit words, which is the big-endian number modulo 65535 (with
    65535 for a non-zero multiple)."""
    if len(data) % 2:
        data += b"\0"
    number = int.from_bytes(data, "big")
    if not number:
        return 0xFFFF
    return ~(number % 0xFFFF or 0xFFFF) & 0xFFFF


_packed: dict[str, bytes] = {}


def _packed_ip(ip: str) -> bytes:
    """An address's 4 or 16 bytes (cached: a capture repeats a few)."""
    found = _packed.get(ip)
    if found is None:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        found = socket.inet_pton(family, ip)
        if len(_packed) < 4096:
            _packed[ip] = found
    return found


def _ip_packet(src: bytes, dst: bytes, protocol: int, body: bytes, ident: int) -> bytes:
    if len(src) == 16:
        return _IPV6_HEADER.pack(6 << 28, len(body), protocol, 64, src, dst) + body
    head = _IPV4_HEADER.pack(
        0x45, 0, 20 + len(body), ident & 0xFFFF, 0, 64, protocol, 0, src, dst
    )
    return head[:10] + _checksum(head).to_bytes(2, "big") + head[12:] + body


def _pseudo_header(src: bytes, dst: bytes, protocol: int, length: int) -> bytes:
    if len(src) == 4:
        return _PSEUDO_V4.pack(src, dst, 0, protocol, length)
    return _PSEUDO_V6.pack(src, dst, length, protocol)


def ip_udp_packet(
    src: tuple[str, int], dst: tuple[str, int], payload: bytes, ident: int = 0
) -> bytes:
    """An IPv4 or IPv6 packet carrying a UDP datagram, checksums included.

    Example:
        >>> packet = ip_udp_packet(("127.0.0.1", 1), ("127.0.0.1", 2), b"hi")
        >>> len(packet), packet[0] >> 4
        (30, 4)
    """
    src_ip, dst_ip = _packed_ip(src[0]), _packed_ip(dst[0])
    length = 8 + len(payload)
    header = _UDP_HEADER.pack(src[1], dst[1], length, 0)
    pseudo = _pseudo_header(src_ip, dst_ip, _UDP, length)
    checksum = _checksum(pseudo + header + payload) or 0xFFFF
    udp = header[:6] + checksum.to_bytes(2, "big") + payload
    return _ip_packet(src_ip, dst_ip, _UDP, udp, ident)


def _port_unreachable(
    src: Endpoint, dst: Endpoint, payload: bytes, ident: int
) -> bytes:
    """The ICMP error the destination host sends back for the datagram
    ``src`` > ``dst``."""
    offending = ip_udp_packet(src, dst, payload, ident)
    # The error goes from the datagram's destination back to its source.
    from_ip, to_ip = _packed_ip(dst[0]), _packed_ip(src[0])
    quote = offending[: _ICMP_QUOTE[4 if len(from_ip) == 4 else 6]]
    if len(from_ip) == 4:
        body = struct.pack("!BBHI", 3, 3, 0, 0) + quote
        checksum = _checksum(body)
        protocol = _ICMP
    else:
        body = struct.pack("!BBHI", 1, 4, 0, 0) + quote
        pseudo = _pseudo_header(from_ip, to_ip, _ICMPV6, len(body))
        checksum = _checksum(pseudo + body)
        protocol = _ICMPV6
    body = body[:2] + checksum.to_bytes(2, "big") + body[4:]
    return _ip_packet(from_ip, to_ip, protocol, body, ident)


def _address_pair(src_ip: str, dst_ip: str) -> tuple[bytes, bytes, int]:
    """Two addresses packed, and their 16-bit words summed modulo 65535."""
    from_ip, to_ip = _packed_ip(src_ip), _packed_ip(dst_ip)
    return from_ip, to_ip, int.from_bytes(from_ip + to_ip, "big") % 0xFFFF


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _padded(value)


def _block(kind: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)


def write_pcap(
    file: BinaryIO, events: Iterable[TraceEvent], *, epoch: float = PCAP_EPOCH
) -> int:
    """Write a trace as pcapng: the wire's packets, each with its fate.

    Returns how many packet records were written. See the module notes for
    what is in the file; :meth:`VirtualNetwork.write_pcap` is the usual way
    in (and streams a long trace without building its events).

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
    entries = [
        (e.time, e.kind, e.packet, e.src, e.dst, e.payload, e.reason) for e in events
    ]
    return write_entries(file, entries, 0.0, epoch=epoch)


def write_entries(
    file: BinaryIO,
    entries: Sequence[_Entry],
    origin: float,
    *,
    epoch: float = PCAP_EPOCH,
) -> int:
    """:func:`write_pcap` for a trace as ``_trace`` stores it: entries with
    times on the Trio clock, ``origin`` being virtual time 0."""
    if not entries:
        low, count = 0, 0
    else:
        low = min(map(itemgetter(2), entries))
        count = max(map(itemgetter(2), entries)) - low + 1
    # Pass 1, backwards: each packet's fates as a linked list of entry
    # indexes (prepending in reverse leaves them in order), where (a copy
    # of) it stayed home, and whether any copy left.
    first = array("i", [-1]) * count
    following = array("i", [-1]) * len(entries)
    stayed = bytearray(count)  # 1 + index in _NEVER_SENT
    left = bytearray(count)
    index = len(entries)
    network: list[int] = []  # crashes, partitions: no datagram's (packet 0)
    for _, kind, packet_id, _, _, _, reason in reversed(entries):
        index -= 1
        if kind == "send":
            continue
        if not packet_id:
            network.append(index)
            continue
        number = packet_id - low
        following[index] = first[number]
        first[number] = index
        if kind == "deliver":
            left[number] = 1
        elif kind == "drop" and reason in _NEVER_SENT:
            stayed[number] = 1 + _NEVER_SENT.index(reason)
        elif kind != "hold" and kind != "release":
            left[number] = 1
    # A multicast or broadcast datagram is one packet on the wire even when
    # its copy for one host stays home: only a datagram none of whose
    # copies left is not written.
    never_sent = dict.fromkeys(_NEVER_SENT, 0)
    for number in range(count):
        if stayed[number] and not left[number]:
            never_sent[_NEVER_SENT[stayed[number] - 1]] += 1
        else:
            stayed[number] = 0
    left_out = ", ".join(
        f"{n} for {reason}" for reason, n in sorted(never_sent.items()) if n
    )
    section_comment = (
        "trioudp VirtualNetwork capture; virtual time 0 is"
        f" {epoch:.9f} s after the Unix epoch; datagrams that never left their"
        f" host are not written ({left_out or 'none'}): see the trace"
    )
    network.reverse()
    event_comments = [
        f"at {entries[index][0] - origin:.9f}: {entries[index][1]} {entries[index][6]}"
        for index in network[:MAX_EVENT_COMMENTS]
    ]
    if len(network) > MAX_EVENT_COMMENTS:
        more = len(network) - MAX_EVENT_COMMENTS
        event_comments.append(f"and {more} more network events: see the trace")
    file.write(
        _block(
            0x0A0D0D0A,
            struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
            + _option(1, section_comment.encode())
            + b"".join(_option(1, comment.encode()) for comment in event_comments)
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
    # Pass 2: one record per packet on the wire, written as it is reached.
    pairs: dict[tuple[str, str], tuple[bytes, bytes, int]] = {}
    pack_header = _PACKET_HEADER.pack
    pack_v4, pack_v6 = _IPV4_UDP.pack, _IPV6_UDP.pack
    base = round(epoch * 1e9)
    written = 0
    write = file.write
    shown_time, shown = None, ""
    for time, kind, packet_id, src, dst, payload, reason in entries:
        if kind in _RECORDED and packet_id:
            number = packet_id - low
            if stayed[number]:
                continue
            # _UdpPackets.packet, inlined: this loop runs once per packet.
            src_ip, src_port = src
            dst_ip, dst_port = dst
            pair = pairs.get((src_ip, dst_ip))
            if pair is None:
                pair = pairs[src_ip, dst_ip] = _address_pair(src_ip, dst_ip)
            from_ip, to_ip, words = pair
            size = len(payload)
            length = 8 + size
            data = int.from_bytes(payload, "big")
            if size & 1:
                data <<= 8
            total = words + _UDP + 2 * length + src_port + dst_port + data % 0xFFFF
            checksum = ~(total % 0xFFFF or 0xFFFF) & 0xFFFF or 0xFFFF
            # Each field passed as it is: a tuple to unpack costs a tenth.
            if len(from_ip) == 4:
                ident = packet_id & 0xFFFF
                header = 0x4514 + length + ident + 0x4011 + words
                header = ~(header % 0xFFFF or 0xFFFF) & 0xFFFF
                packet = (
                    pack_v4(
                        0x45,
                        0,
                        20 + length,
                        ident,
                        0,
                        64,
                        _UDP,
                        header,
                        from_ip,
                        to_ip,
                        src_port,
                        dst_port,
                        length,
                        checksum,
                    )
                    + payload
                )
            else:
                packet = (
                    pack_v6(
                        6 << 28,
                        length,
                        _UDP,
                        64,
                        from_ip,
                        to_ip,
                        src_port,
                        dst_port,
                        length,
                        checksum,
                    )
                    + payload
                )
            fates = f"#{packet_id} {_RECORDED[kind]}"
            index = first[number]
            while index >= 0:
                fate = entries[index]
                if fate[0] != shown_time:  # fates often share an instant
                    shown_time = fate[0]
                    shown = f"{shown_time - origin:.9f}"
                why = fate[6]
                fates = (
                    f"{fates}; {fate[1]} {why} at {shown}"
                    if why
                    else f"{fates}; {fate[1]} at {shown}"
                )
                index = following[index]
            note = fates.encode()
        elif kind == "drop" and reason == "port_unreachable":
            number = packet_id - low
            packet = _port_unreachable(src, dst, payload, packet_id)
            index = first[number]
            reported = False
            while index >= 0:
                reported = reported or entries[index][1] == "icmp"
                index = following[index]
            note = (
                f"#{packet_id} ICMP port unreachable, back to its sender"
                + (
                    "; reported to the connected sender"
                    if reported
                    else "; not reported: Linux reports it to connected sockets only"
                )
            ).encode()
        else:
            continue
        stamp = round((time - origin) * 1e9)
        stamp = base + stamp if stamp > 0 else base
        captured = packet[:_SNAPLEN] if len(packet) > _SNAPLEN else packet
        size = len(captured)
        padding = _PADDING[size % 4]
        note_size = len(note)
        note_padding = _PADDING[note_size % 4]
        length = 40 + size + len(padding) + note_size + len(note_padding)
        write(
            b"".join(
                (
                    pack_header(
                        6,
                        length,
                        0,
                        stamp >> 32,
                        stamp & 0xFFFFFFFF,
                        size,
                        len(packet),
                    ),
                    captured,
                    padding,
                    _COMMENT_OPTION.pack(1, note_size),
                    note,
                    note_padding,
                    _END_OF_OPTIONS_AND_LENGTH.pack(0, length),
                )
            )
        )
        written += 1
    return written
