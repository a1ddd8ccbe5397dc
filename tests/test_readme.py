"""The README's commands and code blocks are part of the contract: run them."""

import re
import subprocess
import sys

import pytest

from .conftest import ROOT

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, re.DOTALL)
PROGRAMS = [code for lang, code in BLOCKS if lang == "python" and "trio.run(" in code]
PLUGIN_EXAMPLES = [
    code for lang, code in BLOCKS if lang == "python" and "def test_" in code
]


def test_readme_opens_with_the_two_commands():
    shell = [code.strip() for lang, code in BLOCKS if lang == "sh"]
    assert shell[0].startswith("python3 -m venv .venv && ")
    assert shell[0].endswith("trioudp demo")
    assert shell[1].startswith("python3 -m venv .venv && ")
    assert shell[1].endswith("python -m pytest")
    assert README.index(shell[0]) < README.index("## ")


def test_ci_runs_exactly_the_readme_test_command():
    test_command = next(
        code.strip() for lang, code in BLOCKS if lang == "sh" and "pytest" in code
    )
    assert test_command in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize(
    "code", PROGRAMS, ids=[f"block{i}" for i in range(len(PROGRAMS))]
)
def test_tour_programs_run(code, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout


def test_tour_has_programs():
    assert len(PROGRAMS) >= 4
    assert len(PLUGIN_EXAMPLES) == 1


def test_plugin_example_passes(pytester):
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_example=PLUGIN_EXAMPLES[0])
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
