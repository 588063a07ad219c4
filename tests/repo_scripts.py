"""Import one of the repository's scripts (``scripts/``, ``benchmarks/``: not a package) as a module in tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_script(relative_path: str) -> ModuleType:
    """The module at ``REPO / relative_path`` (e.g. ``"scripts/faces_cv.py"``), executed fresh."""
    path = REPO / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
