"""The README is the front page: what trioudp is, then the two commands that
must keep working in a fresh clone, one example, and a map of the docs.
(Its Python example runs in tests/test_docs_blocks.py, with every docs block.)
"""

import re

from .conftest import ROOT

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, re.DOTALL)


def test_readme_says_what_trioudp_is_then_opens_with_the_two_commands():
    shell = [code.strip() for lang, code in BLOCKS if lang == "sh"]
    assert shell[0].startswith("python3 -m venv .venv && ")
    assert shell[0].endswith("trioudp demo")
    assert shell[1].startswith("python3 -m venv .venv && ")
    assert shell[1].endswith("python -m pytest")
    assert README.index("trioudp is a UDP toolkit for") < README.index(shell[0])
    assert README.index(shell[1]) < README.index("## ")


def test_ci_runs_exactly_the_readme_test_command():
    test_command = next(
        code.strip() for lang, code in BLOCKS if lang == "sh" and "pytest" in code
    )
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_readme_is_a_front_page_with_one_example():
    """The details live in the docs: the README stays short."""
    assert len(README) < 8000
    assert [lang for lang, _ in BLOCKS].count("python") == 1


def test_readme_links_lead_to_files_of_the_repository():
    links = re.findall(r"\]\(([^)]+)\)", README)
    local = [link for link in links if "://" not in link]
    assert "docs/install.rst" in local
    assert "docs/tutorial/index.rst" in local
    missing = [link for link in local if not (ROOT / link.split("#")[0]).exists()]
    assert not missing, missing


def test_readme_maps_every_docs_page():
    pages = {
        str(page.relative_to(ROOT))
        for page in (ROOT / "docs").rglob("*.rst")
        if "_build" not in page.parts
        and (page.name != "index.rst" or page.parent.name == "tutorial")
    }
    unmapped = sorted(page for page in pages if f"]({page})" not in README)
    assert not unmapped, f"the README's map of the docs lacks {unmapped}"
