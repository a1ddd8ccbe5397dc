"""Every code block a reader may copy from the docs (docs/**/*.rst) or the
README runs as shown, by itself: each Python block runs in a fresh
interpreter, with nothing imported for it, and prints what the page says it
prints. A block that is not a whole program says so on its first line
(``# Fragment: ...``), visibly, and is not run.

The blocks run where the downloadable examples (docs/examples/*.py) are, as
the tutorial asks the reader to save them, and under an audit hook (in a
sitecustomize.py, so the Pythons a block starts have it too) that refuses
any real socket address off loopback; the virtual network's sockets are not
real ones, so its addresses pass.
"""

from __future__ import annotations

import doctest
import os
import re
import shutil
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

import attrs
import pytest

from .conftest import ROOT

if TYPE_CHECKING:
    from pathlib import Path

DOCS = ROOT / "docs"
#: How a block that is not a whole program begins, visibly.
FRAGMENT = "# Fragment"
PYTHON = {"python", "python3", "py"}
#: Whatever a reader is told to run finishes well within this (seconds).
LIMIT = 60

#: The sitecustomize.py that each block's interpreter (and any Python it
#: starts, such as a worker process) imports first: a real socket address off
#: loopback fails the block.
LOOPBACK_ONLY = """
import ipaddress, sys

def _loopback_only(event, args):
    if event not in ("socket.bind", "socket.connect", "socket.sendto", "socket.sendmsg"):
        return
    address = args[1]
    if not isinstance(address, tuple):
        return  # a Unix socket, or sendmsg on a connected socket
    host = address[0].split("%")[0]
    if event == "socket.bind" and host in ("", "0.0.0.0", "::"):
        return
    if host == "localhost":
        return
    ip = ipaddress.ip_address(host)
    ip = getattr(ip, "ipv4_mapped", None) or ip
    if not ip.is_loopback:
        raise PermissionError(f"a docs block used a real address off loopback: {address}")

sys.addaudithook(_loopback_only)
"""


@attrs.frozen
class Block:
    """A code block of a page: where it starts, its language, its code and,
    for a ``testcode`` block, the ``testoutput`` that follows it."""

    where: str
    language: str
    code: str
    output: str | None = None

    @property
    def fragment(self) -> bool:
        return self.code.lstrip().startswith(FRAGMENT)


_DIRECTIVE = re.compile(
    r"^(?P<indent> *)\.\. (?P<name>testcode|testoutput|code-block|code|sourcecode)::"
    r" *(?P<argument>\S*)"
)


def _body(lines: list[str], start: int, indent: int) -> tuple[str, int]:
    """The indented body of the directive on line ``start``, and where it ends."""
    end = start + 1
    while end < len(lines) and (
        not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent
    ):
        end += 1
    body = [line for line in lines[start + 1 : end] if not line.strip().startswith(":")]
    return textwrap.dedent("\n".join(body)).strip("\n") + "\n", end


def rst_blocks(path: Path) -> list[Block]:
    """The code blocks of an reST page, with their languages."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    number = 0
    while number < len(lines):
        line = lines[number]
        where = f"{path.relative_to(ROOT)}:{number + 1}"
        match = _DIRECTIVE.match(line)
        if match is None:
            if line.rstrip().endswith("::") and not line.lstrip().startswith(".. "):
                blocks.append(Block(where, "", ""))  # a bare literal block
            number += 1
            continue
        code, number = _body(lines, number, len(match["indent"]))
        if match["name"] == "testoutput":
            blocks.append(attrs.evolve(blocks.pop(), output=code))
        elif match["name"] == "testcode":
            blocks.append(Block(where, "python", code))
        else:
            blocks.append(Block(where, match["argument"], code))
    return blocks


def markdown_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, with their languages."""
    text = path.read_text()
    return [
        Block(
            f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}",
            match[1],
            match[2],
        )
        for match in re.finditer(
            r"^```(\w*)\n(.*?)^```", text, re.DOTALL | re.MULTILINE
        )
    ]


