"""Small helpers used across stages: atomic writes, failure lists, seeding."""

from __future__ import annotations

import contextlib
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    A crash leaves either the old file or nothing, never a half-written one, so a resumed job can
    trust that every file it finds is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, _FILE_MODE)  # mkstemp makes 0600; give the file the usual umask mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


class FailureLog:
    """Collects per-item failures of a batch job and writes them as CSV (``item,error``).

    The job goes on after a failure; the caller decides the exit code from ``len(log)``.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else None
        self.rows: list[tuple[str, str]] = []

    def add(self, item: str, error: BaseException | str) -> None:
        msg = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
        self.rows.append((str(item), msg.replace("\n", " ")))
        if self.path is not None:
            self.write()

    def write(self) -> None:
        import csv
        import io

        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["item", "error"])
        writer.writerows(self.rows)
        write_text_atomic(self.path, buf.getvalue())

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)


def parse_value(text: str):
    """A command-line ``KEY=VALUE`` value as YAML, with ``1e-3``-style numbers read as floats.

    (YAML 1.1, which PyYAML follows, reads ``1e-3`` as a string.)
    """
    import yaml

    value = yaml.safe_load(text) if text.strip() else ""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass


def dataclass_from_dict(cls, values: dict, what: str):
    """``cls(**values)`` for a dataclass, refusing unknown keys with one error that lists the valid ones
    (``what`` names the keys, e.g. ``"EXPR training option(s)"``)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown {what} {sorted(unknown)}; valid: {sorted(names)}")
    return cls(**values)
