"""trioudp.quic is optional: trioudp works without aioquic, and importing
trioudp.quic without it says what to install."""

from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT

WITHOUT_AIOQUIC = "import sys; sys.modules['aioquic'] = None; "


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_AIOQUIC + code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_trioudp_imports_without_aioquic():
    result = run("import trioudp; print(trioudp.serve_udp.__name__)")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "serve_udp\n"


def test_trioudp_quic_without_aioquic_says_what_to_install():
    result = run("import trioudp.quic")
    assert result.returncode == 1
    assert "pip install 'trioudp[quic]'" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("ImportError")
