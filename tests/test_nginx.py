"""examples/nginx-udp-lb against the real nginx (Debian's nginx and
libnginx-mod-stream, which .ci/run installs): UDP load balancing over two
trioudp backends on loopback.

The distribution counts are printed (``pytest -s tests/test_nginx.py``).
"""

import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import trio

import trioudp

from .conftest import ROOT, needs, system_tool, tool_missing

EXAMPLE = ROOT / "examples" / "nginx-udp-lb"
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
NGINX = system_tool("nginx")
DEADLINE = 60
SOURCES = 64
#: Client addresses for the affinity test: all on loopback (127.0.0.0/8).
CLIENT_HOSTS = [f"127.0.0.{10 + i}" for i in range(16)]

pytestmark = needs(tool_missing("nginx", "nginx, libnginx-mod-stream"))


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_backend(name, processes):
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE / "backend.py"), "--name", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    processes.append(process)
    line = process.stdout.readline()
    assert line.startswith(f"backend {name} listening on 127.0.0.1:"), line
    return process, int(line.rsplit(":", 1)[1])


def render(template, **values):
    """Fill in ``${NAME}`` as run.sh's sed does (nginx's own ``$vars`` stay)."""
    for name, value in values.items():
        template = template.replace("${" + name + "}", value)
    assert "${" not in template.split("#")[0]
    return template


@pytest.fixture
def balancer(tmp_path):
    """nginx in the foreground with the example's configuration, over two
    trioudp backends; yields (listen port, affinity port, backends by name)."""
    processes = []
    try:
        backends = {}
        for name in ("a", "b"):
            process, port = start_backend(name, processes)
            backends[name] = (process, port)
        listen, listen_affinity = free_udp_port(), free_udp_port()
        config = render(
            (EXAMPLE / "nginx.conf.template").read_text(),
            LOAD_STREAM=f"load_module {STREAM_MODULE};"
            if STREAM_MODULE.exists()
            else "",
            PREFIX=str(tmp_path),
            BACKEND_A=f"127.0.0.1:{backends['a'][1]}",
            BACKEND_B=f"127.0.0.1:{backends['b'][1]}",
            LISTEN=f"127.0.0.1:{listen}",
            LISTEN_AFFINITY=f"127.0.0.1:{listen_affinity}",
        )
        (tmp_path / "nginx.conf").write_text(config)
        processes.append(
            subprocess.Popen(
                [
                    NGINX,
                    "-p",
                    str(tmp_path),
                    "-c",
                    str(tmp_path / "nginx.conf"),
                    "-e",
                    str(tmp_path / "error.log"),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
        yield listen, listen_affinity, {name: b[0] for name, b in backends.items()}
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
            process.communicate(timeout=DEADLINE)
        log = tmp_path / "error.log"
        if log.exists():
            print(log.read_text())


def request_id(data):
    """Requests are ``<id>``, replies ``<backend> <id>``. nginx answers a
    request whose backend failed with an empty datagram: it has no id, so the
    client discards it and retransmits."""
    return data.rsplit(b" ", 1)[-1] or None


async def ask(port, payload, *, host="127.0.0.1", attempts=5):
    """One request from a fresh source port; returns (backend, client stats)."""
    backoff = trioudp.Backoff(initial=0.5, multiplier=1.0, jitter=0.0)
    async with trioudp.open_udp_client(
        "127.0.0.1",
        port,
        attempts=attempts,
        backoff=backoff,
        local_address=(host, 0),
        on_unreachable="retry",
        match=request_id,
    ) as client:
        reply = await client.request(payload)
        backend, _, data = reply.data.partition(b" ")
        assert data == payload
        return backend.decode(), client.stats


async def test_nginx_spreads_clients_keeps_affinity_and_skips_a_dead_backend(
    balancer,
):
    listen, listen_affinity, backends = balancer
    with trio.fail_after(DEADLINE):
        # nginx starts in the background: the first request retries until it listens.
        await ask(listen, b"hello", attempts=40)

        # Round robin: every request from a new source port, all answered,
        # both backends served a share.
        spread = Counter()
        for i in range(SOURCES):
            backend, _ = await ask(listen, b"r%d" % i)
            spread[backend] += 1
        print(f"\nround robin, {SOURCES} source ports: {dict(spread)}")
        assert sum(spread.values()) == SOURCES
        assert set(spread) == {"a", "b"}

        # Affinity: each client address always reaches one backend, whatever
        # its source port.
        reached = {}
        for host in CLIENT_HOSTS:
            seen = {
                (await ask(listen_affinity, b"s%d" % i, host=host))[0] for i in range(4)
            }
            assert len(seen) == 1, (host, seen)
            reached[host] = seen.pop()
        by_backend = Counter(reached.values())
        print(
            f"affinity, {len(CLIENT_HOSTS)} client addresses x 4 ports: {dict(by_backend)}"
        )
        assert sum(by_backend.values()) == len(CLIENT_HOSTS)

        # Kill backend b: requests that nginx sends it fail (ICMP port
        # unreachable); nginx marks it failed (max_fails=1) and the client's
        # retransmission reaches a.
        backends["b"].kill()
        backends["b"].wait(timeout=DEADLINE)
        after = Counter()
        retried = empty = 0
        for i in range(SOURCES):
            backend, stats = await ask(listen, b"k%d" % i)
            after[backend] += 1
            retried += stats.retransmitted > 0
            empty += stats.discarded
        print(
            f"after killing b, {SOURCES} requests: {dict(after)};"
            f" {retried} retransmitted, {empty} empty datagrams from nginx"
        )
        assert after == {"a": SOURCES}
        # Once b is marked failed, requests are answered at the first attempt.
        assert 1 <= retried <= 2
        for i in range(16):
            assert (await ask(listen, b"m%d" % i, attempts=1))[0] == "a"


async def test_run_sh_serves_in_the_foreground_and_cleans_up_on_sigterm():
    ports = {
        "LISTEN": free_udp_port(),
        "LISTEN_AFFINITY": free_udp_port(),
        "BACKEND_A": free_udp_port(),
        "BACKEND_B": free_udp_port(),
    }
    # run.sh calls nginx by name: /usr/sbin is not on an ordinary user's PATH.
    path = f"{os.environ.get('PATH', '')}{os.pathsep}{Path(NGINX).parent}"
    env = dict(
        os.environ,
        PATH=path,
        PYTHON=sys.executable,
        **{k: str(v) for k, v in ports.items()},
    )
    script = await trio.lowlevel.open_process(
        [str(EXAMPLE / "run.sh")],
        env=env,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        with trio.fail_after(DEADLINE):
            seen = {
                (await ask(ports["LISTEN"], b"x%d" % i, attempts=40))[0]
                for i in range(4)
            }
            assert seen == {"a", "b"}
            assert (await ask(ports["LISTEN_AFFINITY"], b"y"))[0] in ("a", "b")
    finally:
        script.terminate()
        with trio.fail_after(DEADLINE):
            await script.wait()
    assert script.returncode == 130
    # Nothing it started is left: the ports are free again.
    for port in ports.values():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", port))
