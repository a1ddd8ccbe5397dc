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


def test_bench_shows_progress_and_keeps_its_result_on_ctrl_c():
    server = spawn_cli("echo", "--port", "0")
    port = banner_port(server)
    bench = spawn_cli("bench", "--port", str(port), "--duration", "600")
    try:
        progress = bench.stderr.readline()  # after one second
        bench.send_signal(signal.SIGINT)
        code, out, err = finish(bench)
    finally:
        bench.kill()
        server.send_signal(signal.SIGTERM)
        finish(server)
    assert re.fullmatch(r"bench: 1 s, [\d,]+ replies, 0 lost\n", progress), progress
    assert code == 130, err
    assert re.fullmatch(
        r"bench: interrupted after \d+\.\d s; the result so far:\n", err
    )
    replies = int(re.search(r"replies\s+(\d+)", out).group(1))
    assert replies > 0
    assert "latency p99" in out
