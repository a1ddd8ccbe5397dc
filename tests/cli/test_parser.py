"""The argument parser: help, usage errors naming the bad value, ``-v``,
``--version`` and the defaults it gives."""

import importlib.metadata

import pytest

import trioudp
from trioudp._cli import build_parser, main
from trioudp._cli._parser import group_settings


@pytest.mark.parametrize(
    "command", [[], ["serve"], ["send"], ["demo"], ["echo"], ["listen"], ["bench"]]
)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: trioudp" in out
    if not command:
        assert "Exit codes" in out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (
            ["send", "--timeout", "inf"],
            "--timeout: must be a number >= 0.001, not 'inf'",
        ),
        (["send", "--timeout", "1e-310"], "not '1e-310'"),
        (["send", "--timeout", "nan"], "not 'nan'"),
        (
            ["send", "--retries", "1000"],
            "--retries: must be an integer >= 0 and <= 100",
        ),
        (["serve", "--rate-limit", "inf"], "--rate-limit: must be 0 (off) or a number"),
        (
            ["serve", "--amplification-factor", "0.5"],
            "--amplification-factor: must be 0 (off) or a number >= 1, not '0.5'",
        ),
        (["echo", "--amplification-factor", "nan"], "not 'nan'"),
        (["bench", "--size", "4"], "--size: must be an integer >= 8"),
        (["bench", "--size", "70000"], "and <= 65507, not '70000'"),
        (["bench", "--lost-after", "0"], "--lost-after: must be a number > 0, not '0'"),
        (["bench", "--concurrency", "0"], "--concurrency: must be an integer >= 1"),
        (["bench", "--duration", "-1"], "--duration: must be a number > 0, not '-1'"),
        (["bench", "--duration", "nan"], "--duration: must be a number > 0, not 'nan'"),
        (["send", "--port", "abc"], "--port: port must be in 0..65535, not 'abc'"),
        (["bench", "--port", "abc"], "--port: port must be in 0..65535, not 'abc'"),
        (["serve", "--port", "-1"], "--port: port must be in 0..65535, not '-1'"),
        (["send", "--port", "70000"], "--port: port must be in 0..65535, not '70000'"),
        (["send", "--port", "0"], "--port: port must be in 1..65535 for a destination"),
        (
            ["bench", "--port", "0"],
            "--port: port must be in 1..65535 for a destination",
        ),
        (
            ["serve", "--workers", "100000"],
            "--workers: must be an integer >= 0 and <= 1024, not '100000'",
        ),
        (["listen", "--group", "192.0.2.1"], "--group must be a multicast address"),
        (["listen", "--group", "not-an-address"], "--group must be a multicast"),
        (
            ["listen", "--group", "239.1.2.3", "--interface", "nosuch0"],
            "--interface: no network interface is named 'nosuch0'",
        ),
        (
            ["echo", "--host", "127.0.0.1:23499"],
            "--host: takes an address without a port, not '127.0.0.1:23499':"
            " write --host 127.0.0.1 --port 23499",
        ),
        (
            ["serve", "--host", "::1:12345"],
            "--host: takes an address without a port, not '::1:12345':"
            " write --host ::1 --port 12345",
        ),
        (
            ["send", "--host", "[::1]:53"],
            "--host: takes an address without a port, not '[::1]:53':"
            " write --host ::1 --port 53",
        ),
        (
            ["bench", "--host", "localhost:7"],
            "write --host localhost --port 7",
        ),
        (
            ["listen", "--host", "fe80::1"],
            "--host: 'fe80::1' is a link-local address, which needs its"
            " interface: write fe80::1%IF, such as fe80::1%eth0",
        ),
        (["send", "--host", "[fe80::1]"], "write fe80::1%IF"),
        (["echo", "--host", "[::1"], "an IPv6 address in brackets such as [::1]"),
        (["echo", "--host", ""], "--host: must be an address or a host name"),
    ],
)
def test_bad_values_are_usage_errors(argv, fragment, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert err.startswith("usage: trioudp")
    assert "invalid" not in err  # argparse's "invalid _port value"


@pytest.mark.parametrize(
    ("argv", "verbose"),
    [
        (["-v", "send"], True),
        (["send", "-v"], True),
        (["send", "--verbose", "--no-exit"], True),
        (["demo"], False),
    ],
)
def test_verbose_before_or_after_the_command_and_not_by_default(argv, verbose):
    assert build_parser().parse_args(argv).verbose is verbose


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"trioudp {trioudp.__version__}\n"
    assert trioudp.__version__ == importlib.metadata.version("trioudp")


def test_every_server_defaults_to_loopback_and_every_answering_one_to_protection():
    parser = build_parser()
    for command in ("serve", "echo", "listen"):
        assert parser.parse_args([command]).host == "127.0.0.1"
    for command in ("serve", "echo"):
        args = parser.parse_args([command])
        assert (args.rate_limit, args.amplification_factor) == (50, 3)
    for command in ("send", "bench"):
        args = parser.parse_args([command])
        assert (args.host, args.port) == ("127.0.0.1", 12345)


def test_listen_takes_an_interface_index():
    assert group_settings("239.1.2.3", "1").interface == 1


@pytest.mark.parametrize(
    ("text", "host"),
    [
        ("[::1]", "::1"),  # as the banners print it
        ("::1", "::1"),
        ("::1:1234", "::1:1234"),  # an address: its last group is hex
        ("[fe80::1%lo]", "fe80::1%lo"),
        ("127.0.0.1", "127.0.0.1"),
        ("localhost", "localhost"),
        ("::", "::"),
    ],
)
def test_host_takes_addresses_names_and_the_bracketed_form(text, host):
    assert build_parser().parse_args(["echo", "--host", text]).host == host
