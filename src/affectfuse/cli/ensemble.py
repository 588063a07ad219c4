"""``affectfuse ensemble``: average several runs' prediction files into one (the paper's ensemble).

    affectfuse ensemble run1/val_predictions.csv run2/val_predictions.csv --out ens.csv \\
        [--weights 0.5,0.5] [--table data_info.csv --split val]

Every input must be of the same kind, told by its header; ``KINDS`` maps a kind to a header test and
an averaging function ``(paths, weights, args) -> int``. Kinds today:

- ``eri``: ERI prediction CSVs (``File_ID`` + the 7 emotions). The ids of every file must match (rows
  may come in any order); the weighted mean is written in the first file's row order. With ``--table``,
  the ensemble and each member are scored on the table's ``--split`` and one JSON line is printed.

A new kind (e.g. per-frame EXPR probability CSVs) is added by one entry in ``KINDS``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

HELP = "average prediction files of several runs (ERI CSVs) and score the ensemble"


@dataclass(frozen=True)
class Kind:
    """A prediction-file kind: ``matches(header) -> bool`` and ``run(paths, weights, args) -> exit code``."""

    description: str
    matches: Callable[[list[str]], bool]
    run: Callable[[list[Path], np.ndarray, argparse.Namespace], int]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="PRED.csv", help="prediction files of several runs")
    parser.add_argument("--out", required=True, type=Path, metavar="ENS.csv", help="ensemble file to write")
    parser.add_argument("--weights", default=None, metavar="W1,W2,...",
                        help="one non-negative weight per file (normalised to sum 1; default: equal)")
    parser.add_argument("--table", default=None, type=Path,
                        help="label table (data_info.csv, MuSe folder or manifest) to score the ensemble on")
    parser.add_argument("--split", default="val", help="split of --table to score (default: val)")


def parse_weights(text: str | None, n: int) -> np.ndarray:
    """(n,) weights summing to 1 from ``'w1,w2,...'`` (``None`` -> equal weights)."""
    if text is None:
        return np.full(n, 1.0 / n)
    try:
        w = np.array([float(x) for x in text.split(",")], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"--weights {text!r}: not a comma-separated list of numbers") from exc
    if w.shape[0] != n:
        raise ValueError(f"--weights gives {w.shape[0]} weights for {n} files")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"--weights {text!r}: weights must be non-negative with a positive sum")
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


# -- ERI -------------------------------------------------------------------------------------------

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


def run_eri(paths: list[Path], weights: np.ndarray, args: argparse.Namespace) -> int:
    from affectfuse.outputs.eri_csv import read_sidecar, write_eri_predictions

    ids, ensemble, members = average_eri(paths, weights)
    provenance = {"ensemble_of": [str(p) for p in paths], "weights": weights.tolist(),
                  "members": [read_sidecar(p) for p in paths]}
    if args.table is not None:
        named = {"ensemble": ensemble, **{str(p): m for p, m in zip(paths, members)}}
        scored, videos = score_eri(args.table, args.split, ids, named)
        line = {**scored["ensemble"], "split": args.split, "videos": videos,
                "members": [{"file": str(p), "mean_pearson": scored[str(p)]["mean_pearson"]} for p in paths],
                "weights": weights.tolist(), "out": str(args.out)}
        provenance["metrics"] = line
    write_eri_predictions(args.out, ids, ensemble, provenance=provenance)
    if args.table is not None:
        print(json.dumps(line))
    return 0


# -- EXPR (per-frame probability CSVs of affectfuse expr predict; averaging in affectfuse.cli.expr) ---

def _is_expr(header: list[str]) -> bool:
    from affectfuse.outputs.expr_files import is_probability_header

    return is_probability_header(header)


def _run_expr(paths: list[Path], weights: np.ndarray, args: argparse.Namespace) -> int:
    from affectfuse.cli.expr import run_ensemble

    return run_ensemble(paths, weights, args)


KINDS: dict[str, Kind] = {
    "eri": Kind("ERI prediction CSV (File_ID + 7 emotions)", _is_eri, run_eri),
    "expr": Kind("EXPR per-frame probability CSV (video, frame + 8 class columns)", _is_expr, _run_expr),
}


def run(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.files]
    kinds = {p: detect_kind(p) for p in paths}
    if len(set(kinds.values())) > 1:
        raise ValueError("cannot mix prediction file kinds: " + ", ".join(f"{p} ({k})" for p, k in kinds.items()))
    weights = parse_weights(args.weights, len(paths))
    return KINDS[kinds[paths[0]]].run(paths, weights, args)
