import shlex
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestAssertRewriteWarning")

INI = """
[pytest]
trio_mode = true
"""


@pytest.fixture
def project(pytester):
    pytester.makeini(INI)
    return pytester


def test_fixtures_are_available_to_other_projects(project):
    project.makepyfile(
        """
        import trio
        import trioudp
        from trioudp.testing import VirtualNetwork

        async def test_echo(virtual_network, udp_echo_server):
            assert isinstance(virtual_network, VirtualNetwork)
            async with trioudp.open_udp_client(*udp_echo_server) as client:
                assert (await client.request(b"hi")).data == b"hi"
        """
    )
    project.runpytest_subprocess().assert_outcomes(passed=1)


def test_marker_configures_links_and_the_autojump_clock(project):
    project.makepyfile(
        """
        import pytest
        import trio
        import trioudp

        @pytest.mark.virtual_network(latency=5.0, loss=0.0)
        async def test_slow_link(virtual_network, udp_echo_server):
            assert virtual_network.policy.latency == 5.0
            async with trioudp.open_udp_client(*udp_echo_server, backoff=trioudp.Backoff(initial=60)) as client:
                start = trio.current_time()
                await client.request(b"x")
                assert trio.current_time() - start == 10.0
        """
    )
    project.runpytest_subprocess().assert_outcomes(passed=1)


def test_failures_print_the_seed_and_how_to_rerun(project):
    project.makepyfile(
        """
        async def test_fails(virtual_network):
            assert False
        """
    )
    result = project.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*virtual network seed: *; rerun exactly with: pytest *--trioudp-seed *"]
    )


def test_seed_option_overrides_and_seeds_are_stable(project):
    project.makepyfile(
        """
        def test_seed(virtual_network):
            print("SEED", virtual_network.seed)
        """.replace("def test_seed", "async def test_seed")
    )
    result = project.runpytest_subprocess("-s", "--trioudp-seed", "1234")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*SEED 1234*"])
    first = project.runpytest_subprocess("-s")
    second = project.runpytest_subprocess("-s")
    seeds = [line for line in first.outlines if "SEED" in line]
    assert seeds
    assert seeds == [line for line in second.outlines if "SEED" in line]


MANY_TASKS_THAT_FAIL = """
import hashlib, socket
import pytest, trio, trioudp

@pytest.mark.virtual_network(loss=0.2, duplicate=0.1, reorder=0.2, latency=0.01, jitter=0.005)
async def test_many_tasks(virtual_network, udp_echo_server):
    async def raw(i):
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sock.bind(("127.0.0.1", 0))
        for k in range(5):
            await sock.sendto(b"raw%d-%d" % (i, k), udp_echo_server)
            with trio.move_on_after(0.05):
                await sock.recvfrom(100)
        sock.close()

    async def client(i):
        async with trioudp.open_udp_client(
            *udp_echo_server, attempts=6, backoff=trioudp.Backoff(initial=0.03)
        ) as c:
            for k in range(5):
                try:
                    await c.request(b"cli%d-%d" % (i, k))
                except trioudp.RequestTimeout:
                    pass

    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(raw, i)
            nursery.start_soon(client, i)
    text = virtual_network.trace_text()
    print("TRACE", text.count("\\n"), hashlib.sha256(text.encode()).hexdigest())
    assert False
"""


def test_the_printed_rerun_command_reproduces_the_failing_run(project, monkeypatch):
    project.makepyfile(test_many=MANY_TASKS_THAT_FAIL)
    monkeypatch.setenv("PYTHONHASHSEED", "1")
    first = project.runpytest_subprocess("-s")
    first.assert_outcomes(failed=1)
    (rerun,) = [line for line in first.outlines if "rerun exactly with:" in line]
    args = shlex.split(rerun.split("rerun exactly with: pytest ", 1)[1])
    monkeypatch.setenv("PYTHONHASHSEED", "2")
    again = project.runpytest_subprocess("-s", *args)
    again.assert_outcomes(failed=1)
    traces = [trace_digests(result) for result in (first, again)]
    assert len(traces[0]) == 1
    assert traces[0] == traces[1]
    # A different seed is a different run.
    other = project.runpytest_subprocess("-s", args[0], "--trioudp-seed", "12345")
    assert trace_digests(other) != traces[0]


