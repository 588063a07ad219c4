"""The ERI prediction file (ABAW5 submission format) and its checker.

Format: a CSV with header ``File_ID,Adoration,Amusement,Anxiety,Disgust,Empathic-Pain,Fear,Surprise`` and
one row per video, intensities in [0, 1]. ``File_ID`` is written exactly as the dataset names the video
(``[00001]`` for Hume-Reaction). A sidecar ``<file>.json`` states the label names, the scale and the
provenance (run, checkpoint, feature sets) handed in by the caller.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from affectfuse.data.layouts import canonical_id
from affectfuse.labels import ERI_EMOTIONS, ERI_SCALE
from affectfuse.utils import write_json_atomic, write_text_atomic

ID_COLUMN = "File_ID"
CLIP_TOLERANCE = 1e-6  # predictions this far outside [0, 1] are clipped silently; further -> error


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_eri_predictions(path: str | Path, file_ids, preds, label_names=ERI_EMOTIONS,
                          provenance: dict | None = None) -> Path:
    """Atomically write an ERI prediction CSV and its ``<path>.json`` sidecar.

    Args:
        path: target CSV.
        file_ids: N video ids as the dataset writes them (e.g. ``'[00001]'``).
        preds: (N, 7) intensities in [0, 1]; values within 1e-6 of the range are clipped into it.
        label_names: column names, default ``ERI_EMOTIONS``.
        provenance: optional facts about where the predictions come from (run, checkpoint, features).

    Raises:
        ValueError: on a shape mismatch, duplicate ids, NaN, or values outside [0, 1].
    """
    path = Path(path)
    file_ids = [str(f) for f in file_ids]
    label_names = tuple(label_names)
    preds = np.asarray(preds, dtype=np.float64)
    if preds.ndim != 2 or preds.shape != (len(file_ids), len(label_names)):
        raise ValueError(f"{path}: predictions of shape {preds.shape} for {len(file_ids)} ids and "
                         f"{len(label_names)} emotions (expected ({len(file_ids)}, {len(label_names)}))")
    problems = []
    dup = _duplicates(file_ids)
    if dup:
        problems.append(f"duplicate ids: {_some(dup, 10)}")
    if not np.isfinite(preds).all():
        rows = np.flatnonzero(~np.isfinite(preds).all(axis=1))
        problems.append(f"NaN or infinite predictions for ids {', '.join(file_ids[i] for i in rows[:10])}")
    elif (preds < -CLIP_TOLERANCE).any() or (preds > 1 + CLIP_TOLERANCE).any():
        rows = np.flatnonzero(((preds < -CLIP_TOLERANCE) | (preds > 1 + CLIP_TOLERANCE)).any(axis=1))
        problems.append(f"predictions outside [0, 1] for ids {', '.join(file_ids[i] for i in rows[:10])}")
    if problems:
        raise ValueError(f"{path}: refusing to write: " + "; ".join(problems))
    preds = np.clip(preds, 0.0, 1.0)

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([ID_COLUMN, *label_names])
    for fid, row in zip(file_ids, preds):
        writer.writerow([fid, *(f"{v:.6f}" for v in row)])
    write_json_atomic(sidecar_path(path), {
        "format": "ERI predictions (ABAW5)", "file": path.name, "id_column": ID_COLUMN,
        "label_names": list(label_names), "scale": ERI_SCALE, "videos": len(file_ids),
        "provenance": provenance or {},
    })
    write_text_atomic(path, buf.getvalue())
    return path


def _duplicates(ids: list[str]) -> list[str]:
    seen, dup = set(), []
    for i in ids:
        if i in seen and i not in dup:
            dup.append(i)
        seen.add(i)
    return dup


def _read(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    if not path.is_file():
        raise ValueError(f"{path}: prediction file not found")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        rows = [(reader.line_num, [c.strip() for c in cells]) for cells in reader if any(c.strip() for c in cells)]
    return header, rows


def _check(path: Path, header, rows, label_names, expected_ids) -> tuple[list[str], list[str], np.ndarray]:
    """(problems, file ids, (N, K) values with NaN where unreadable)."""
    problems = []
    expected_header = [ID_COLUMN, *label_names]
    if header != expected_header:
        problems.append(f"wrong header {','.join(header)!r}; expected {','.join(expected_header)!r}")
    k = len(label_names)
    ids, values, first = [], np.full((len(rows), k), np.nan), {}
    for n, (line, cells) in enumerate(rows):
        fid = cells[0] if cells else ""
        ids.append(fid)
        if len(cells) != k + 1:
            problems.append(f"row {line} (id {fid}): {len(cells)} cells, expected {k + 1}")
        if fid in first:
            problems.append(f"row {line} (id {fid}): duplicate id (first in row {first[fid]})")
        first.setdefault(fid, line)
        bad = []
        for j, cell in enumerate(cells[1:k + 1]):
            try:
                values[n, j] = float(cell)
            except ValueError:
                pass
            v = values[n, j]
            if math.isnan(v) or not 0.0 <= v <= 1.0:
                bad.append(f"{label_names[j]}={cell!r}")
        if bad:
            problems.append(f"row {line} (id {fid}): NaN or out of [0, 1]: {', '.join(bad)}")
    if not rows:
        problems.append("no prediction rows")
    if expected_ids is not None:
        have = {canonical_id(i) for i in ids}
        want = [str(i) for i in expected_ids]
        want_canon = {canonical_id(i) for i in want}
        missing = [i for i in want if canonical_id(i) not in have]
        extra = [i for i in ids if canonical_id(i) not in want_canon]
        if missing:
            problems.append(f"{len(missing)} missing ids: {_some(missing)}")
        if extra:
            problems.append(f"{len(extra)} unexpected ids: {_some(extra)}")
    return problems, ids, values


def _some(ids: list[str], n: int = 20) -> str:
    return ", ".join(ids[:n]) + (" ..." if len(ids) > n else "")


def validate_eri_predictions(path: str | Path, expected_ids=None, label_names=ERI_EMOTIONS) -> None:
    """Check an ERI prediction CSV; raise one ``ValueError`` listing every problem (one per line).

    Checks: the exact header, one row per video (no duplicates), every value a number in [0, 1], and,
    when ``expected_ids`` is given, exactly those videos (``'[00001]'`` and ``'00001'`` count as the same).
    """
    path = Path(path)
    header, rows = _read(path)
    problems, _, _ = _check(path, header, rows, tuple(label_names), expected_ids)
    if problems:
        raise ValueError(f"{path}: invalid ERI prediction file:\n" + "\n".join(f"{path}: {p}" for p in problems))


def read_eri_predictions(path: str | Path, label_names=ERI_EMOTIONS) -> tuple[list[str], np.ndarray]:
    """``(file_ids, preds)`` of a valid ERI prediction CSV; preds (N, 7) float32 in file column order.

    Raises ``ValueError`` (as :func:`validate_eri_predictions`) when the file is invalid.
    """
    path = Path(path)
    header, rows = _read(path)
    problems, ids, values = _check(path, header, rows, tuple(label_names), None)
    if problems:
        raise ValueError(f"{path}: invalid ERI prediction file:\n" + "\n".join(f"{path}: {p}" for p in problems))
    return ids, values.astype(np.float32)


def read_sidecar(path: str | Path) -> dict | None:
    """The ``<path>.json`` sidecar of a prediction file, or ``None`` when there is none."""
    side = sidecar_path(path)
    return json.loads(side.read_text()) if side.is_file() else None
