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
