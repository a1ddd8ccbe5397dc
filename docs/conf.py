"""Sphinx configuration for trioudp's documentation.

Build it with ``python -m sphinx -W --keep-going -b html docs docs/_build/html``;
run its examples with ``-b doctest``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sphinx.util.nodes import make_refnode

import trioudp

# The tutorial's program and the how-to guides' examples import from here.
sys.path.insert(0, str(Path(__file__).resolve().parent / "examples"))

project = "trioudp"
author = "trioudp developers"
copyright = "2026, trioudp developers"  # noqa: A001  (Sphinx's setting name)
version = release = trioudp.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.doctest",
    "sphinx.ext.graphviz",
    "sphinxcontrib_trio",
    "sphinxarg.ext",
]

exclude_patterns = ["_build", "_inventories", "examples", "diagrams"]
default_role = "py:obj"
# Keep "--option" as typed: the CLI reference quotes help texts.
smartquotes = False
nitpicky = False

# Google-style docstrings, as everywhere in trioudp.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_admonition_for_examples = False
napoleon_custom_sections = [("Error handling", "notes"), ("Resource handling", "notes")]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options: dict[str, object] = {}
# Attributes sections become field lists: attrs classes document their
# fields there, and autodoc would describe each one a second time.
napoleon_use_ivar = False

# CI has no network: the inventories are small ones kept in the repository
# (see _inventories/make_inventories.py), pointing at the published docs.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", "_inventories/python.inv"),
    "trio": ("https://trio.readthedocs.io/en/stable", "_inventories/trio.inv"),
}

# No doctest_global_setup: each block imports what it uses, as the reader's
# copy of it must (tests/test_docs.py also runs each one alone). The API
# reference's ">>>" examples are doctests of their modules, which pytest runs
# (--doctest-modules) in the module's namespace: not again here, without it.
doctest_test_doctest_blocks = ""

#: Aliases that signatures show by name; they live in private modules, so
#: each links to its entry on the reference page, which says what it means.
TYPE_ALIASES = {
    "Handler": "type-handler",
    "Answer": "type-answer",
    "Network": "type-network",
    "DatagramOrigin": "type-datagram-origin",
    "Endpoint": "type-endpoint",
    "Sockaddr": "type-sockaddr",
    "AddrInfo": "type-addrinfo",
    "Rule": "type-rule",
    "QuicConfiguration": "type-quic-configuration",
    "Engine": "type-quic-engine",
    "Served": "type-served",
}


def link_type_alias(app, env, node, contnode):  # noqa: ANN001, ANN201 (Sphinx's event)
    """Resolve a type in a signature that Sphinx did not (its
    ``missing-reference`` event; None leaves the reference unresolved):
    one of :data:`TYPE_ALIASES`, or a documented alias such as
    ``SocketAddress``, which signatures name as a class (Python 3.10 keeps
    the alias's name where later versions spell out what it stands for)."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    label = TYPE_ALIASES.get(target)
    if label is not None:
        docname, anchor = env.get_domain("std").labels[label][:2]
        return make_refnode(app.builder, node["refdoc"], docname, anchor, contnode)
    if node.get("reftype") != "class":
        return None
    py = env.get_domain("py")
    found = py.find_obj(env, node.get("py:module"), None, target, "data", 1)
    if len(found) != 1:
        return None
    entry = found[0][1]
    return make_refnode(
        app.builder, node["refdoc"], entry.docname, entry.node_id, contnode
    )


def setup(app) -> None:  # noqa: ANN001
    app.connect("missing-reference", link_type_alias)


# The diagrams: Graphviz sources in diagrams/, drawn by dot at build time.
graphviz_output_format = "svg"

html_theme = "furo"
html_title = f"trioudp {release}"
html_static_path: list[str] = []
