"""The virtual network's modules import one way: no import circle (imports
inside functions and under ``TYPE_CHECKING`` count too), and the network's
side never imports the socket the user holds."""

import ast
import graphlib

import pytest

from ..conftest import ROOT

PACKAGE = ROOT / "trioudp" / "testing"
# The network's side of the seam: it holds a socket's Sock, never its
# VirtualSocket, and knows nothing of the public facade.
NETWORK_SIDE = (
    "_model",
    "_trace",
    "_hosts",
    "_ports",
    "_groups",
    "_rules",
    "_flaps",
    "_faults",
    "_outages",
    "_wire",
)


def imports(path):
    """The sibling modules ``path`` imports, wherever the import is."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module)
            else:
                found.update(alias.name for alias in node.names)
    return found


def graph():
    modules = {path.stem: path for path in sorted(PACKAGE.glob("*.py"))}
    return {
        name: imports(path) & set(modules) - {name} for name, path in modules.items()
    }


def test_the_graph_sees_every_module_and_edge():
    edges = graph()
    assert "_network" in edges["__init__"]
    assert "_sock" in edges["_ports"]  # under TYPE_CHECKING
    assert "_model" in edges["_wire"]


def test_no_import_circles():
    graphlib.TopologicalSorter(graph()).prepare()  # CycleError names a circle


@pytest.mark.parametrize("module", NETWORK_SIDE)
def test_the_network_side_never_sees_the_virtual_socket(module):
    assert not graph()[module] & {"_vsocket", "_options", "_stack", "_network"}
