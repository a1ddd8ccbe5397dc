"""The distribution: the wheel installs into a fresh virtual environment and
works there, and a plain ``pytest`` runs against an installed (not editable)
trioudp.

Slow (a wheel build and a venv, ~15 s), and offline: the wheel is built
without build isolation, and the fresh venv gets its dependencies by linking
the test environment's own copies of exactly the distributions trioudp
requires (and those they require), never from an index.
"""

from __future__ import annotations

import email
import importlib.metadata
import shutil
import subprocess
import sys
import venv
import zipfile
from typing import TYPE_CHECKING

import pytest
from packaging.requirements import Requirement

from .conftest import ROOT, unavailable

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.slow


def _closure(roots: list[str]) -> list[importlib.metadata.Distribution]:
    """The installed distributions ``roots`` need, with theirs, recursively."""
    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        dist = importlib.metadata.distribution(name)
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen:
            continue
        seen[key] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return list(seen.values())


def _link_distributions(
    dists: list[importlib.metadata.Distribution], into: Path
) -> None:
    """Make ``dists`` importable from ``into`` by linking their top-level files."""
    into.mkdir()
    for dist in dists:
        tops = {file.parts[0] for file in dist.files or [] if file.parts[0] != ".."}
        for top in tops:
            target = into / top
            if not target.exists():
                target.symlink_to(dist.locate_file(top))


def _fresh_venv(path: Path, deps: list[importlib.metadata.Distribution]) -> Path:
    """A new venv whose site-packages also sees ``deps``; returns its bin dir."""
    venv.EnvBuilder(with_pip=False).create(path)
    bin_dir = path / "bin"
    site = subprocess.run(
        [
            bin_dir / "python",
            "-c",
            "import sysconfig; print(sysconfig.get_path('purelib'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    _link_distributions(deps, path / "deps")
    (path / site / "test-deps.pth").write_text(f"{path / 'deps'}\n")
    return bin_dir


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", out],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=300,
    )
    (built,) = out.glob("trioudp-*.whl")
    return built


def _pip_install(bin_dir: Path, wheel: Path) -> None:
    # The test environment's pip, targeting the fresh venv's interpreter.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            bin_dir / "python",
            "install",
            "--no-index",
            "--no-deps",
            "--quiet",
            wheel,
        ],
        capture_output=True,
        check=True,
        timeout=120,
    )


def test_wheel_metadata_has_the_license_and_the_platforms(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(archive.read(metadata_name))
    assert metadata["License-Expression"] == "MIT"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "trioudp/py.typed" in names
    classifiers = metadata.get_all("Classifier")
    assert "Operating System :: POSIX :: Linux" in classifiers
    # The versions CI tests (.ci/run), and no other.
    assert metadata["Requires-Python"] == ">=3.10"
    versions = [c.split(" :: ")[-1] for c in classifiers if " :: 3." in c]
    assert versions == ["3.10", "3.11", "3.12", "3.13"]


def test_wheel_installs_into_a_fresh_venv_and_runs_the_demo(wheel, tmp_path):
    bin_dir = _fresh_venv(tmp_path / "venv", _closure(["trio", "attrs"]))
    _pip_install(bin_dir, wheel)
    where = subprocess.run(
        [bin_dir / "python", "-c", "import trioudp; print(trioudp.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert where.startswith(str(tmp_path / "venv")), where
    demo = subprocess.run(
        [bin_dir / "trioudp", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert demo.returncode == 0, demo.stderr
    assert "Received Hello, client! from server" in demo.stdout


def test_plain_pytest_runs_the_doctests_against_an_installed_trioudp(wheel, tmp_path):
    """The README's test install is not editable: the doctests under trioudp/
    must import the installed package, not fail with "import file mismatch"."""
    bin_dir = _fresh_venv(
        tmp_path / "venv",
        _closure(
            ["trio", "attrs", "pytest", "pytest-trio", "pytest-xdist", "hypothesis"]
        ),
    )
    _pip_install(bin_dir, wheel)
    # What the ``pytest`` console script does: no current directory on sys.path,
    # unlike ``python -m pytest`` (-I: isolated mode leaves it out, from 3.4 on;
    # -P does only that, but only from 3.11 on).
    result = subprocess.run(
        [
            bin_dir / "python",
            "-I",
            "-c",
            "import sys, pytest; sys.exit(pytest.main())",
            "-p",
            "no:cacheprovider",
            "-q",
            "trioudp/_backoff.py",
            "tests/test_backoff.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mismatch" not in result.stdout


def test_the_install_pages_git_form_builds_the_pinned_commit(tmp_path):
    """docs/install.rst: ``pip install "trioudp @ git+file://localhost$PWD@$(git
    rev-parse HEAD)"`` in a clone (pip 23.2, Python 3.11's, refuses the form
    without a host). pip clones the URL and checks the commit out; built here
    offline (no build isolation, no dependencies)."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        unavailable("needs git and a git checkout of trioudp")
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    page = (ROOT / "docs" / "install.rst").read_text()
    command = 'pip install "trioudp @ git+file://localhost$PWD@$(git rev-parse HEAD)"'
    assert command in page
    built = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"),
            *("--no-build-isolation", "--wheel-dir", tmp_path / "wheels"),
            f"trioudp @ git+file://localhost{ROOT}@{commit}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "wheels").glob("trioudp-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert "trioudp/__init__.py" in archive.namelist()
