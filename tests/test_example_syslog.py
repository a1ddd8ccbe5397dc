"""examples/syslog_server.py: its parser with hostile input, and the server
against util-linux ``logger --udp`` in both formats."""

import contextlib
import doctest
import json
import socket

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from .conftest import needs, tool_missing
from .realprocs import example, example_module, run, running

syslog = example_module("_syslog")
parse = syslog.parse_untrusted
Malformed = syslog.MalformedMessage


def test_doctests():
    assert doctest.testmod(syslog).failed == 0


def test_rfc3164():
    message = parse(b"<156>Nov  6 04:32:34 vm myapp[20893]: hello world\n")
    assert message == {
        "format": "rfc3164",
        "facility": 19,
        "severity": 4,
        "timestamp": "Nov  6 04:32:34",
        "hostname": "vm",
        "app": "myapp",
        "pid": "20893",
        "msg": "hello world",
    }
    bare = parse(b"<13>just text")
    assert (bare["app"], bare["timestamp"], bare["msg"]) == (None, None, "just text")


def test_rfc5424_with_structured_data_escapes_and_bom():
    message = parse(
        b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47"
        b' [exampleSDID@32473 iut="3" eventSource="Appl\\]ication"]'
        b'[other@1 q="a \\"b\\" \\\\c"] \xef\xbb\xbfAn application event'
    )
    assert message == {
        "format": "rfc5424",
        "facility": 20,
        "severity": 5,
        "timestamp": "2003-10-11T22:14:15.003Z",
        "hostname": "mymachine.example.com",
        "app": "evntslog",
        "pid": None,
        "msgid": "ID47",
        "structured_data": {
            "exampleSDID@32473": {"iut": "3", "eventSource": "Appl]ication"},
            "other@1": {"q": 'a "b" \\c'},
        },
        "msg": "An application event",
    }
    nil = parse(b"<34>1 - - - - - -")
    assert nil["structured_data"] is None
    assert nil["msg"] == ""


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"no priority",
        b"<192>too high",
        b"<01>leading zero",
        b"<>empty",
        b"<1234>four digits",
        b"<13>1 too few fields",
        b"<13>1 - - - - - [unclosed",
        b"<13>1 - - - - - [id bad=unquoted]",
        b"<13>1 - - - - - [id]x",
    ],
)
def test_malformed_messages_raise_one_exception(data):
    with pytest.raises(Malformed):
        parse(data)


@given(st.binary(max_size=300))
def test_any_bytes_give_a_message_or_malformed(data):
    try:
        message = parse(data)
    except Malformed:
        return
    json.dumps(message)  # always printable as JSON


@given(st.text(max_size=200))
def test_any_rfc5424_tail_gives_a_message_or_malformed(text):
    with contextlib.suppress(Malformed):
        parse(b"<13>1 " + text.encode())


def test_control_characters_and_bytes_not_utf8_are_replaced():
    message = parse(b"<13>a\x1b[2Jb\x00c\x7fd\xc2\x9be\xfff\tg\nh\r\n")
    assert message["msg"] == "a\ufffd[2Jb\ufffdc\ufffdd\ufffde\ufffdf\tg\nh"
    sd = parse(b'<13>1 - h\x01 - - - [id p="\x07"] m')
    assert (sd["hostname"], sd["structured_data"]) == (
        "h\ufffd",
        {"id": {"p": "\ufffd"}},
    )


def line_size(data, peer="2001:db8::1"):
    return len(syslog.json_line(peer, parse(data)).encode())


def bound(data, peer="2001:db8::1"):
    return 3 * len(data) + len(peer) + syslog.KEYS_SIZE


# Per byte of datagram, the most output each kind of input gave before:
# JSON spelled a control character or a byte not UTF-8 in 6 (\u0001, \ufffd).
GROWTH_CASES = [
    b"<13>" + bytes(range(32)) * 100,
    b"<13>" + b"\xff" * 3000,
    b"<13>" + b"\xc2\x9b" * 1500,  # C1 control (CSI)
    b"<13>" + b'"\\' * 1500,
    b"<13>" + b"\t\n" * 1500,
    b"<0>",
    b"<191>1 - - - - - -",
    b"<13>1 - - - - - " + b"[a]" * 1000,
    b"<13>1 - - - - - [a" + b' b=""' * 600 + b"]",
    b"<13>1 - - - - - [a" + b' b="\\""' * 400 + b"]",
    b"<13>Nov  6 04:32:34 \x01 \x02[\x03]: \x04",
]


@pytest.mark.parametrize("data", GROWTH_CASES)
def test_a_record_line_holds_at_most_three_bytes_per_datagram_byte(data):
    assert line_size(data) <= bound(data)


