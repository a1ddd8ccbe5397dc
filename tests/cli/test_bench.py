"""``trioudp bench`` against a real echo server."""

import re
import signal

from .helpers import (
    banner_port,
    finish,
    run_cli,
    spawn_cli,
)


def test_bench_measures_an_echo_server():
    server = spawn_cli("echo", "--port", "0")
    port = banner_port(server)
    try:
        result = run_cli(
            "bench",
            "--port",
            str(port),
            "--duration",
            "0.5",
            "--concurrency",
            "4",
        )
    finally:
        server.send_signal(signal.SIGTERM)
        finish(server)
    assert result.returncode == 0, result.stderr
    replies = int(re.search(r"replies\s+(\d+)", result.stdout).group(1))
    assert replies > 0
    assert "latency p50" in result.stdout
