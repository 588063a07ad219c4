"""Ensembles of several runs' prediction files: the weighted mean, scored when labels are given.

Every input must be of the same kind, told by its header (:data:`KINDS`):

- ``eri``: ERI prediction CSVs (``File_ID`` + the 7 emotions). The ids of every file must match (rows may come
  in any order); the weighted mean is written in the first file's row order, with the members' provenance. With
  a table, the ensemble and each member are scored (mean Pearson) on the table's split.
- ``expr``: per-frame EXPR probability CSVs (``affectfuse expr predict``): the weighted mean of the runs'
  per-frame probabilities (the paper's Table 4 ensemble). With an Aff-Wild2 annotation folder, the ensemble and
  each member are scored (macro F1).

:func:`ensemble` is the entry point (paths and weights in, the scores out); ``affectfuse ensemble`` calls it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

@dataclass(frozen=True)
class Kind:
    """A prediction-file kind: ``matches(header) -> bool`` and ``run(paths, out, weights, labels, split)``
    writing the ensemble and returning its scores (None without labels)."""

    description: str
    matches: Callable[[list[str]], bool]
    run: Callable[..., dict | None]


def normalise_weights(weights, n: int) -> np.ndarray:
    """(n,) weights summing to 1 from ``n`` non-negative numbers (``None`` -> equal weights)."""
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape[0] != n:
        raise ValueError(f"ensemble: {w.shape[0]} weights for {n} files")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"ensemble weights {w.tolist()}: must be non-negative with a positive sum")
    return w / w.sum()


def read_header(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prediction file not found")
    with open(path, encoding="utf-8-sig") as fh:
        return [h.strip() for h in fh.readline().strip().split(",")]


def detect_kind(path: Path) -> str:
    """The ``KINDS`` key whose header test accepts ``path``; ``ValueError`` when none does."""
    header = read_header(path)
    for name, kind in KINDS.items():
        if kind.matches(header):
            return name
    known = "; ".join(f"{k}: {v.description}" for k, v in KINDS.items())
    raise ValueError(f"{path}: unknown prediction file kind (header {','.join(header[:4])}...); known: {known}")


def _is_eri(header: list[str]) -> bool:
    from affectfuse.labels import ERI_EMOTIONS

    return header == ["File_ID", *ERI_EMOTIONS]


def average_eri(paths: list[Path], weights: np.ndarray) -> tuple[list[str], np.ndarray, list[np.ndarray]]:
    """Weighted mean of ERI prediction files.

    Returns the first file's ids, the (N, 7) ensemble and each member's (N, 7) predictions aligned to
    those ids. Raises ``ValueError`` naming every file whose ids differ from the first file's.
    """
    from affectfuse.data.layouts import canonical_id
    from affectfuse.outputs.eri_csv import read_eri_predictions

    ids, first = read_eri_predictions(paths[0])
    key = [canonical_id(i) for i in ids]
    members, problems = [first], []
    for path in paths[1:]:
        other_ids, preds = read_eri_predictions(path)
        row = {canonical_id(i): n for n, i in enumerate(other_ids)}
        missing = [i for i, k in zip(ids, key) if k not in row]
        extra = sorted(set(row) - set(key))
        if missing or extra:
            problems.append(f"{path}: ids differ from {paths[0]}: {len(missing)} missing "
                            f"({', '.join(missing[:5])}), {len(extra)} extra ({', '.join(extra[:5])})")
            continue
        members.append(preds[[row[k] for k in key]])
    if problems:
        raise ValueError("\n".join(problems))
    stack = np.stack(members).astype(np.float64)                                  # (M, N, 7)
    return ids, np.tensordot(weights, stack, axes=1), members


def score_eri(table_path: Path, split: str, ids: list[str], preds: dict[str, np.ndarray]) -> tuple[dict, int]:
    """(metrics of each named (N, 7) prediction array, number of videos) on the ``split`` rows of a table.

    Every labelled video of the split needs a prediction; predictions of other videos are ignored."""
    from affectfuse.data.layouts import canonical_id, load_table
    from affectfuse.labels import ERI_EMOTIONS
    from affectfuse.metrics.regression import eri_metrics

    table = load_table(table_path).subset(split)
    if len(table) == 0:
        raise ValueError(f"{table_path}: no {split!r} rows to score")
    if tuple(table.label_names) != ERI_EMOTIONS:
        raise ValueError(f"{table_path}: label columns {table.label_names} are not the 7 ERI emotions")
    row = {canonical_id(i): n for n, i in enumerate(ids)}
    missing = [f for f, i in zip(table.file_ids, table.ids) if i not in row]
    if missing:
        raise ValueError(f"{table_path}: {len(missing)} {split} videos have no prediction: {', '.join(missing[:20])}")
    unlabelled = [f for f, y in zip(table.file_ids, table.labels) if not np.isfinite(y).all()]
    if unlabelled:
        raise ValueError(f"{table_path}: {len(unlabelled)} {split} videos have no labels: {', '.join(unlabelled[:20])}")
    take = [row[i] for i in table.ids]
    return {name: eri_metrics(table.labels, p[take], ERI_EMOTIONS) for name, p in preds.items()}, len(take)


def _is_expr(header: list[str]) -> bool:
    from affectfuse.outputs.expr_files import is_probability_header

    return is_probability_header(header)


def ensemble_eri(paths: list[Path], out: Path, weights: np.ndarray, table: Path | None = None,
                 split: str = "val") -> dict | None:
    """Write the weighted mean of ERI prediction files to ``out``; with ``table``, the scores of the ensemble
    and of each member on its ``split`` (also stored in the output's provenance), else None."""
    from affectfuse.outputs.eri_csv import read_sidecar, write_eri_predictions

    ids, mean, members = average_eri(paths, weights)
    provenance = {"ensemble_of": [str(p) for p in paths], "weights": weights.tolist(),
                  "members": [read_sidecar(p) for p in paths]}
    line = None
    if table is not None:
        named = {"ensemble": mean, **{str(p): m for p, m in zip(paths, members)}}
        scored, videos = score_eri(table, split, ids, named)
        line = {**scored["ensemble"], "split": split, "videos": videos,
                "members": [{"file": str(p), "mean_pearson": scored[str(p)]["mean_pearson"]} for p in paths],
                "weights": weights.tolist(), "out": str(out)}
        provenance["metrics"] = line
    write_eri_predictions(out, ids, mean, provenance=provenance)
    return line


def ensemble_expr(paths: list[Path], out: Path, weights: np.ndarray, annotations: Path | None = None,
                  split: str | None = None) -> dict | None:
    """Write the weighted mean of per-frame EXPR probability files to ``out``; with ``annotations`` (an
    Aff-Wild2 ``<video>.txt`` folder), the macro F1 of the ensemble and of each member, else None.
    ``split`` is unused (the annotation folder is the split)."""
    from affectfuse.data.affwild2 import read_expr_folder
    from affectfuse.metrics.classification import expr_macro_f1
    from affectfuse.outputs.expr_files import ensemble_probability_files, labels_at, read_probabilities

    ensemble_probability_files(paths, out, weights)
    if annotations is None:
        return None
    labels = read_expr_folder(annotations)

    def score(path) -> float:
        probs = read_probabilities(path)
        missing = sorted(set(labels) - set(probs))
        if missing:
            raise ValueError(f"{path}: no predictions for {len(missing)} annotated video(s): {missing[:10]}")
        y = [labels[v] for v in labels]
        p = [labels_at(probs[v][0], probs[v][1].argmax(1), np.arange(1, len(labels[v]) + 1)) for v in labels]
        return expr_macro_f1(np.concatenate(y), np.concatenate(p))

    return {"macro_f1": round(score(out), 4), "videos": len(labels), "out": str(out),
            "members": [{"file": str(p), "macro_f1": round(score(p), 4)} for p in paths],
            "weights": [float(w) for w in weights]}


KINDS: dict[str, Kind] = {
    "eri": Kind("ERI prediction CSV (File_ID + 7 emotions)", _is_eri, ensemble_eri),
    "expr": Kind("EXPR per-frame probability CSV (video, frame + 8 class columns)", _is_expr, ensemble_expr),
}


def ensemble(paths: Sequence[str | Path], out: str | Path, weights: Sequence[float] | None = None,
             labels: str | Path | None = None, split: str = "val") -> tuple[str, dict | None]:
    """Average prediction files of one kind into ``out``.

    Args:
        paths: the members' prediction files (all of one kind).
        out: the ensemble file to write.
        weights: one non-negative weight per file (normalised to sum 1; default: equal).
        labels: ERI: a label table (data_info.csv, MuSe folder, manifest) scored on ``split``; EXPR: an
            Aff-Wild2 annotation folder. None: write only.
    Returns:
        (kind, scores of the ensemble and each member, or None without ``labels``).
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("an ensemble needs at least one prediction file")
    kinds = {p: detect_kind(p) for p in paths}
    if len(set(kinds.values())) > 1:
        raise ValueError("cannot mix prediction file kinds: " + ", ".join(f"{p} ({k})" for p, k in kinds.items()))
    kind = kinds[paths[0]]
    w = normalise_weights(weights, len(paths))
    return kind, KINDS[kind].run(paths, Path(out), w, None if labels is None else Path(labels), split)
