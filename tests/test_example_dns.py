"""examples/dns_server.py: its answers (NXDOMAIN, REFUSED, TC, FORMERR, ...)
with hostile input, and the server asked by ``dig`` (bind9-dnsutils) and by
dnspython's Trio resolver."""

import ast
import doctest
import json
import os
import signal
import struct
import sys
import time

import dns.asyncquery
import dns.asyncresolver
import dns.flags
import dns.message
import dns.rcode
import dns.resolver
import dns.reversename
import pytest
import trio
from hypothesis import given, target
from hypothesis import strategies as st

from .conftest import ROOT, needs, tool_missing
from .realprocs import WAIT, example, example_module, run, running

dnsex = example_module("_dns")
ZONE = dnsex.load_zone(str(ROOT / "examples" / "zones" / "example.test.zone"))


def ask(qname, rdtype="A", *, amplification=3.0, **query_options):
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
    # Three times a small query is less than the answer: truncated too.
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
        assert len(outcome.reply) <= 3 * len(data)


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


# Hostile queries, built by hand: the header's counts, then the sections.
def header(questions=1, answers=0, authority=0, additional=0, *, flags=0x0100):
    return struct.pack("!6H", 0xBEEF, flags, questions, answers, authority, additional)


LONG_NAME = b"\x01a" * 126 + b"\x00"  # 126 labels, 253 bytes: near the longest
A_IN = struct.pack("!HH", 1, 1)
LONG_QUESTION = LONG_NAME + A_IN  # at offset 12; "\xc0\x0c" points at its name


def record(rdtype, rdata, *, owner=b"\xc0\x0c", rdclass=1):
    return owner + struct.pack("!HHIH", rdtype, rdclass, 0, len(rdata)) + rdata