PAGES = sorted(DOCS.rglob("*.rst"))
BLOCKS = [
    block for page in PAGES if "_build" not in page.parts for block in rst_blocks(page)
] + markdown_blocks(ROOT / "README.md")
RUNNABLE = [b for b in BLOCKS if b.language in PYTHON and not b.fragment]


def test_every_block_says_its_language():
    """A bare ``::`` block would be highlighted as Python without being run
    as Python: every block names its language (and so is run when it is
    Python)."""
    unnamed = [block.where for block in BLOCKS if not block.language]
    assert not unnamed, f"name the language (.. code-block:: sh, text, ...): {unnamed}"


def test_the_docs_have_programs_to_run_and_fragments_are_few():
    assert len(RUNNABLE) >= 15
    fragments = [b for b in BLOCKS if b.language in PYTHON and b.fragment]
    assert len(fragments) <= len(RUNNABLE) // 4, [b.where for b in fragments]


def test_literal_includes_show_files_the_suite_runs():
    """Code shown with ``literalinclude`` comes from files that run whole:
    the tutorial's downloadable examples (docs/examples, run by test_docs;
    docs/examples/anyio, run by test_pytest_plugin under anyio's plugin) or
    the interop programs the tests drive."""
    for page in PAGES:
        for included in re.findall(r"\.\. literalinclude:: (\S+)", page.read_text()):
            path = (page.parent / included).resolve()
            assert path.suffix == ".py", (page, included)
            assert path.parent in (
                DOCS / "examples",
                DOCS / "examples" / "anyio",
                ROOT / "tests" / "interop",
            ), (
                page,
                included,
            )


def _run(block: Block, where: Path) -> subprocess.CompletedProcess[str]:
    for example in (DOCS / "examples").glob("*.py"):
        shutil.copy(example, where / example.name)
    (where / "sitecustomize.py").write_text(LOOPBACK_ONLY)
    if "def test_" in block.code and "trio.run(" not in block.code:
        (where / "test_block.py").write_text(block.code)
        (where / "pytest.ini").write_text("[pytest]\ntrio_mode = true\n")
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        command.append("test_block.py")
    else:
        (where / "block.py").write_text(block.code)
        command = [sys.executable, "block.py"]
    return subprocess.run(
        command,
        cwd=where,
        env={**os.environ, "PYTHONPATH": str(where)},
        capture_output=True,
        text=True,
        timeout=LIMIT,
        check=False,
    )


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.where for b in RUNNABLE])
def test_block_runs_alone_and_prints_what_the_page_shows(block, tmp_path):
    result = _run(block, tmp_path)
    assert result.returncode == 0, f"{block.where}:\n{result.stdout}{result.stderr}"
    if block.output is not None:
        # As Sphinx's doctest compares (its default flags): "..." matches anything.
        checker = doctest.OutputChecker()
        assert checker.check_output(block.output, result.stdout, doctest.ELLIPSIS), (
            f"{block.where} printed:\n{result.stdout}\nnot:\n{block.output}"
        )


def test_a_block_that_needs_an_import_it_lacks_fails(tmp_path):
    """The runner gives a block nothing: what the doctest setup used to
    import for every block is missing here."""
    block = Block("here", "python", "print(trio.current_time)\n")
    result = _run(block, tmp_path)
    assert result.returncode != 0
    assert "NameError: name 'trio' is not defined" in result.stderr


def test_a_block_that_leaves_loopback_fails(tmp_path):
    code = (
        "import socket\n"
        "with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:\n"
        "    s.sendto(b'x', ('192.0.2.1', 9))\n"
    )
    result = _run(Block("here", "python", code), tmp_path)
    assert result.returncode != 0
    assert "off loopback: ('192.0.2.1', 9)" in result.stderr
