"""Authoritative DNS answers from a zone, with dnspython for the wire format.

Pure: no I/O and no Trio. :func:`answer_untrusted` takes whatever a peer sent
and returns an :class:`Outcome`; it never raises. Rules:

- shorter than a DNS header, or a response (QR set): no answer (dropped), so
  that two servers cannot be set to answer each other forever;
- unparsable: FORMERR (header id echoed, no question);
- opcode other than QUERY, or qtype ANY (RFC 8482): NOTIMP;
- outside the zone: REFUSED; unknown name: NXDOMAIN (SOA in authority);
- answers over 512 bytes without EDNS, over the EDNS payload (at most 1232),
  or over ``amplification`` times the query's size: truncated, TC set.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.zone

__all__ = ["MAX_EDNS_PAYLOAD", "Outcome", "answer_untrusted", "load_zone"]

#: The largest UDP answer sent even to EDNS clients (DNS Flag Day 2020).
MAX_EDNS_PAYLOAD = 1232
_HEADER = struct.Struct("!HH")


class Outcome(NamedTuple):
    """What became of one datagram: the reply (None: dropped) and, for the
    log, the question and the response code."""

    reply: bytes | None
    rcode: str
    qname: str | None = None
    qtype: str | None = None
    truncated: bool = False


def load_zone(path: str) -> dns.zone.Zone:
    """A zone from a master file (its ``$ORIGIN`` names it)."""
    return dns.zone.from_file(path, relativize=False)


def _origin(zone: dns.zone.Zone) -> dns.name.Name:
    assert zone.origin is not None  # from_file sets it, or fails
    return zone.origin


def _formerr(wire: bytes) -> bytes:
    ident, flags = _HEADER.unpack_from(wire)
    opcode = flags & 0x7800
    return _HEADER.pack(ident, 0x8000 | opcode | dns.rcode.FORMERR) + bytes(8)


def _resolve(zone: dns.zone.Zone, response: dns.message.Message) -> None:
    """Fill in answer and authority for the response's one question."""
    question = response.question[0]
    name, rdtype, origin = question.name, question.rdtype, _origin(zone)
    for _ in range(8):  # follow CNAMEs inside the zone, not forever
        node = zone.get_node(name)
        if node is None:
            if not response.answer:
                response.set_rcode(dns.rcode.NXDOMAIN)
            break
        rdataset = node.get_rdataset(dns.rdataclass.IN, rdtype)
        if rdataset is not None:
            response.answer.append(_rrset(name, rdataset))
            return
        cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
        if cname is None:
            break  # the name exists, the type does not: NODATA
        response.answer.append(_rrset(name, cname))
        name = cname[0].target
        if not name.is_subdomain(origin):
            return
    soa = zone.get_rdataset(origin, dns.rdatatype.SOA)
    if soa is not None:
        response.authority.append(_rrset(origin, soa))


def _rrset(name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> dns.rrset.RRset:
    return dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset))


def _limit(query: dns.message.Message, size: int, amplification: float) -> int:
    payload = 512 if query.edns < 0 else max(512, min(query.payload, MAX_EDNS_PAYLOAD))
    return min(payload, int(size * amplification))


def _render(response: dns.message.Message, limit: int) -> tuple[bytes, bool]:
    wire = response.to_wire(max_size=limit, prefer_truncation=True)
    if len(wire) > limit:  # to_wire never cuts below 512 bytes: do it here
        response.answer.clear()
        response.authority.clear()
        response.additional.clear()
        response.flags |= dns.flags.TC
        wire = response.to_wire()
    return wire, bool(dns.flags.TC & _HEADER.unpack_from(wire)[1])


def answer_untrusted(
    zone: dns.zone.Zone, wire: bytes, *, amplification: float = 10.0
) -> Outcome:
    """The answer to one query datagram; never raises.

    Example:
        >>> import dns.message
        >>> zone = load_zone("examples/zones/example.test.zone")
        >>> query = dns.message.make_query("www.example.test", "A")
        >>> reply = answer_untrusted(zone, query.to_wire()).reply
        >>> dns.message.from_wire(reply).answer[0][0].address
        '192.0.2.10'
    """
    if len(wire) < 12 or _HEADER.unpack_from(wire)[1] & 0x8000:
        return Outcome(None, "dropped")
    try:
        query = dns.message.from_wire(wire)
    except Exception:  # a peer's bytes: dnspython's errors vary
        return Outcome(_formerr(wire), "FORMERR")
    response = dns.message.make_response(query, our_payload=MAX_EDNS_PAYLOAD)
    response.flags |= dns.flags.AA
    if query.opcode() != dns.opcode.QUERY:
        response.set_rcode(dns.rcode.NOTIMP)
    elif len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
    elif query.edns > 0:
        response.set_rcode(dns.rcode.BADVERS)
    else:
        question = query.question[0]
        if question.rdtype == dns.rdatatype.ANY:
            response.set_rcode(dns.rcode.NOTIMP)
        elif question.rdclass != dns.rdataclass.IN or not question.name.is_subdomain(
            _origin(zone)
        ):
            response.set_rcode(dns.rcode.REFUSED)
        else:
            _resolve(zone, response)
    reply, truncated = _render(response, _limit(query, len(wire), amplification))
    first = query.question[0] if query.question else None
    return Outcome(
        reply,
        dns.rcode.to_text(response.rcode()),
        None if first is None else first.name.to_text(),
        None if first is None else dns.rdatatype.to_text(first.rdtype),
        truncated,
    )
