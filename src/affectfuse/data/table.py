"""The validated video table every dataset layout loads into, and the row-checking helpers.

:class:`VideoTable` holds one row per video (ids, split, labels, groups, media paths). Loaders collect
every bad row in a :class:`LayoutError` whose lines read ``<file>: row <n> (id <id>): <cause>``; row
numbers are line numbers of the file as a text editor shows them (header = row 1).
The layouts themselves (ABAW5, MuSe, manifest) live in :mod:`affectfuse.data.layouts`.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from affectfuse.labels import ERI_EMOTIONS, eri_index

if TYPE_CHECKING:  # pragma: no cover
    from affectfuse.data.store import FeatureSet

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val", "devel": "val", "development": "val",
    "test": "test", "testing": "test",
}


class LayoutError(ValueError):
    """A dataset table is malformed. ``problems`` holds one line per offending row (or file-level cause)."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        lines = list(self.problems)
        if len(lines) > 1:
            lines.insert(0, f"{len(lines)} problems in the dataset table:")
        super().__init__("\n".join(lines))


class _Problems:
    """Collects ``<file>: row <n> (id <id>): <cause>`` lines; raises them together."""

    def __init__(self):
        self.lines: list[str] = []

    def add(self, file: Path | str, row: int | None, vid: str | None, cause: str) -> None:
        where = f"{file}"
        if row is not None:
            where += f": row {row}"
            if vid:
                where += f" (id {vid})"
        self.lines.append(f"{where}: {cause}")

    def raise_if_any(self) -> None:
        if self.lines:
            raise LayoutError(self.lines)


def canonical_id(file_id: str) -> str:
    """Feature-store key of a video id: whitespace and ABAW's brackets removed (``'[00001]'`` -> ``'00001'``)."""
    vid = str(file_id).strip()
    if len(vid) >= 2 and vid[0] == "[" and vid[-1] == "]":
        vid = vid[1:-1].strip()
    return vid


def normalise_split(value: str) -> str | None:
    """``'Train'``/``'devel'``/``'Val'``... -> ``'train'``/``'val'``/``'test'``; ``None`` when unknown."""
    return SPLIT_ALIASES.get(str(value).strip().lower())


@dataclass
class VideoTable:
    """One row per video: ids, split, labels and optional groups / media paths.

    Attributes:
        ids: canonical ids, the keys of the feature store (``'[00001]'`` -> ``'00001'``).
        file_ids: ids exactly as written in the source file (written back into output files).
        splits: ``'train'``, ``'val'`` or ``'test'`` per row.
        label_names: column names of ``labels`` (regression) or class names (classification).
        task: ``'regression'`` or ``'classification'``.
        labels: regression (N, K) float32, NaN only in test rows; classification (N,) int64 class index,
            -1 for unlabelled test rows; ``None`` for a table without labels.
        groups: speaker / subject per row for grouped cross-validation, or ``None``.
        paths: media file per row when the layout names one, or ``None``.
        source: the file the rows were read from; ``rows`` are its line numbers (header = 1).
        extra: other columns kept as strings (e.g. ``Age``, ``Country``).
    """

    ids: list[str]
    file_ids: list[str]
    splits: list[str]
    label_names: tuple[str, ...]
    task: str
    labels: np.ndarray | None
    groups: list[str] | None = None
    paths: list[Path | None] | None = None
    source: Path | None = None
    rows: list[int] | None = None
    extra: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.ids)
        if self.task not in ("regression", "classification"):
            raise ValueError(f"task must be 'regression' or 'classification', got {self.task!r}")
        for name in ("file_ids", "splits", "groups", "paths", "rows"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"VideoTable.{name} has {len(value)} entries for {n} ids")
        bad = sorted(set(self.splits) - set(SPLITS))
        if bad:
            raise ValueError(f"VideoTable.splits holds unknown split(s) {bad}; valid: {', '.join(SPLITS)}")
        self.label_names = tuple(self.label_names)
        if self.labels is not None:
            if self.task == "regression":
                self.labels = np.asarray(self.labels, dtype=np.float32).reshape(n, len(self.label_names))
            else:
                self.labels = np.asarray(self.labels, dtype=np.int64).reshape(n)

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, index) -> "VideoTable":
        """A new table holding the rows ``index`` (integer array or boolean mask)."""
        idx = np.arange(len(self))[np.asarray(index)]

        def pick(seq):
            return None if seq is None else [seq[i] for i in idx]

        return replace(
            self, ids=pick(self.ids), file_ids=pick(self.file_ids), splits=pick(self.splits),
            labels=None if self.labels is None else self.labels[idx], groups=pick(self.groups),
            paths=pick(self.paths), rows=pick(self.rows), extra={k: pick(v) for k, v in self.extra.items()})

    def subset(self, split: str | list[str]) -> "VideoTable":
        """Rows of one split or several (``'train'``, ``['train', 'val']``; ABAW/MuSe spellings accepted)."""
        wanted = [split] if isinstance(split, str) else list(split)
        names = []
        for s in wanted:
            norm = normalise_split(s)
            if norm is None:
                raise ValueError(f"unknown split {s!r}; valid: {', '.join(SPLITS)}")
            names.append(norm)
        return self.select(np.array([s in names for s in self.splits], dtype=bool))

    def index_of(self) -> dict[str, int]:
        """Canonical id -> row index."""
        return {vid: i for i, vid in enumerate(self.ids)}

    def _row_label(self, i: int) -> int | None:
        return self.rows[i] if self.rows is not None else i + 2

    def check_features(self, feature_sets: dict[str, "FeatureSet"]) -> None:
        """Raise one :class:`LayoutError` listing every video that lacks features in any of the sets."""
        from affectfuse.data.store import safe_name

        present = {}
        for name, fs in feature_sets.items():
            try:
                present[name] = {e.name for e in os.scandir(fs.path)}
            except OSError as exc:
                raise LayoutError(f"{fs.path}: feature set {name!r} cannot be listed ({exc})") from exc
        problems = _Problems()
        source = self.source or "<table>"
        for i, vid in enumerate(self.ids):
            missing = [name for name, fs in feature_sets.items()
                       if fs.file_for(vid).name not in present[name] and f"{safe_name(vid)}.npz" not in present[name]]
            if missing:
                where = ", ".join(f"{m!r} ({feature_sets[m].path})" for m in missing)
                problems.add(source, self._row_label(i), self.file_ids[i], f"no features in {where}")
        problems.raise_if_any()


