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

from pathlib import Path
from typing import Callable

import numpy as np

from affectfuse.data.table import (SPLITS, LayoutError, VideoTable, _check_id, _eri_columns, _find,
                                   _parse_intensities, _parse_number, _Problems, _read_csv, _split_of,
                                   canonical_id, normalise_split)
from affectfuse.labels import ERI_EMOTIONS, EXPR_CLASSES, eri_index

__all__ = ["LayoutError", "VideoTable", "canonical_id", "normalise_split", "load_abaw5", "load_muse",
           "load_manifest", "load_table", "detect_layout", "list_layouts", "LAYOUTS", "SPLITS"]


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