def filling(piece, used, size=512):
    """``piece`` repeated to fill a record's data up to ``size`` bytes."""
    return piece * ((size - used - 12) // len(piece))


def pointer_flood(size=65_000):
    """10,789 questions in one datagram: a 126-label name, then pointers to it."""
    count = (size - 12 - len(LONG_QUESTION)) // 6
    return header(1 + count) + LONG_QUESTION + (b"\xc0\x0c" + A_IN) * count


def opt(options):
    return record(41, options, owner=b"\x00", rdclass=1232)


def worst_cases(question, labels):
    """The most expensive datagrams found for the checks of
    answer_untrusted, with ``question`` (of ``labels`` labels) as the
    question: the biggest additional record that fits behind it."""
    used = 12 + len(question)
    return {
        f"{labels} labels outside the zone": header() + question,
        f"EDNS with 4-byte options, {labels} labels": header(additional=1)
        + question
        + opt(filling(struct.pack("!HH", 65001, 0), used + 1)),
        f"EDNS with client-subnet options, {labels} labels": header(additional=1)
        + question
        + opt(filling(struct.pack("!4H", 8, 8, 1, 32 << 8) + bytes(4), used + 1)),
        f"TXT of empty strings, {labels} labels": header(additional=1)
        + question
        + record(16, filling(b"\x00", used + 2)),
        f"SVCB with many keys, {labels} labels": header(additional=1)
        + question
        + record(
            64,
            b"\x00\x01\x00"
            + b"".join(struct.pack("!HH", key, 0) for key in range(100, 156)),
        ),
        f"APL items, {labels} labels": header(additional=1)
        + question
        + record(
            42, filling(struct.pack("!HBB", 1, 32, 4) + b"\x0a\0\0\x01", used + 2)
        ),
        f"answers in a query, {labels} labels": header(answers=1)
        + question
        + record(1, bytes(4)),
        f"two additional records, {labels} labels": header(additional=2)
        + question
        + opt(b"")
        + opt(b""),
    }


# The deepest question answered: as deep as an IPv6 reverse name.
DEEP_QUESTION = b"\x01a" * 34 + b"\x00" + A_IN
# The most expensive datagrams found for the checks of answer_untrusted: its
# longest questions, with the biggest additional record that fits.
WORST_CASES = {
    "10,789 questions, pointers to one 126-label name": pointer_flood(),
    "41 such questions in 512 bytes": pointer_flood(512),
    "120 labels inside the zone": header()
    + b"\x01a" * 120
    + b"\x07example\x04test\x00"
    + A_IN,
    "32 labels inside the zone": header()
    + b"\x01a" * 32
    + b"\x07example\x04test\x00"
    + A_IN,
    **worst_cases(LONG_QUESTION, 126),
    **worst_cases(DEEP_QUESTION, 34),
}
# The work one datagram may cost, in Python function calls (deterministic,
# unlike a clock): a typical query takes about 350, the worst cases above
# about 2,500 (16,000 before the caps on labels and additional records);
# before the header and size checks, the pointer flood took over 2,000,000
# (1.4 s of CPU).
CALL_BUDGET = 50_000


def calls_to_answer(wire, events=("call",)):
    """Function calls answer_untrusted makes for ``wire``: Python's, and with
    ``"c_call"`` in ``events`` C's too (they count the work done per label
    inside dnspython's loops)."""
    calls = 0

    def count(frame, event, arg):
        nonlocal calls
        calls += event in events

    sys.setprofile(count)
    try:
        dnsex.answer_untrusted(ZONE, wire)
    finally:
        sys.setprofile(None)
    return calls


@pytest.mark.parametrize("wire", WORST_CASES.values(), ids=WORST_CASES.keys())
def test_the_work_for_one_datagram_is_bounded(wire):
    assert calls_to_answer(wire) <= CALL_BUDGET
    # And in CPU time, with a wide margin (about 4 ms at worst here).
    started = time.process_time()
    dnsex.answer_untrusted(ZONE, wire)
    assert time.process_time() - started < 0.05


def work_to_answer(wire):
    return calls_to_answer(wire, events=("call", "c_call"))


@pytest.mark.parametrize("wire", WORST_CASES.values(), ids=WORST_CASES.keys())
def test_no_datagram_costs_much_more_than_a_typical_query(wire):
    """Writing a 126-label question into the reply cost 45,597 calls (3.6 ms
    of CPU), 60 times a typical query's 751 (78 us): dnspython's name
    compression is quadratic in labels. Names over 34 labels (an IPv6
    reverse name's) are refused from the wire now."""
    typical = work_to_answer(dns.message.make_query("www.example.test", "A").to_wire())
    assert work_to_answer(wire) <= 10 * typical


def test_question_names_deeper_than_a_real_one_are_refused_unparsed(monkeypatch):
    reverse = dns.message.make_query(
        dns.reversename.from_address("2001:db8::1"), "PTR"
    ).to_wire()
    outcome = dnsex.answer_untrusted(ZONE, reverse)
    assert (outcome.rcode, outcome.qname) == (
        "REFUSED",
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
    )

    def parse(*args, **kwargs):
        raise AssertionError("parsed")

    monkeypatch.setattr(dns.message, "from_wire", parse)
    deeper = header() + b"\x01a" * 33 + b"\x07example\x04test\x00" + A_IN
    assert dnsex.answer_untrusted(ZONE, deeper) == dnsex.Outcome(
        header(0, flags=0x8000 | dns.rcode.REFUSED), "REFUSED"
    )


def test_the_header_is_checked_before_anything_is_parsed(monkeypatch):
    def parse(*args, **kwargs):
        raise AssertionError("parsed")

    monkeypatch.setattr(dns.message, "from_wire", parse)
    counts = [(2, 0, 0, 0), (0, 0, 0, 0), (1, 1, 0, 0), (1, 0, 1, 0), (1, 0, 0, 2)]
    for questions, answers, authority, additional in counts:
        wire = header(questions, answers, authority, additional) + LONG_QUESTION
        outcome = dnsex.answer_untrusted(ZONE, wire)
        assert (outcome.rcode, outcome.reply) == (
            "FORMERR",
            header(0, 0, 0, 0, flags=0x8000 | dns.rcode.FORMERR),
        )
    notify = header(flags=dns.opcode.NOTIFY << 11) + LONG_QUESTION
    assert dnsex.answer_untrusted(ZONE, notify).reply == header(
        0, 0, 0, 0, flags=0x8000 | dns.opcode.NOTIFY << 11 | dns.rcode.NOTIMP
    )


def padded_query(size):
    """A valid query for www.example.test A of exactly ``size`` bytes (EDNS
    padding, RFC 7830)."""
    query = dns.message.make_query("www.example.test", "A", use_edns=0)
    padding = size - len(query.to_wire()) - 4
    query.use_edns(0, options=[dns.edns.GenericOption(12, bytes(padding))])
    wire = query.to_wire()
    assert len(wire) == size
    return wire


def test_datagrams_longer_than_a_query_can_be_are_dropped():
    assert dnsex.MAX_QUERY_SIZE == 512
    assert dnsex.answer_untrusted(ZONE, padded_query(512)).rcode == "NOERROR"
    assert dnsex.answer_untrusted(ZONE, padded_query(513)) == dnsex.Outcome(
        None, "dropped"
    )


@st.composite
def crafted_queries(draw):
    """Up to 12,000 questions pointing at a name of up to 126 labels, then
    records, under true or arbitrary counts, up to the largest UDP datagram."""
    lengths = draw(st.lists(st.integers(1, 63), max_size=126))
    name = b"".join(bytes([length]) + b"a" * length for length in lengths)
    questions = draw(st.integers(0, 12_000))
    records = st.sampled_from(
        [opt(b""), opt(b"\x00\x0a\x00\x08" + bytes(8)), record(16, bytes(40))]
    )
    additional = draw(st.lists(records, max_size=50))
    counts = draw(
        st.one_of(
            st.just((questions, 0, 0, len(additional))),
            st.tuples(*[st.integers(0, 65_535)] * 4),
        )
    )
    flags = draw(st.sampled_from([0x0100, 0x0000, 0x2800, 0x0120]))
    wire = (
        header(*counts, flags=flags)
        + name[:254]
        + b"\x00"
        + A_IN
        + (b"\xc0\x0c" + A_IN) * max(0, questions - 1)
        + b"".join(additional)
    )
    return wire[:65_507]


@given(crafted_queries())
def test_crafted_queries_cost_a_bounded_amount_of_work(wire):
    calls = calls_to_answer(wire)
    target(calls)  # steers the search towards the most expensive ones
    assert calls <= CALL_BUDGET


def cpu_seconds(pid):
    """User and system CPU time a process has used (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@requires_dig
async def test_hostile_queries_do_not_hold_up_the_server():
    probe = dns.message.make_query("www.example.test", "A", id=0xBEEF).to_wire()
    async with running(example("dns_server.py", "--port", "0")) as server:
        port = await server.port_from_banner()
        before = cpu_seconds(server.process.pid)
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
            await sock.connect(("127.0.0.1", port))
            for _ in range(5):
                for wire in WORST_CASES.values():
                    await sock.send(wire)
                    if len(wire) > 512:  # dropped unanswered: ask right behind it
                        await sock.send(probe)
                    with trio.fail_after(WAIT):
                        reply = await sock.recv(512)
                    assert reply[:2] == b"\xbe\xef"
        done = await dig(port, "www.example.test", "A", "+short")
        assert done.stdout.decode() == "192.0.2.10\n"
        # Before the checks, one of these datagrams cost 1.4 s of CPU.
        assert cpu_seconds(server.process.pid) - before < 1.0
        code, out, err = await server.stop()
    assert code == 0, err
    assert len([json.loads(line) for line in out.splitlines()]) == 5 * 20 + 1
    stopped = err.splitlines()[-1]
    assert stopped.startswith("stopped: ")
    assert ast.literal_eval(stopped.removeprefix("stopped: ")) == {
        "REFUSED": 40,
        "NXDOMAIN": 5,
        "FORMERR": 50,
        "NOERROR": 6,
        "oversize": 5,
    }


async def test_an_unread_stdout_neither_stops_the_server_nor_delays_sigterm():
    # Before, the server stopped answering after 608 queries (64 KiB of log
    # in the pipe), and SIGTERM went unseen.
    query = dns.message.make_query("www.example.test", "A").to_wire()
    async with running(example("dns_server.py", "--port", "0")) as server:
        port = await server.port_from_banner()
        answered = 0
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
            await sock.connect(("127.0.0.1", port))
            for _ in range(105):
                for _ in range(100):
                    await sock.send(query)
                with trio.fail_after(WAIT):
                    for _ in range(100):
                        answered += (await sock.recv(512))[:2] == query[:2]
        assert answered == 10_500
        code, seconds, err = await server.stop_leaving_stdout_unread()
        written = (await server.stdout.rest()).count("\n")
    assert code == 0, err
    assert seconds < 5  # at most 1 s of it waiting for the reader
    dropped, stopped = err.splitlines()[-2:]
    assert dropped.endswith(" log lines dropped: stdout not read")
    assert int(dropped.split()[0]) + written == 10_500
    assert stopped == "stopped: {'NOERROR': 10500}"