# -- reading helpers ----------------------------------------------------------------------------

def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and ``(line number, cells)`` of a CSV file; blank lines skipped, cells stripped."""
    path = Path(path)
    if not path.is_file():
        raise LayoutError(f"{path}: file not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            rows = []
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue
                cells = [c.strip() for c in cells] + [""] * (len(header) - len(cells))
                rows.append((reader.line_num, cells))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise LayoutError(f"{path}: unreadable CSV ({exc})") from exc
    if not header or not any(header):
        raise LayoutError(f"{path}: empty file (no header line)")
    return header, rows


def _find(header: list[str], *names: str) -> int | None:
    """Index of the first column whose name matches one of ``names`` (case-insensitive)."""
    lower = [h.lower() for h in header]
    for name in names:
        if name.lower() in lower:
            return lower.index(name.lower())
    return None


def _eri_columns(header: list[str], path: Path) -> list[int]:
    """Column index of each ERI emotion, in ``ERI_EMOTIONS`` order (``Empathic Pain`` spellings accepted)."""
    found: dict[int, int] = {}
    for col, name in enumerate(header):
        try:
            found.setdefault(eri_index(name), col)
        except KeyError:
            continue
    missing = [e for k, e in enumerate(ERI_EMOTIONS) if k not in found]
    if missing:
        raise LayoutError(f"{path}: missing emotion column(s) {', '.join(missing)} (columns: {', '.join(header)})")
    return [found[k] for k in range(len(ERI_EMOTIONS))]


def _parse_number(text: str) -> float | None:
    """Float value of a cell; NaN for an empty cell; ``None`` when it is not a number."""
    if text == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        return None


def _parse_intensities(cells: list[str], cols: list[int], names, split: str, unit_range: bool):
    """(values, causes) of one row's label cells; test rows may be blank."""
    values, causes, blank = [], [], []
    for col, name in zip(cols, names):
        value = _parse_number(cells[col])
        if value is None:
            causes.append(f"{name} = {cells[col]!r} is not a number")
            value = math.nan
        elif math.isnan(value):
            blank.append(name)
        elif math.isinf(value) or (unit_range and not 0.0 <= value <= 1.0):
            causes.append(f"{name} = {cells[col]} outside [0, 1]" if unit_range else f"{name} is infinite")
        values.append(value)
    if blank and split != "test":
        causes.append(f"missing or NaN label ({', '.join(blank)}) in a {split} row")
    return values, causes


def _split_of(cell: str, problems: _Problems, path, line, fid, expected: str) -> str:
    split = normalise_split(cell)
    if split is None:
        problems.add(path, line, fid, f"unknown split {cell!r} (expected {expected})")
        return "test"
    return split


def _check_id(fid: str, vid: str, seen: dict[str, int], problems: _Problems, path, line) -> bool:
    if not vid:
        problems.add(path, line, fid or None, "empty id")
        return False
    if vid in seen:
        problems.add(path, line, fid, f"duplicate id (first in row {seen[vid]})")
        return False
    seen[vid] = line
    return True
