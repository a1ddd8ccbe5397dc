"""Write datagrams as a pcap capture (raw IP link type), with synthesised headers.

Pure: it turns trace events into bytes. Readers: ``tcpdump -r``, Wireshark.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._network import TraceEvent

__all__ = ["ip_udp_packet", "write_pcap"]

_PCAP_MAGIC_NANOSECONDS = 0xA1B23C4D
_LINKTYPE_RAW = 101  # raw IPv4/IPv6, no link-layer header
_SNAPLEN = 262_144
_UDP = 17


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


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
    udp_length = 8 + len(payload)
    header = struct.pack("!HHHH", src[1], dst[1], udp_length, 0)
    pseudo = src_ip.packed + dst_ip.packed
    if src_ip.version == 4:
        pseudo += struct.pack("!BBH", 0, _UDP, udp_length)
    else:
        pseudo += struct.pack("!IxxxB", udp_length, _UDP)
    checksum = _checksum(pseudo + header + payload) or 0xFFFF
    udp = header[:6] + struct.pack("!H", checksum) + payload
    if src_ip.version == 4:
        ip = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + udp_length,
            ident & 0xFFFF,
            0,
            64,
            _UDP,
            0,
            src_ip.packed,
            dst_ip.packed,
        )
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    else:
        ip = struct.pack(
            "!IHBB16s16s", 6 << 28, udp_length, _UDP, 64, src_ip.packed, dst_ip.packed
        )
    return ip + udp


def write_pcap(file: BinaryIO, events: Iterable[TraceEvent]) -> int:
    """Write one pcap record per event (its virtual time, addresses, payload).

    Returns how many records were written. :meth:`VirtualNetwork.write_pcap`
    is the usual way in.

    Example:
        >>> import io
        >>> from trioudp.testing import TraceEvent
        >>> event = TraceEvent(time=0.0, kind="send", packet=1, src=("127.0.0.1", 1),
        ...                    dst=("127.0.0.1", 2), size=2, payload=b"hi")
        >>> write_pcap(io.BytesIO(), [event])
        1
    """
    file.write(
        struct.pack(
            "!IHHiIII", _PCAP_MAGIC_NANOSECONDS, 2, 4, 0, 0, _SNAPLEN, _LINKTYPE_RAW
        )
    )
    count = 0
    for event in events:
        packet = ip_udp_packet(event.src, event.dst, event.payload, event.packet)
        nanoseconds = max(0, round(event.time * 1e9))
        seconds, fraction = divmod(nanoseconds, 1_000_000_000)
        captured = packet[:_SNAPLEN]
        file.write(struct.pack("!IIII", seconds, fraction, len(captured), len(packet)))
        file.write(captured)
        count += 1
    return count