def trace_digests(result):
    return [line.split("TRACE", 1)[1] for line in result.outlines if "TRACE" in line]


WITHOUT_TRIO_MODE = """
import pytest
import trioudp

@pytest.mark.virtual_network(loss=0.1)
async def test_marked(virtual_network):
    pass

async def test_fixture_only(udp_echo_server):
    pass

def test_sync_with_the_fixture(virtual_network):
    pass

def test_unrelated():
    assert True

@pytest.mark.trio
async def test_marked_for_trio_still_works(virtual_network, udp_echo_server):
    async with trioudp.open_udp_client(*udp_echo_server) as client:
        assert (await client.request(b"hi")).data == b"hi"
"""


def test_without_pytest_trio_the_error_says_what_to_install(pytester):
    pytester.makeini("[pytest]\naddopts = --strict-markers --strict-config\n")
    pytester.makepyfile(
        WITHOUT_TRIO_MODE.replace("@pytest.mark.trio\n", "").replace(
            "test_marked_for_trio_still_works", "test_also_refused"
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:trio")
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=1, errors=4)
    result.stdout.fnmatch_lines(
        ["*need pytest-trio, which is not installed*pip install pytest-trio*"]
    )


def test_without_trio_mode_the_error_says_what_to_set(pytester):
    pytester.makeini("[pytest]\naddopts = --strict-markers --strict-config\n")
    pytester.makepyfile(WITHOUT_TRIO_MODE)
    result = pytester.runpytest_subprocess("-W", "error")
    # The marked test runs (the marker makes it a Trio test); the unmarked
    # async one and the sync one are refused before any fixture runs, and
    # the tests after them are not poisoned.
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*test_fixture_only uses trioudp's virtual network but pytest-trio does"
            " not run it*trio_mode = true*",
            "*test_sync_with_the_fixture uses trioudp's virtual network*async def*",
        ]
    )


ODD_SEEDS_FAIL = """
import trio

async def test_even_seeds_only(virtual_network):
    print("SEED", virtual_network.seed)
    await trio.sleep(1)
    assert virtual_network.seed % 2 == 0

def test_not_on_the_network():
    pass
"""


def rerun_commands(result):
    lines = result.outlines
    start = next(i for i, line in enumerate(lines) if "trioudp: failing seeds" in line)
    commands = []
    for line in lines[start + 1 :]:
        if not line.startswith("pytest "):
            break
        commands.append(line)
    return commands


def test_a_seed_sweep_runs_each_test_under_n_seeds_and_lists_the_failures(project):
    project.makepyfile(test_sweep=ODD_SEEDS_FAIL)
    result = project.runpytest_subprocess("-s", "-v", "--trioudp-seeds", "4")
    result.assert_outcomes(passed=3, failed=2)
    seeds = sorted(int(line.split()[-1]) for line in result.outlines if "SEED" in line)
    assert len(seeds) == 4
    assert seeds == list(range(seeds[0], seeds[0] + 4))
    result.stdout.fnmatch_lines(
        [f"*test_even_seeds_only?seed+{n}? *" for n in range(4)], consecutive=False
    )
    commands = rerun_commands(result)
    odd = [seed for seed in seeds if seed % 2]
    assert commands == [
        f"pytest test_sweep.py::test_even_seeds_only --trioudp-seed {seed}"
        for seed in odd
    ]
    for command, seed in zip(commands, odd, strict=True):
        again = project.runpytest_subprocess("-s", *shlex.split(command)[1:])
        again.assert_outcomes(failed=1)
        assert f"SEED {seed}" in again.stdout.str()
    # The first seed of a sweep is the test's own, as without one.
    alone = project.runpytest_subprocess("-s", "test_sweep.py::test_even_seeds_only")
    assert f"SEED {seeds[0]}" in alone.stdout.str()
    # --trioudp-seed moves the sweep.
    moved = project.runpytest_subprocess(
        "-s", "--trioudp-seeds", "2", "--trioudp-seed", "100", "-k", "even"
    )
    assert sorted(line.split()[-1] for line in moved.outlines if "SEED" in line) == [
        "100",
        "101",
    ]


