"""The command line is built on the workers, never the other way round, and
neither package has an import circle (imports inside functions and under
``TYPE_CHECKING`` count too)."""

import ast
import graphlib

import pytest

from ..conftest import ROOT

PACKAGES = ("trioudp._cli", "trioudp._workers")


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path):
    """Every trioudp module ``path`` imports, wherever the import is."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {module for module in found if module.startswith("trioudp")}


def graph():
    modules = {}
    for package in PACKAGES:
        folder = ROOT.joinpath(*package.split("."))
        for path in sorted(folder.glob("*.py")):
            modules[module_name(path)] = path
    return {
        name: imports(path) & set(modules) - {name} for name, path in modules.items()
    }


def test_the_graph_sees_every_module_and_edge():
    edges = graph()
    assert "trioudp._workers._supervisor" in edges["trioudp._workers"]
    assert "trioudp._workers._protocol" in edges["trioudp._workers._worker"]
    assert "trioudp._workers" in edges["trioudp._cli._supervise"]


@pytest.mark.parametrize("module", sorted(m for m in graph() if "._workers" in m))
def test_the_workers_never_import_the_command_line(module):
    assert not {m for m in graph()[module] if m.startswith("trioudp._cli")}


def test_no_import_circles():
    graphlib.TopologicalSorter(graph()).prepare()  # CycleError names a circle
