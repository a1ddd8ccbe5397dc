"""HTTP/3 on trioudp.quic: aioquic's H3Connection on a connection's events
(``receive_event``), as examples/h3_server.py and examples/h3_client.py use
it; the examples against each other, on the virtual network and on
loopback, and against peers nobody here wrote: aioquic's own asyncio HTTP/3
client, and ngtcp2's example client and server (gtlsclient, gtlsserver)."""

from __future__ import annotations

import hashlib
import json
import signal
import sys

import pytest
import trio

from .conftest import ROOT, needs, tool_missing
from .helpers import free_port
from .quic_support import pki, quic_server
from .realprocs import WAIT, example, example_module, run, running

h3_server = example_module("h3_server")
h3_client = example_module("h3_client")

AIOQUIC_CLIENT = str(ROOT / "tests" / "interop" / "aioquic_h3_client.py")
NGTCP2_CLIENT = needs(tool_missing("gtlsclient", "ngtcp2-client"))
NGTCP2_SERVER = needs(tool_missing("gtlsserver", "ngtcp2-server"))


def body(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


def server_configuration():
    return h3_server.configuration(str(pki() / "cert.pem"), str(pki() / "key.pem"))


async def fetch(port: int, path: str, data: bytes | None = None):
    return await h3_client.fetch(
        f"https://localhost:{port}{path}", data=data, ca_certs=str(pki() / "ca.pem")
    )


@pytest.mark.virtual_network(latency=0.005)
async def test_the_examples_serve_and_fetch_on_the_virtual_network(virtual_network):
    async with quic_server(
        h3_server.serve_h3, configuration=server_configuration()
    ) as server:
        hello = await fetch(server.port, "/")
        assert (hello.status, bytes(hello.body)) == (200, b"Hello, HTTP/3!")
        generated = await fetch(server.port, "/300000")
        assert (generated.status, bytes(generated.body)) == (200, b"x" * 300_000)
        echoed = await fetch(server.port, "/echo", body(200_000))
        assert (echoed.status, bytes(echoed.body)) == (200, body(200_000))
        missing = await fetch(server.port, "/nowhere")
        assert missing.status == 404
        assert server.stats.handler_errors == 0


async def test_the_example_programs_talk_on_loopback():
    command = example(
        "h3_server.py",
        *("--port", "0", "--certificate", str(pki() / "cert.pem")),
        *("--private-key", str(pki() / "key.pem")),
    )
    async with running(command) as server:
        port = await server.port_from_banner("stdout")
        client = [sys.executable, str(ROOT / "examples" / "h3_client.py")]
        client += ["--ca-certs", str(pki() / "ca.pem")]
        got = await run([*client, f"https://localhost:{port}/"])
        assert (got.returncode, got.stdout) == (0, b"Hello, HTTP/3!"), got.stderr
        assert got.stderr == b"HTTP/3 200\n"
        got = await run(
            [*client, "--data", "round trip", f"https://localhost:{port}/echo"]
        )
        assert (got.returncode, got.stdout) == (0, b"round trip"), got.stderr
        got = await run([*client, f"https://localhost:{port}/missing"])
        assert (got.returncode, got.stderr) == (1, b"HTTP/3 404\n")
        code, out, _ = await server.stop(signal.SIGINT)
    assert code == 0
    assert out.splitlines()[-1] == "Stopped after 3 connections"


async def test_the_howtos_commands_with_trustmes_files(tmp_path):
    """docs/howto/quic.rst runs the examples with the files ``python -m
    trustme`` writes: those names, and they work."""
    howto = (ROOT / "docs" / "howto" / "quic.rst").read_text()
    for line in (
        "python -m trustme\n",
        "--certificate server.pem --private-key server.key &\n",
        "--ca-certs client.pem https://localhost:4433/\n",
    ):
        assert line in howto
    made = await run([sys.executable, "-m", "trustme", "-d", str(tmp_path)])
    assert made.returncode == 0, made.stderr
    command = example(
        "h3_server.py",
        *("--port", "0", "--certificate", str(tmp_path / "server.pem")),
        *("--private-key", str(tmp_path / "server.key")),
    )
    async with running(command) as server:
        port = await server.port_from_banner("stdout")
        client = [sys.executable, str(ROOT / "examples" / "h3_client.py")]
        client += ["--ca-certs", str(tmp_path / "client.pem")]
        got = await run([*client, f"https://localhost:{port}/"])
        assert (got.returncode, got.stdout) == (0, b"Hello, HTTP/3!"), got.stderr
        code, _, _ = await server.stop(signal.SIGINT)
    assert code == 0


@pytest.mark.parametrize(
    ("path", "size"), [("/", None), ("/250000", None), ("/echo", 150_000)]
)
async def test_aioquics_own_http3_client_through_the_example_server(path, size):
    async with quic_server(
        h3_server.serve_h3, configuration=server_configuration()
    ) as server:
        command = [sys.executable, AIOQUIC_CLIENT, str(pki() / "ca.pem")]
        command += [str(server.port), path, *([str(size)] if size else [])]
        got = await run(command)
    assert got.returncode == 0, got.stderr.decode()
    result = json.loads(got.stdout)
    expected = h3_server.respond(
        b"POST" if size else b"GET", path.encode(), body(size or 0)
    )[1]
    assert result == result | {
        "status": 200,
        "size": len(expected),
        "sha256": hashlib.sha256(expected).hexdigest(),
    }
    assert server.stats.retries == 1  # address validation, on by default


@NGTCP2_CLIENT
async def test_ngtcp2s_client_gets_and_posts_through_the_example_server(tmp_path):
    posted = tmp_path / "posted.bin"
    posted.write_bytes(body(300_000))
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    async with quic_server(
        h3_server.serve_h3, configuration=server_configuration()
    ) as server:
        base = f"https://127.0.0.1:{server.port}"
        common = ["gtlsclient", "-q", "--exit-on-all-streams-close"]
        common += [f"--download={downloads}", "127.0.0.1", str(server.port)]
        got = await run([*common, f"{base}/", f"{base}/123456"])
        assert got.returncode == 0, got.stderr.decode()
        got = await run([*common, "-m", "POST", "-d", str(posted), f"{base}/echo"])
        assert got.returncode == 0, got.stderr.decode()
        assert server.stats.retries == 2
        assert server.stats.handler_errors == 0
    assert (downloads / "index.html").read_bytes() == b"Hello, HTTP/3!"
    assert (downloads / "123456").read_bytes() == b"x" * 123_456
    assert (downloads / "echo").read_bytes() == posted.read_bytes()


@NGTCP2_SERVER
@pytest.mark.parametrize("retry", [False, True])
async def test_the_example_client_fetches_from_ngtcp2s_server(tmp_path, retry):
    documents = tmp_path / "htdocs"
    documents.mkdir()
    (documents / "blob.bin").write_bytes(body(400_000))
    port = free_port()
    command = ["gtlsserver", "-q", "-d", str(documents)]
    command += ["--validate-addr"] if retry else []
    command += ["127.0.0.1", str(port), str(pki() / "key.pem"), str(pki() / "cert.pem")]
    async with running(command):
        await bound(port)
        blob = await fetch(port, "/blob.bin")
        assert (blob.status, bytes(blob.body)) == (200, body(400_000))
        generated = await fetch(port, "/1000000")
        assert (generated.status, len(generated.body)) == (200, 1_000_000)
        missing = await fetch(port, "/missing.html")
        assert missing.status == 404


async def bound(port: int) -> None:
    """Wait until something on this machine has bound UDP ``port``."""
    table = trio.Path("/proc/net/udp")
    with trio.fail_after(WAIT):
        while f":{port:04X} " not in await table.read_text():  # noqa: ASYNC110 (no event for this)
            await trio.sleep(0.05)
