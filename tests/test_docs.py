"""The documentation: every public name documented, the site builds without a
warning, its examples run, and its inventory lists every public name."""

from __future__ import annotations

import importlib.util
import pydoc
import re
import shutil
import subprocess
import sys

import pytest

import trioudp
import trioudp.quic
import trioudp.testing

from .conftest import ROOT, needs, tool_missing

DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"


def requires_sphinx(test):
    """A docs build: it needs Sphinx (the docs extra) and Graphviz's dot (the
    diagrams), which CI has (there a missing one fails, never skips), and
    takes seconds (slow)."""
    sphinx = importlib.util.find_spec("sphinx")
    for mark in (
        needs(None if sphinx else "needs Sphinx: pip install -e '.[docs]'"),
        needs(tool_missing("dot", "graphviz")),
        pytest.mark.slow,
    ):
        test = mark(test)
    return test


def _load_inventory_generator():
    spec = importlib.util.spec_from_file_location(
        "make_inventories", DOCS / "_inventories" / "make_inventories.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("module", [trioudp, trioudp.quic, trioudp.testing])
def test_every_public_name_has_a_docstring_with_an_example_that_help_shows(module):
    assert sorted(module.__all__) == module.__all__
    for name in module.__all__:
        obj = getattr(module, name)
        doc = obj.__doc__
        assert doc, f"{name} has no docstring"
        assert doc is not type(obj).__doc__ or isinstance(obj, type), (
            f"{name}'s docstring is its type's, not its own"
        )
        assert "Example" in doc, f"{name}'s docstring has no example"
        summary = doc.strip().splitlines()[0]
        assert summary in pydoc.render_doc(obj, renderer=pydoc.plaintext), (
            f"help({module.__name__}.{name}) does not show its docstring"
        )


def test_committed_inventories_are_what_the_generator_writes():
    generator = _load_inventory_generator()
    for filename, make in generator.FILES.items():
        committed = (DOCS / "_inventories" / filename).read_bytes()
        assert committed == make(), (
            f"docs/_inventories/{filename} is stale:"
            " run python docs/_inventories/make_inventories.py"
        )


def _sphinx(builder: str, out) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-n",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            builder,
            "-d",
            str(out / "doctrees"),
            str(DOCS),
            str(out / builder),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _public_methods(cls: type) -> list[str]:
    """The public methods and properties of ``cls``, its inherited ones from
    trioudp's own classes included."""
    return [
        name
        for name in dir(cls)
        if not name.startswith("_")
        for owner in [next(k for k in cls.__mro__ if name in vars(k))]
        if owner.__module__.startswith("trioudp")
        and isinstance(vars(owner)[name], (property, type(_public_methods)))
    ]


@requires_sphinx
def test_docs_build_without_warnings_and_index_every_public_name(tmp_path):
    from sphinx.util.inventory import InventoryFile

    result = _sphinx("html", tmp_path)
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "html" / "objects.inv", "rb") as stream:
        inventory = InventoryFile.load(stream, "", lambda base, uri: uri)
    names = {name for entries in inventory.values() for name in entries}
    missing = [
        f"{module.__name__}.{name}"
        for module in (trioudp, trioudp.quic, trioudp.testing)
        for name in module.__all__
        if f"{module.__name__}.{name}" not in names
    ]
    assert not missing, f"not in the documentation's objects.inv: {missing}"
    # Methods and properties too, inherited ones included (UDPSocket's
    # multicast methods); a VirtualSocket is documented as trio's socket.
    methods = [
        f"{module.__name__}.{name}.{method}"
        for module in (trioudp, trioudp.testing)
        for name in module.__all__
        if isinstance(getattr(module, name), type) and name != "VirtualSocket"
        for method in _public_methods(getattr(module, name))
    ]
    assert "trioudp.UDPSocket.join_group" in methods
    missing = [name for name in methods if name not in names]
    assert not missing, f"not in the documentation's objects.inv: {missing}"
    # The CLI reference is generated from the parser: every command is there.
    cli = re.sub(
        r"<[^>]+>", "", (tmp_path / "html" / "reference" / "cli.html").read_text()
    )
    commands = ("serve", "send", "demo", "echo", "listen", "bench")
    for command in (*commands, "quic-echo", "quic-send"):
        assert f"trioudp {command} [-h]" in cli
    assert "--allow-remote-exit" in cli


@requires_sphinx
def test_docs_code_examples_pass_as_doctests(tmp_path):
    result = _sphinx("doctest", tmp_path)
    output = (tmp_path / "doctest" / "output.txt").read_text()
    assert result.returncode == 0, result.stderr + output
    assert " 0 failures in tests" in output
    ran = int(re.search(r"Doctest summary\s+=+\s+(\d+) tests", output).group(1))
    assert ran >= 15


def test_docs_example_test_files_pass(pytester):
    """The tutorial's and the how-to guide's test files, run as a user would:
    pytest-trio in trio mode, trioudp's plugin from its entry point."""
    for path in EXAMPLES.glob("*.py"):
        shutil.copy(path, pytester.path / path.name)
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    outcomes = result.parseoutcomes()
    skipped = outcomes.get("skipped", 0)
    if shutil.which("tcpdump") is not None:
        assert skipped == 0
    assert outcomes.get("failed", 0) == 0, result.stdout.str()
    assert outcomes["passed"] + skipped == 9


def test_the_tutorials_tests_pass_with_no_pytest_configuration(pytester):
    """Step 4: save test_hello.py next to hello.py and run ``pytest
    test_hello.py``, with no ini file: the marker makes each a Trio test."""
    for name in ("hello.py", "test_hello.py"):
        shutil.copy(EXAMPLES / name, pytester.path / name)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "test_hello.py")
    result.assert_outcomes(passed=2)


def test_docs_tutorial_program_runs():
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "hello.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Received Hello, server! from 127.0.0.1",
        "Received Hello, client! from server",
        "Received exit from 127.0.0.1",
        "Server exiting...",
    ]
