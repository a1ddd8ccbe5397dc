"""What a benchmark script writes with ``--json``: its figures, and how and
where they were measured. ``benchmarks/figures.py`` keeps them in the one
results file and renders every table and chart from it."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        type=Path,
        metavar="FILE",
        help="also write the figures to FILE, as JSON (benchmarks/figures.py renders them)",
    )


def meta() -> dict[str, Any]:
    """How the figures were made: the command, the interpreter, the machine."""
    return {
        "argv": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "python": platform.python_version(),
        "host": platform.platform(),
        "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime()),
    }


def write_json(path: Path | None, figures: dict[str, Any]) -> None:
    """Write ``figures`` with their :func:`meta` to ``path`` (None: nowhere)."""
    if path is not None:
        path.write_text(json.dumps({"meta": meta(), **figures}, indent=1) + "\n")
