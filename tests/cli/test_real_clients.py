"""``trioudp echo`` answers the programs people already use: socat and
OpenBSD netcat (``nc -u``), over IPv4, IPv6 and a dual-stack ``--host ::``."""

import signal

from ..conftest import needs, requires_ipv6, tool_missing
from ..realprocs import run, running, trioudp_command

requires_socat = needs(tool_missing("socat", "socat"))
requires_nc = needs(tool_missing("nc", "netcat-openbsd"))


def socat(address):
    # -t 1: after stdin ends, wait up to a second for the echo, then exit.
    return ["socat", "-t", "1", "-", address]


def nc(host, port):
    # -w 1: quit once the connection has been idle for a second.
    return ["nc", "-u", "-w", "1", host, str(port)]


async def echoes(command, text):
    done = await run(command, stdin=text.encode())
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()


@requires_socat
@requires_nc
async def test_echo_answers_socat_and_netcat():
    async with running(trioudp_command("echo", "--port", "0")) as echo:
        port = await echo.port_from_banner("stdout")
        assert (
            await echoes(socat(f"UDP4:127.0.0.1:{port}"), "hi socat\n") == "hi socat\n"
        )
        assert await echoes(nc("127.0.0.1", port), "hi nc\n") == "hi nc\n"
        code, _, err = await echo.stop()
    assert code == 128 + signal.SIGTERM, err  # stopped gracefully by SIGTERM


@requires_ipv6
@requires_socat
@requires_nc
async def test_dual_stack_echo_answers_ipv4_and_ipv6_clients():
    async with running(trioudp_command("echo", "--host", "::", "--port", "0")) as echo:
        port = await echo.port_from_banner("stdout")
        assert await echoes(socat(f"UDP4:127.0.0.1:{port}"), "four\n") == "four\n"
        assert await echoes(socat(f"UDP6:[::1]:{port}"), "six\n") == "six\n"
        assert await echoes(nc("127.0.0.1", port), "nc four\n") == "nc four\n"
        assert await echoes(nc("::1", port), "nc six\n") == "nc six\n"
        code, _, err = await echo.stop()
    assert code == 128 + signal.SIGTERM, err  # stopped gracefully by SIGTERM


@requires_ipv6
@requires_socat
async def test_listen_on_dual_stack_prints_ipv4_peers_mapped():
    async with running(
        trioudp_command("listen", "--host", "::", "--port", "0")
    ) as listen:
        port = await listen.port_from_banner("stdout")
        await echoes(socat(f"UDP4-SENDTO:127.0.0.1:{port}"), "mapped")
        line = await listen.stdout.line()
        assert line.startswith("('::ffff:127.0.0.1', ")
        assert line.endswith(" 6 bytes: mapped")
        await listen.stop()