@given(st.binary(max_size=300).map(lambda tail: b"<13>" + tail))
def test_any_datagram_gives_a_line_within_the_bound(data):
    with contextlib.suppress(Malformed):
        assert line_size(data) <= bound(data)


@given(st.text(max_size=200))
def test_any_rfc5424_text_gives_a_line_within_the_bound(text):
    data = b"<13>1 " + text.encode()
    with contextlib.suppress(Malformed):
        assert line_size(data) <= bound(data)


requires_logger = needs(tool_missing("logger", "bsdutils"))


@requires_logger
async def test_logger_messages_in_both_formats_become_json_lines():
    async with running(example("syslog_server.py", "--port", "0")) as server:
        port = await server.port_from_banner()
        logger = ["logger", "--udp", "--server", "127.0.0.1", "--port", str(port)]
        tagged = ["-t", "myapp", "-i", "-p", "local3.warning"]

        done = await run([*logger, "--rfc3164", *tagged, "hello from 3164"])
        assert done.returncode == 0, done.stderr
        old = json.loads(await server.stdout.line())
        assert (old["peer"], old["format"]) == ("127.0.0.1", "rfc3164")
        assert (old["facility"], old["severity"]) == (19, 4)  # local3.warning
        # RFC 3164 hostnames are short: logger cuts the domain off.
        short_name = socket.gethostname().split(".")[0]
        assert (old["hostname"], old["app"]) == (short_name, "myapp")
        assert old["pid"].isdigit()
        assert old["timestamp"]
        assert old["msg"] == "hello from 3164"

        structured = ["--sd-id", "zoo@123", "--sd-param", 'tiger="hungry"']
        structured += ["--sd-param", 'quote="say \\"hi\\" \\]"', "--msgid", "ID47"]
        done = await run([*logger, "--rfc5424", *tagged, *structured, "hi 5424"])
        assert done.returncode == 0, done.stderr
        new = json.loads(await server.stdout.line())
        assert (new["peer"], new["format"]) == ("127.0.0.1", "rfc5424")
        assert (new["facility"], new["severity"]) == (19, 4)
        assert (new["app"], new["msgid"], new["msg"]) == ("myapp", "ID47", "hi 5424")
        assert new["pid"].isdigit()
        assert new["timestamp"].startswith("20")
        assert new["structured_data"]["zoo@123"] == {
            "tiger": "hungry",
            "quote": 'say "hi" ]',
        }
        assert "timeQuality" in new["structured_data"]

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hostile:
            for junk in (b"", b"\xff\xfe garbage", b"<999>x", b"<13>1 - -"):
                hostile.sendto(junk, ("127.0.0.1", port))
            # Control bytes: each one 3 bytes of output (6 before).
            controls = b"<13>1 - spoofed - - - - " + bytes(range(1, 32)) * 400
            hostile.sendto(controls, ("127.0.0.1", port))
        record = await server.stdout.line()
        assert len(record.encode()) <= 3 * len(controls) + 9 + syslog.KEYS_SIZE
        record = json.loads(record)
        assert (record["peer"], record["hostname"]) == ("127.0.0.1", "spoofed")
        assert record["msg"] == ("\ufffd" * 8 + "\t\n" + "\ufffd" * 21) * 400
        done = await run([*logger, "--rfc5424=notq,notime", "-t", "after", "still up"])
        assert done.returncode == 0, done.stderr
        last = json.loads(await server.stdout.line())
        assert (last["app"], last["timestamp"], last["msg"]) == (
            "after",
            None,
            "still up",
        )
        code, out, err = await server.stop()
    assert code == 0, err
    assert out == ""
    assert err.count("malformed datagram from 127.0.0.1") == 4
    assert err.endswith("stopped: 4 messages, 4 malformed\n")


async def test_an_unread_stdout_neither_stops_the_collector_nor_delays_sigterm():
    message = b"<13>Nov  6 04:32:34 vm myapp[42]: " + b"x" * 100
    async with running(example("syslog_server.py", "--port", "0")) as server:
        port = await server.port_from_banner()
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
            await sock.connect(("127.0.0.1", port))
            for _ in range(120):
                for _ in range(100):
                    await sock.send(message)
                await sock.send(b"no priority")  # reported on stderr
                assert "malformed" in await server.stderr.line()
        code, seconds, err = await server.stop_leaving_stdout_unread()
        written = (await server.stdout.rest()).count("\n")
    assert code == 0, err
    assert seconds < 5
    dropped, stopped = err.splitlines()[-2:]
    assert dropped.endswith(" records dropped: stdout not read")
    assert int(dropped.split()[0]) + written == 12_000
    assert stopped == "stopped: 12000 messages, 120 malformed"
