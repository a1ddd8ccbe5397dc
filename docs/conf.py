"""Sphinx configuration for trioudp's documentation.

Build it with ``python -m sphinx -W --keep-going -b html docs docs/_build/html``;
run its examples with ``-b doctest``.
"""

from __future__ import annotations

import sys
from pathlib import Path

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
    "sphinxcontrib_trio",
    "sphinxarg.ext",
]

exclude_patterns = ["_build", "_inventories", "examples"]
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
napoleon_use_ivar = True

# CI has no network: the inventories are small ones kept in the repository
# (see _inventories/make_inventories.py), pointing at the published docs.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", "_inventories/python.inv"),
    "trio": ("https://trio.readthedocs.io/en/stable", "_inventories/trio.inv"),
}

# Every testcode block starts from these imports, as a reader's program would.
doctest_global_setup = """
import trio
import trio.testing
import trioudp
import trioudp.quic
from trioudp import *
from trioudp.quic import *
from trioudp.testing import *
"""
doctest_test_doctest_blocks = "default"

html_theme = "furo"
html_title = f"trioudp {release}"
html_static_path: list[str] = []
