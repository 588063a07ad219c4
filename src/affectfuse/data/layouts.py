"""Dataset layouts: the label tables users arrive with, parsed and validated into one :class:`VideoTable`.

Three layouts (``LAYOUTS``; :func:`load_table` picks one from the files):

- ``abaw5``: ABAW5 Hume-Reaction ``data_info.csv`` -- ``File_ID`` (``[00001]``, brackets included),
  ``Split`` (Train / Val / Test), the 7 emotions (``Empathic-Pain`` hyphenated), ``Age``, ``Country``.
- ``muse``: MuSe-2022 ``labels.csv`` (``File_ID`` + 7 emotions) and ``partition.csv``
  (``Id``, ``Partition`` in train / devel / test).
- ``manifest``: a generic CSV for users' own data -- a ``path`` or ``id`` column, optional ``split`` and
  ``group`` (e.g. speaker), and either numeric label columns (regression) or a ``label`` column of
  class names (classification).

Validation collects every bad row before raising, so one :class:`LayoutError` lists all of them, one
per line, as ``<file>: row <n> (id <id>): <cause>``. Row numbers are line numbers of the file as a text
editor shows them (the header is row 1, the first video row 2).
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from affectfuse.labels import ERI_EMOTIONS, EXPR_CLASSES, eri_index

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
        present = {}
        for name, fs in feature_sets.items():
            try:
                present[name] = {e.name for e in os.scandir(fs.path)}
            except OSError as exc:
                raise LayoutError(f"{fs.path}: feature set {name!r} cannot be listed ({exc})") from exc
        problems = _Problems()
        source = self.source or "<table>"
        for i, vid in enumerate(self.ids):
            missing = [name for name, fs in feature_sets.items() if fs.file_for(vid).name not in present[name]]
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


# -- layouts --------------------------------------------------------------------------------------

def load_abaw5(csv_path: str | Path, media_dir: str | Path | None = None) -> VideoTable:
    """Read and validate an ABAW5 ``data_info.csv`` (Hume-Reaction).

    Test rows may leave the emotions blank (NaN labels); train / val rows need all 7 in [0, 1]. When
    ``media_dir`` is given, every video must have ``<media_dir>/<id>.mp4`` (``00001.mp4`` or
    ``[00001].mp4``), recorded in ``paths``.
    """
    path = Path(csv_path)
    header, rows = _read_csv(path)
    id_col, split_col = _find(header, "File_ID", "id"), _find(header, "Split")
    if id_col is None or split_col is None:
        raise LayoutError(f"{path}: an ABAW5 data_info.csv needs File_ID and Split columns "
                          f"(columns: {', '.join(header)})")
    emo_cols = _eri_columns(header, path)
    if media_dir is not None and not Path(media_dir).is_dir():
        raise LayoutError(f"{media_dir}: media folder not found")
    extra_cols = [c for c in range(len(header)) if c not in (id_col, split_col, *emo_cols) and header[c]]
    problems, seen = _Problems(), {}
    ids, file_ids, splits, labels, paths, lines = [], [], [], [], [], []
    extra: dict[str, list[str]] = {header[c]: [] for c in extra_cols}
    for line, cells in rows:
        fid = cells[id_col]
        vid = canonical_id(fid)
        ok = _check_id(fid, vid, seen, problems, path, line)
        split = _split_of(cells[split_col], problems, path, line, fid, "Train, Val or Test")
        values, causes = _parse_intensities(cells, emo_cols, ERI_EMOTIONS, split, unit_range=True)
        for cause in causes:
            problems.add(path, line, fid, cause)
        media = None
        if media_dir is not None and vid:
            candidates = [Path(media_dir) / f"{vid}.mp4", Path(media_dir) / f"{fid}.mp4"]
            media = next((c for c in candidates if c.is_file()), None)
            if media is None:
                problems.add(path, line, fid, f"media file not found: {candidates[0]}")
        if not ok:
            continue
        ids.append(vid), file_ids.append(fid), splits.append(split), labels.append(values)
        paths.append(media), lines.append(line)
        for c in extra_cols:
            extra[header[c]].append(cells[c])
    problems.raise_if_any()
    if not ids:
        raise LayoutError(f"{path}: no video rows")
    return VideoTable(ids, file_ids, splits, ERI_EMOTIONS, "regression",
                      np.asarray(labels, dtype=np.float32).reshape(-1, len(ERI_EMOTIONS)),
                      paths=paths if media_dir is not None else None, source=path, rows=lines, extra=extra)


def load_muse(labels_csv: str | Path, partition_csv: str | Path) -> VideoTable:
    """Read and validate MuSe-2022 ``labels.csv`` (File_ID + 7 emotions) and ``partition.csv``.

    ``partition.csv`` lists every video (``Id``, ``Partition``: train / devel / test; devel -> ``'val'``);
    rows keep its order and ``rows`` are its line numbers. Test videos may be absent from ``labels.csv``.
    """
    lpath, ppath = Path(labels_csv), Path(partition_csv)
    pheader, prows = _read_csv(ppath)
    lheader, lrows = _read_csv(lpath)
    pid_col = _find(pheader, "Id", "File_ID", "video_id")
    part_col = _find(pheader, "Partition", "Split")
    if pid_col is None or part_col is None:
        raise LayoutError(f"{ppath}: a MuSe partition.csv needs Id and Partition columns "
                          f"(columns: {', '.join(pheader)})")
    lid_col = _find(lheader, "File_ID", "Id")
    if lid_col is None:
        raise LayoutError(f"{lpath}: a MuSe labels.csv needs a File_ID column (columns: {', '.join(lheader)})")
    emo_cols = _eri_columns(lheader, lpath)
    problems = _Problems()

    ids, file_ids, splits, lines, seen = [], [], [], [], {}
    for line, cells in prows:
        fid = cells[pid_col]
        vid = canonical_id(fid)
        ok = _check_id(fid, vid, seen, problems, ppath, line)
        split = _split_of(cells[part_col], problems, ppath, line, fid, "train, devel or test")
        if ok:
            ids.append(vid), file_ids.append(fid), splits.append(split), lines.append(line)
    row_of = {vid: i for i, vid in enumerate(ids)}

    labels = np.full((len(ids), len(ERI_EMOTIONS)), np.nan, dtype=np.float32)
    labelled, lseen = np.zeros(len(ids), dtype=bool), {}
    for line, cells in lrows:
        fid = cells[lid_col]
        vid = canonical_id(fid)
        if not _check_id(fid, vid, lseen, problems, lpath, line):
            continue
        if vid not in row_of:
            if vid not in seen:  # (a duplicate partition row is reported there)
                problems.add(lpath, line, fid, f"id not listed in {ppath.name}")
            continue
        i = row_of[vid]
        values, causes = _parse_intensities(cells, emo_cols, ERI_EMOTIONS, splits[i], unit_range=True)
        for cause in causes:
            problems.add(lpath, line, fid, cause)
        labels[i], labelled[i] = values, True
    for i in np.flatnonzero(~labelled):
        if splits[i] != "test":
            problems.add(ppath, lines[i], file_ids[i], f"{splits[i]} video has no labels in {lpath.name}")
    problems.raise_if_any()
    if not ids:
        raise LayoutError(f"{ppath}: no video rows")
    return VideoTable(ids, file_ids, splits, ERI_EMOTIONS, "regression", labels, source=ppath, rows=lines)


_RESERVED = ("path", "id", "split", "group", "label")


def load_manifest(csv_path: str | Path, label_columns: list[str] | None = None) -> VideoTable:
    """Read and validate a generic manifest CSV.

    Columns: ``path`` (media file, relative to the manifest's folder; must exist) and/or ``id`` (the
    feature-store key; defaults to the file stem of ``path``); optional ``split`` (train / val / test and
    the ABAW / MuSe spellings; absent -> every row ``'train'``) and ``group`` (speaker / subject).
    Labels: ``label_columns`` when given; else a ``label`` column of class names -> classification
    (a blank or ``-1`` label marks an unlabelled test row; class names that are all ABAW EXPR classes
    keep the EXPR order, others are sorted); else every other column whose cells are mostly numbers ->
    regression (named after the 7 ERI emotions they are put in ERI order). Other columns go to ``extra``.
    """
    path = Path(csv_path)
    header, rows = _read_csv(path)
    col = {name: _find(header, name) for name in _RESERVED}
    if col["path"] is None and col["id"] is None:
        raise LayoutError(f"{path}: a manifest needs a 'path' or an 'id' column (columns: {', '.join(header)})")
    others = [c for c in range(len(header)) if c not in col.values() and header[c]]
    task, label_cols = "regression", []
    if label_columns is not None:
        label_cols = [_find(header, name) for name in label_columns]
        missing = [n for n, c in zip(label_columns, label_cols) if c is None]
        if missing:
            raise LayoutError(f"{path}: label column(s) {', '.join(missing)} not found (columns: {', '.join(header)})")
    elif col["label"] is not None:
        task = "classification"
    else:
        for c in others:
            filled = [cells[c] for _, cells in rows if cells[c] != ""]
            numeric = sum(_parse_number(v) is not None for v in filled)
            if filled and numeric * 2 > len(filled):
                label_cols.append(c)
    names = [header[c] for c in label_cols]
    try:  # ERI emotions in any order or spelling -> canonical names and order
        order = [eri_index(n) for n in names]
        if sorted(order) == list(range(len(ERI_EMOTIONS))):
            label_cols = [label_cols[order.index(k)] for k in range(len(ERI_EMOTIONS))]
            names = list(ERI_EMOTIONS)
    except KeyError:
        pass
    extra_cols = [c for c in others if c not in label_cols]

    problems, seen = _Problems(), {}
    ids, file_ids, splits, groups, paths, lines, values, classes = [], [], [], [], [], [], [], []
    extra: dict[str, list[str]] = {header[c]: [] for c in extra_cols}
    for line, cells in rows:
        media = None
        if col["path"] is not None:
            media = Path(cells[col["path"]])
            if not media.is_absolute():
                media = path.parent / media
        fid = cells[col["id"]] if col["id"] is not None else (media.stem if cells[col["path"]] else "")
        vid = canonical_id(fid)
        ok = _check_id(fid, vid, seen, problems, path, line)
        if media is not None and not cells[col["path"]]:
            problems.add(path, line, fid, "empty path")
        elif media is not None and not media.is_file():
            problems.add(path, line, fid, f"media file not found: {media}")
        split = "train"
        if col["split"] is not None:
            split = _split_of(cells[col["split"]], problems, path, line, fid, "train, val or test")
        if col["group"] is not None and not cells[col["group"]]:
            problems.add(path, line, fid, "empty group")
        if task == "classification":
            name = cells[col["label"]]
            if name in ("", "-1") and split != "test":
                problems.add(path, line, fid, f"missing label in a {split} row")
            classes.append("" if name == "-1" else name)
        elif label_cols:
            row_values, causes = _parse_intensities(cells, label_cols, names, split, unit_range=False)
            for cause in causes:
                problems.add(path, line, fid, cause)
            values.append(row_values)
        if not ok:
            if task == "classification":
                classes.pop()
            elif label_cols:
                values.pop()
            continue
        ids.append(vid), file_ids.append(fid), splits.append(split), paths.append(media), lines.append(line)
        groups.append(cells[col["group"]] if col["group"] is not None else "")
        for c in extra_cols:
            extra[header[c]].append(cells[c])
    problems.raise_if_any()
    if not ids:
        raise LayoutError(f"{path}: no video rows")

    labels = None
    if task == "classification":
        names = _class_names({c for c in classes if c})
        lookup = {n.lower(): k for k, n in enumerate(names)}
        labels = np.array([lookup[c.lower()] if c else -1 for c in classes], dtype=np.int64)
    elif label_cols:
        labels = np.asarray(values, dtype=np.float32).reshape(len(ids), len(names))
    return VideoTable(ids, file_ids, splits, tuple(names), task, labels,
                      groups=groups if col["group"] is not None else None,
                      paths=paths if col["path"] is not None else None, source=path, rows=lines, extra=extra)


def _class_names(found: set[str]) -> list[str]:
    expr = {c.lower(): c for c in EXPR_CLASSES}
    if found and all(c.lower() in expr for c in found):
        return list(EXPR_CLASSES)
    unique = {c.lower(): c for c in sorted(found)}
    return sorted(unique.values())


def _load_muse_folder(path: str | Path) -> VideoTable:
    folder = Path(path)
    folder = folder.parent if folder.is_file() else folder
    return load_muse(folder / "labels.csv", folder / "partition.csv")


LAYOUTS: dict[str, Callable[..., VideoTable]] = {
    "abaw5": load_abaw5,
    "muse": _load_muse_folder,
    "manifest": load_manifest,
}


def list_layouts() -> list[str]:
    return list(LAYOUTS)


def detect_layout(path: str | Path) -> str:
    """``'abaw5'`` for a data_info.csv-style file, ``'muse'`` for a folder (or labels.csv) with
    labels.csv + partition.csv, ``'manifest'`` for any other CSV file."""
    path = Path(path)
    if path.is_dir():
        if (path / "labels.csv").is_file() and (path / "partition.csv").is_file():
            return "muse"
        if (path / "data_info.csv").is_file():
            return "abaw5"
        raise LayoutError(f"{path}: folder holds neither labels.csv + partition.csv (MuSe) nor data_info.csv (ABAW5)")
    header, _ = _read_csv(path)
    if _find(header, "File_ID") is not None and _find(header, "Split") is not None:
        return "abaw5"
    if path.name == "labels.csv" and (path.parent / "partition.csv").is_file():
        return "muse"
    return "manifest"


def load_table(path: str | Path, kind: str = "auto", media_dir: str | Path | None = None,
               label_columns: list[str] | None = None) -> VideoTable:
    """Load a dataset table of layout ``kind`` (``'auto'`` detects it, see :func:`detect_layout`)."""
    path = Path(path)
    if kind == "auto":
        kind = detect_layout(path)
    if kind not in LAYOUTS:
        raise ValueError(f"unknown dataset layout {kind!r}; valid: auto, {', '.join(LAYOUTS)}")
    if kind == "abaw5":
        return load_abaw5(path / "data_info.csv" if path.is_dir() else path, media_dir=media_dir)
    if kind == "manifest":
        return load_manifest(path, label_columns=label_columns)
    return _load_muse_folder(path)