def test_a_sweep_needs_at_least_one_seed(project):
    project.makepyfile(test_sweep=ODD_SEEDS_FAIL)
    result = project.runpytest_subprocess("--trioudp-seeds", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--trioudp-seeds takes a count of seeds >= 1*"])


PINNED = """
import pytest

@pytest.mark.virtual_network(seed=5, latency=0.5)
async def test_pinned(virtual_network):
    print("SEED", virtual_network.seed, virtual_network.policy.latency)
    assert False

@pytest.mark.virtual_network(seed="five")
async def test_badly_pinned(virtual_network):
    pass
"""


def test_the_marker_pins_a_seed_that_no_option_changes(project):
    project.makepyfile(test_pinned=PINNED)
    result = project.runpytest_subprocess(
        "-s", "--trioudp-seed", "9", "--trioudp-seeds", "3"
    )
    # pytest-trio sets Trio fixtures up inside the test: a bad seed fails it.
    result.assert_outcomes(failed=2)
    seeds = [line.split("SEED ")[1] for line in result.outlines if "SEED " in line]
    assert seeds == ["5 0.5"]
    result.stdout.fnmatch_lines(
        [
            "*virtual network seed: 5 (pinned by the marker); rerun exactly with:"
            " pytest test_pinned.py::test_pinned",
            "*seed=...) takes an int, not 'five'*",
        ]
    )


QUOTED_IDS = r"""
import pytest

@pytest.mark.parametrize("name", ["back\\slash", "caf\u00e9", "two words", "it's"])
async def test_named(virtual_network, name):
    print("RAN", name)
    assert False
"""


def test_the_rerun_command_is_shell_quoted_and_finds_the_test(project):
    project.makepyfile(test_quoted=QUOTED_IDS)
    first = project.runpytest_subprocess()
    first.assert_outcomes(failed=4)
    commands = [
        line.split("rerun exactly with: ", 1)[1]
        for line in first.outlines
        if "rerun exactly with:" in line
    ]
    assert len(commands) == 4
    for command in commands:
        again = project.runpytest_subprocess("-s", *shlex.split(command)[1:])
        again.assert_outcomes(failed=1)


FAILS_WITH_TRAFFIC = """
import socket
import trio

async def test_fails(virtual_network):
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    for i in range(30):
        await sock.sendto(b"%d" % i, sock.getsockname())
    assert False

async def test_fails_without_a_record():
    pass
"""


def test_a_failure_shows_the_trace_s_end_and_where_the_capture_went(project):
    project.makepyfile(test_traffic=FAILS_WITH_TRAFFIC)
    result = project.runpytest_subprocess()
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*the trace's last 20 events (at most):",
            "0.000000000 send      #21 127.0.0.1:* > 127.0.0.1:* 2B",
            "*",
            "0.000000000 deliver   #30 127.0.0.1:* > 127.0.0.1:* 2B",
            "pcapng capture: *virtual_network.pcapng (each packet's fate is its"
            " comment: tshark -V -r)",
        ]
    )
    [line] = [line for line in result.outlines if line.startswith("pcapng capture:")]
    path = Path(line.split()[2])
    assert path.read_bytes()[:4] == b"\n\r\r\n"  # a pcapng section header


def test_a_network_without_a_record_says_so(project):
    project.makepyfile(
        """
        import pytest

        @pytest.mark.virtual_network(record=False)
        async def test_fails(virtual_network):
            assert False
        """
    )
    result = project.runpytest_subprocess()
    result.stdout.fnmatch_lines(
        ["*no trace and no capture: the network was made with record=False*"]
    )


