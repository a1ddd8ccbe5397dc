"""The package's import graph: no circles, so imports flow one way.

Every ``from .x import ...`` (and ``from . import x``, ``from .. import``)
counts, wherever it is written: at module level, under ``TYPE_CHECKING``, or
inside a function. A circle means one concern was cut in the wrong place
(STYLE.md, guideline 13).

Run as a script to print the graph's floors (longest import chain first)::

    python tests/test_architecture.py
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "trioudp"


def module_name(path: Path) -> str:
    """``trioudp/testing/_network.py`` -> ``trioudp.testing._network``."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """Each module of the package, and the package modules it imports."""
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = f"{base}.{node.module}" if node.module else base
            # `from . import x` imports the submodule x when there is one.
            submodules = {f"{target}.{alias.name}" for alias in node.names}
            found = submodules & paths.keys()
            imported |= found or {target}
        graph[name] = imported & paths.keys() - {name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def floors(graph: dict[str, set[str]]) -> dict[str, int]:
    """Each module's floor: 1 + the highest floor of what it imports (a
    module that imports nothing of the package is on floor 1). Members of a
    circle share a floor."""
    component_of = {node: node for node in graph}
    for component in circles(graph):
        for member in component:
            component_of[member] = component[0]
    floor: dict[str, int] = {}

    def height(node: str, seen: frozenset[str]) -> int:
        key = component_of[node]
        if key in floor:
            return floor[key]
        members = [other for other in graph if component_of[other] == key]
        below = {
            component_of[other]
            for member in members
            for other in graph[member]
            if component_of[other] != key
        }
        floor[key] = 1 + max(
            (height(other, seen | {key}) for other in below), default=0
        )
        return floor[key]

    return {node: height(node, frozenset()) for node in graph}


def test_the_package_has_no_import_circles():
    assert circles(import_graph()) == []


def test_only_the_pytest_plugin_imports_the_virtual_network():
    graph = import_graph()
    assert [
        (name, other)
        for name, imported in graph.items()
        if not name.startswith("trioudp.testing")
        for other in imported
        if other.startswith("trioudp.testing")
    ] == [("trioudp._pytest_plugin", "trioudp.testing")]


#: "About 600 lines at most" (STYLE.md, guideline 7: a few hundred).
MAX_LINES = 620


def test_every_module_says_what_it_is_for_and_stays_small():
    """Each module opens with its responsibility: a first paragraph that is
    a sentence; and none outgrows a few hundred lines."""
    unfit = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        text = path.read_text()
        doc = ast.get_docstring(ast.parse(text)) or ""
        first = " ".join(doc.split("\n\n")[0].split())
        if not first.endswith((".", ")")) or len(text.splitlines()) > MAX_LINES:
            unfit[name] = (first[:60], len(text.splitlines()))
    assert unfit == {}


def test_the_architecture_page_maps_every_module():
    """docs/explanation/architecture.rst names each module."""
    page = (PACKAGE.parent / "docs" / "explanation" / "architecture.rst").read_text()
    missing = [
        name
        for name in import_graph()
        if name not in ("trioudp", "trioudp.testing")
        and f"``{name.rpartition('.')[2]}``" not in page
    ]
    assert missing == []


def test_the_graph_sees_every_kind_of_relative_import():
    """The checker itself: a circle made only by a function-level import, or
    one only under TYPE_CHECKING, is still a circle."""
    assert circles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert floors({"a": {"b"}, "b": {"c"}, "c": set()}) == {"a": 3, "b": 2, "c": 1}
    graph = import_graph()
    # The parser imports __version__ from the package itself (`from .. import`).
    assert "trioudp" in graph["trioudp._cli._parser"]
    # `from .._workers import Worker` is the subpackage, not a module in it.
    assert "trioudp._workers" in graph["trioudp._cli._serve"]


def main() -> None:
    graph = import_graph()
    height = floors(graph)
    lines = {
        name: len(path.read_text().splitlines())
        for path in PACKAGE.rglob("*.py")
        if (name := module_name(path))
    }
    for name in sorted(graph, key=lambda n: (-height[n], n)):
        print(f"{height[name]:3} {lines[name]:5}  {name}")
    print("floors:", max(height.values()))
    for component in circles(graph):
        print("circle:", " <-> ".join(component))


if __name__ == "__main__":
    sys.exit(main())
