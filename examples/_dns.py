"""Authoritative DNS answers from a zone, with dnspython for the wire format.

Pure: no I/O and no Trio. :func:`answer_untrusted` takes whatever a peer sent
and returns an :class:`Outcome`; it never raises. Rules:

- shorter than a DNS header, a response (QR set), or longer than
  :data:`MAX_QUERY_SIZE`: no answer (dropped), so that two servers cannot be
  set to answer each other forever, and no datagram costs more to read than
  a query can;
- opcode other than QUERY: NOTIMP; a header that is not one question, no
  answer or authority records and at most one additional record (EDNS's
  OPT): FORMERR. Both from the header alone, before anything is parsed;
- a question name of more than :data:`MAX_QUESTION_LABELS` labels: REFUSED
  (header only); an additional record other than EDNS's OPT (owner the
  root), or an OPT of more than :data:`MAX_EDNS_OPTIONS` options: FORMERR
  (header only). Both read from the wire before anything is parsed;
- unparsable: FORMERR (header id echoed, no question);
- qtype ANY (RFC 8482): NOTIMP;
- outside the zone: REFUSED; unknown name: NXDOMAIN (SOA in authority);
- answers over 512 bytes without EDNS, over the EDNS payload (at most 1232),
  or over ``amplification`` times the query's size: truncated, TC set.

The cost of one datagram is bounded: the header checks take constant time,
and dnspython parses at most :data:`MAX_QUERY_SIZE` bytes holding one name
in the question (pointers in it must point backwards, and a name is at most
255 bytes) and one record. Without the checks, a 65,000-byte datagram whose
10,789 questions point at one 126-label name took 1.4 s of CPU to parse.
dnspython's cost to write a name into a reply grows with the square of its
labels (name compression builds and hashes each suffix): a 126-label
question cost 3.6 ms, 46 times a typical query, so 270 such datagrams a
second, from sources that dodge the rate limit, kept a core busy; a TXT
record of 460 empty strings in the additional section, 33 times; an OPT of
110 options, 17 times. Hence the caps, which no real query reaches: the
worst datagram now costs about 0.6 ms, 5 times a typical query.
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

__all__ = [
    "MAX_EDNS_OPTIONS",
    "MAX_EDNS_PAYLOAD",
    "MAX_QUERY_SIZE",
    "MAX_QUESTION_LABELS",
    "Outcome",
    "answer_untrusted",
    "load_zone",
]

#: The largest UDP answer sent even to EDNS clients (DNS Flag Day 2020).
MAX_EDNS_PAYLOAD = 1232
#: The largest query read. A DNS message over UDP is at most 512 bytes
#: unless EDNS says otherwise (RFC 1035, section 4.2.1), and EDNS raises the
#: size of what a client can *receive*: a query still holds one name (at
#: most 255 bytes), its type and class, and one OPT record whose options (a
#: cookie, 44 bytes; a client subnet, at most 24) come to well under 512.
MAX_QUERY_SIZE = 512
#: The most labels a question's name may have: the deepest name real
#: resolvers ask for is an IPv6 reverse one (32 nibbles, ``ip6.arpa``).
MAX_QUESTION_LABELS = 34
#: The most EDNS options a query's OPT record may hold (a cookie, a client
#: subnet, padding, keepalive, ...: real clients send one to three).
MAX_EDNS_OPTIONS = 8
_OPT = 41
_RECORD = struct.Struct("!HHIH")  # type, class, TTL, data length
_OPTION = struct.Struct("!HH")  # code, length
_HEADER = struct.Struct("!HH")
_COUNTS = struct.Struct("!HHHH")  # questions, answers, authority, additional


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


def _header_only(wire: bytes, rcode: dns.rcode.Rcode) -> Outcome:
    """A reply that is a header only: the query's id and opcode, and
    ``rcode``."""
    ident, flags = _HEADER.unpack_from(wire)
    opcode = flags & 0x7800
    reply = _HEADER.pack(ident, 0x8000 | opcode | rcode) + bytes(8)
    return Outcome(reply, dns.rcode.to_text(rcode))


def _ruled_out_by_header(wire: bytes) -> Outcome | None:
    """The answer to a query whose header alone rules it out, or None."""
    if (_HEADER.unpack_from(wire)[1] >> 11) & 0xF != dns.opcode.QUERY:
        return _header_only(wire, dns.rcode.NOTIMP)
    questions, answers, authority, additional = _COUNTS.unpack_from(wire, 4)
    if questions != 1 or answers or authority or additional > 1:
        return _header_only(wire, dns.rcode.FORMERR)
    labels, at, size = 0, 12, len(wire)
    while at < size and 0 < wire[at] < 0x40:
        labels += 1
        at += 1 + wire[at]
    if labels > MAX_QUESTION_LABELS:
        return _header_only(wire, dns.rcode.REFUSED)
    if not additional or at >= size or wire[at]:
        return None  # no record, or a name dnspython judges (a pointer)
    at += 1 + 4  # the root, the question's type and class
    if size < at + 1 + _RECORD.size or wire[at]:
        return _header_only(wire, dns.rcode.FORMERR)  # not owned by the root
    rdtype, _, _, length = _RECORD.unpack_from(wire, at + 1)
    if rdtype != _OPT:
        return _header_only(wire, dns.rcode.FORMERR)
    at += 1 + _RECORD.size
    end, options = min(at + length, size), 0
    while at + _OPTION.size <= end:
        options += 1
        if options > MAX_EDNS_OPTIONS:
            return _header_only(wire, dns.rcode.FORMERR)
        at += _OPTION.size + _OPTION.unpack_from(wire, at)[1]
    return None


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
    zone: dns.zone.Zone, wire: bytes, *, amplification: float = 3.0
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
    size = len(wire)
    if size < 12 or size > MAX_QUERY_SIZE or _HEADER.unpack_from(wire)[1] & 0x8000:
        return Outcome(None, "dropped")
    ruled_out = _ruled_out_by_header(wire)
    if ruled_out is not None:
        return ruled_out
    try:
        query = dns.message.from_wire(wire)
    except Exception:  # a peer's bytes: dnspython's errors vary
        return _header_only(wire, dns.rcode.FORMERR)
    response = dns.message.make_response(query, our_payload=MAX_EDNS_PAYLOAD)
    response.flags |= dns.flags.AA
    question = query.question[0]  # the header said one
    if query.edns > 0:
        response.set_rcode(dns.rcode.BADVERS)
    elif question.rdtype == dns.rdatatype.ANY:
        response.set_rcode(dns.rcode.NOTIMP)
    elif question.rdclass != dns.rdataclass.IN or not question.name.is_subdomain(
        _origin(zone)
    ):
        response.set_rcode(dns.rcode.REFUSED)
    else:
        _resolve(zone, response)
    reply, truncated = _render(response, _limit(query, size, amplification))
    return Outcome(
        reply,
        dns.rcode.to_text(response.rcode()),
        question.name.to_text(),
        dns.rdatatype.to_text(question.rdtype),
        truncated,
    )