CLOCKS = """
import pytest
import trio
import trio.testing

async def test_fixture_alone_runs_on_the_autojump_clock(virtual_network):
    assert isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
    await trio.sleep(3600)

@pytest.mark.virtual_network(autojump=False)
async def test_opted_out(virtual_network):
    assert not isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)

async def test_a_clock_of_its_own(virtual_network, mock_clock):
    assert trio.lowlevel.current_clock() is mock_clock
    assert mock_clock.autojump_threshold == float("inf")

async def test_no_network_no_mock_clock():
    assert not isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
"""


def test_the_fixture_alone_runs_on_the_autojump_clock(project):
    project.makepyfile(test_clocks=CLOCKS)
    result = project.runpytest_subprocess("-p", "no:faulthandler")
    result.assert_outcomes(passed=4)
    assert result.duration < 60


def rerun_command_of(result):
    [command] = [
        line.split("rerun exactly with: ", 1)[1]
        for line in result.outlines
        if "rerun exactly with:" in line
    ]
    return command


def test_the_rerun_command_works_from_where_pytest_was_started(project, monkeypatch):
    project.mkpydir("sub")
    project.makepyfile(
        **{"sub/test_deep": "async def test_x(virtual_network):\n    assert False\n"}
    )
    command = rerun_command_of(project.runpytest_subprocess("sub"))
    assert command.startswith("pytest sub/test_deep.py::test_x --trioudp-seed ")
    monkeypatch.chdir(project.path / "sub")
    first = project.runpytest_subprocess("test_deep.py")
    command = rerun_command_of(first)
    assert command.startswith("pytest test_deep.py::test_x --trioudp-seed ")
    again = project.runpytest_subprocess(*shlex.split(command)[1:])
    again.assert_outcomes(failed=1)


# ---- anyio's plugin on the Trio backend --------------------------------------

ANYIO_EXAMPLE = ROOT / "docs" / "examples" / "anyio" / "test_with_anyio.py"
FAILS = """

async def test_fails(virtual_network):
    assert False
"""


@pytest.mark.parametrize("pytest_trio", ["installed", "not installed"])
def test_tests_marked_for_anyio_on_trio_get_the_fixtures_and_the_marker(
    pytester, pytest_trio
):
    """With anyio's plugin running them on Trio (and pytest-trio, with
    trio_mode off, or not there at all), the fixtures, the marker's link
    settings and its seed report work as under pytest-trio: the how-to's
    example file, and a failing test added to it."""
    pytester.makeini("[pytest]\naddopts = --strict-markers --strict-config\n")
    pytester.makepyfile(test_with_anyio=ANYIO_EXAMPLE.read_text() + FAILS)
    options = ["-p", "no:trio"] if pytest_trio == "not installed" else []
    result = pytester.runpytest_subprocess(*options, "-W", "error")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["*virtual network seed: *; rerun exactly with: pytest *--trioudp-seed *"]
    )


def test_under_anyio_another_backend_or_the_real_clock_says_what_to_set(pytester):
    pytester.makeini("[pytest]\naddopts = --strict-markers --strict-config\n")
    pytester.makepyfile(
        """
        import pytest
        import trio.testing

        pytestmark = pytest.mark.anyio

        @pytest.fixture(params=["asyncio", "trio"])
        def anyio_backend(request):
            return request.param

        async def test_needs_the_autojump_clock(virtual_network):
            pass

        @pytest.mark.virtual_network(autojump=False)
        async def test_on_the_real_clock(virtual_network, udp_echo_server):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:trio")
    # asyncio: both refused; trio: the first lacks its clock, the second runs.
    result.assert_outcomes(passed=1, errors=3)
    result.stdout.fnmatch_lines(
        [
            "*test_needs_the_autojump_clock?asyncio? uses trioudp's virtual network,"
            " which runs on Trio, but anyio runs it on 'asyncio'*return 'trio'*",
            "*test_needs_the_autojump_clock?trio? runs on trioudp's virtual network"
            " under the autojump clock*MockClock(autojump_threshold=0)*",
        ]
    )
