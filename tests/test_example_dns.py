"""examples/dns_server.py: its answers (NXDOMAIN, REFUSED, TC, FORMERR, ...)
with hostile input, and the server asked by ``dig`` (bind9-dnsutils) and by
dnspython's Trio resolver."""

import doctest
import json
import signal
import struct

import dns.asyncquery
import dns.asyncresolver
import dns.flags
import dns.message
import dns.rcode
import dns.resolver
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from .conftest import ROOT, needs, tool_missing
from .realprocs import WAIT, example, example_module, run, running

dnsex = example_module("_dns")
ZONE = dnsex.load_zone(str(ROOT / "examples" / "zones" / "example.test.zone"))


def ask(qname, rdtype="A", *, amplification=10.0, **query_options):
    query = dns.message.make_query(qname, rdtype, **query_options)
    outcome = dnsex.answer_untrusted(ZONE, query.to_wire(), amplification=amplification)
    return outcome, dns.message.from_wire(outcome.reply)


def test_doctests(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert doctest.testmod(dnsex).failed == 0


def test_answers_from_the_zone_authoritatively():
    outcome, reply = ask("www.example.test", "A")
    assert (outcome.rcode, outcome.qname, outcome.qtype) == (
        "NOERROR",
        "www.example.test.",
        "A",
    )
    assert reply.flags & dns.flags.AA
    assert [rr.address for rr in reply.answer[0]] == ["192.0.2.10"]
    _, reply = ask("ftp.example.test", "A")  # a CNAME, followed in the zone
    assert [rrset.rdtype for rrset in reply.answer] == [5, 1]


def test_unknown_names_types_and_other_zones():
    outcome, reply = ask("nope.example.test")
    assert outcome.rcode == "NXDOMAIN"
    assert reply.authority[0].rdtype == dns.rdatatype.SOA
    outcome, reply = ask("www.example.test", "MX")  # NODATA
    assert (outcome.rcode, reply.answer) == ("NOERROR", [])
    assert reply.authority[0].rdtype == dns.rdatatype.SOA
    assert ask("www.example.com")[0].rcode == "REFUSED"
    assert ask("www.example.test", "ANY")[0].rcode == "NOTIMP"
    assert ask("www.example.test", rdclass="CH")[0].rcode == "REFUSED"
    assert ask("www.example.test", use_edns=1)[0].rcode == "BADVERS"


def test_answers_over_512_bytes_without_edns_are_truncated():
    outcome, reply = ask("big.example.test", "TXT", amplification=100, use_edns=False)
    assert outcome.truncated
    assert reply.flags & dns.flags.TC
    assert len(outcome.reply) <= 512
    outcome, reply = ask(
        "big.example.test", "TXT", amplification=100, use_edns=0, payload=4096
    )
    assert not outcome.truncated
    assert len(reply.answer[0]) == 4
    assert len(outcome.reply) > 512
    # Ten times a small query is less than the answer: truncated too.
    outcome, reply = ask("big.example.test", "TXT", use_edns=0, payload=4096)
    assert outcome.truncated
    assert reply.answer == []


def test_malformed_queries_get_formerr_or_are_dropped():
    assert dnsex.answer_untrusted(ZONE, b"\x12\x34short").reply is None
    response = dns.message.make_response(dns.message.make_query("x.example.test", "A"))
    assert dnsex.answer_untrusted(ZONE, response.to_wire()).reply is None  # QR set
    outcome = dnsex.answer_untrusted(ZONE, b"\xab\xcd\x01\x00" + b"\xff" * 20)
    assert outcome.rcode == "FORMERR"
    ident, flags = struct.unpack("!HH", outcome.reply[:4])
    assert (ident, flags & 0x8000, flags & 0xF) == (0xABCD, 0x8000, dns.rcode.FORMERR)
    two = dns.message.make_query("www.example.test", "A")
    two.question.append(dns.message.make_query("ns1.example.test", "A").question[0])
    assert dnsex.answer_untrusted(ZONE, two.to_wire()).rcode == "FORMERR"
    notify = dns.message.make_query("www.example.test", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    assert dnsex.answer_untrusted(ZONE, notify.to_wire()).rcode == "NOTIMP"


@given(st.binary(max_size=600))
def test_any_bytes_give_a_parsable_reply_or_none(data):
    outcome = dnsex.answer_untrusted(ZONE, data)
    if outcome.reply is not None:
        dns.message.from_wire(outcome.reply)
        assert len(outcome.reply) <= max(512, 10 * len(data))


@given(st.binary(min_size=2, max_size=100))
def test_any_question_bytes_after_a_valid_header(tail):
    header = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0)
    dnsex.answer_untrusted(ZONE, header + tail)


requires_dig = needs(tool_missing("dig", "bind9-dnsutils"))


def dig(port, *args):
    return run(["dig", "@127.0.0.1", "-p", str(port), "+tries=1", "+time=5", *args])


@requires_dig
async def test_dig_and_dnspython_trio_resolver_get_answers():
    async with running(example("dns_server.py", "--port", "0")) as server:
        port = await server.port_from_banner()

        done = await dig(port, "www.example.test", "A", "+short")
        assert done.stdout.decode() == "192.0.2.10\n"
        done = await dig(port, "www.example.test", "AAAA", "+short")
        assert done.stdout.decode() == "2001:db8::10\n"
        done = await dig(port, "nope.example.test")
        assert "status: NXDOMAIN" in done.stdout.decode()
        done = await dig(port, "www.example.com")
        assert "status: REFUSED" in done.stdout.decode()
        done = await dig(port, "+noedns", "+ignore", "big.example.test", "TXT")
        assert "flags: qr aa tc" in done.stdout.decode()

        # Malformed queries: FORMERR back, and the server carries on.
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
            await sock.connect(("127.0.0.1", port))
            await sock.send(b"\x01\x02short")  # dropped: no header
            await sock.send(b"\xab\xcd\x01\x00" + b"\xff" * 20)
            with trio.fail_after(WAIT):
                formerr = await sock.recv(512)
        assert formerr[:2] == b"\xab\xcd"
        assert formerr[3] & 0xF == dns.rcode.FORMERR

        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = port
        resolver.lifetime = WAIT
        with trio.fail_after(WAIT):
            answer = await resolver.resolve("www.example.test", "A")
            assert [rr.address for rr in answer] == ["192.0.2.10"]
            answer = await resolver.resolve("ftp.example.test", "A")
            assert answer.canonical_name.to_text() == "www.example.test."
            with pytest.raises(dns.resolver.NXDOMAIN):
                await resolver.resolve("nope.example.test", "A")
            with pytest.raises(dns.resolver.NoNameservers, match="REFUSED"):
                await resolver.resolve("example.org", "A")
            query = dns.message.make_query("big.example.test", "TXT", use_edns=False)
            truncated = await dns.asyncquery.udp(query, "127.0.0.1", port=port)
            assert truncated.flags & dns.flags.TC
        code, out, err = await server.stop(signal.SIGINT)  # Ctrl-C
    assert code == 0, err
    log = [json.loads(line) for line in out.splitlines()]
    assert [(entry["qname"], entry["rcode"], entry["truncated"]) for entry in log] == [
        ("www.example.test.", "NOERROR", False),
        ("www.example.test.", "NOERROR", False),
        ("nope.example.test.", "NXDOMAIN", False),
        ("www.example.com.", "REFUSED", False),
        ("big.example.test.", "NOERROR", True),
        (None, "FORMERR", False),
        ("www.example.test.", "NOERROR", False),
        ("ftp.example.test.", "NOERROR", False),
        ("nope.example.test.", "NXDOMAIN", False),
        ("example.org.", "REFUSED", False),
        ("big.example.test.", "NOERROR", True),
    ]
    assert {entry["peer"] for entry in log} == {"127.0.0.1"}
    assert err.splitlines()[-1] == (
        "stopped: {'NOERROR': 6, 'NXDOMAIN': 2, 'REFUSED': 2, 'dropped': 1, 'FORMERR': 1}"
    )
