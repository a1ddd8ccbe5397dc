import shlex

import pytest

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
