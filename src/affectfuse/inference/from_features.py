"""Predictions from extracted feature sets (no video decoding): an ERI checkpoint scored or applied on the feature
sets it was trained on, and the kind of an EXPR checkpoint (per-frame model or per-item classifier).

Plain inputs and outputs (paths, ``{name: folder}`` dicts, arrays, dicts) so that the CLI (``affectfuse eri
evaluate|predict``) and the Python API call the same functions.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Mapping

import numpy as np

from affectfuse.data.layouts import load_table
from affectfuse.outputs.eri_csv import write_eri_predictions
from affectfuse.training.checkpoint import load_checkpoint, model_from_checkpoint, read_checkpoint
from affectfuse.training.eri import predict
from affectfuse.training.items import ITEMS_FORMAT
from affectfuse.training.run import checkpoint_data, open_feature_sets, per_emotion_results
from affectfuse.utils import write_text_atomic


def _provenance(ckpt: dict) -> dict:
    sets = ckpt["feature_sets"]
    return {"checkpoint": ckpt["path"], "model": ckpt["model"]["name"],
            "feature_sets": {k: v.get("name", k) for k, v in sets.items()},
            "random_weights": any(bool(v.get("random_weights")) for v in sets.values())}


def eri_predictions(ckpt: dict, model, features: Mapping[str, str | Path], table: str | Path | None = None,
                    split: str | None = "test"):
    """``(data, pred)``: the checkpoint's inputs read from ``features`` ({name: folder}, the sets it was trained
    on; with ``table``, its ``split`` in table order, else every video in all sets) and ``model``'s
    intensities for them, ``pred`` (N, 7) in [0, 1] in ``data.file_ids`` order. Random-weight vs real
    features is an error (``checkpoint_data``)."""
    tab = load_table(table) if table is not None else None
    data = checkpoint_data(ckpt, open_feature_sets({k: Path(v) for k, v in features.items()}), tab,
                           split if tab is not None else None)
    return data, predict(model, data)


def predict_from_features(checkpoint: str | Path, features: Mapping[str, str | Path], out: str | Path,
                          table: str | Path | None = None, split: str | None = "test") -> dict:
    """ERI intensities of every video the feature sets cover (or of a table's ``split``, in table order).

    Args:
        checkpoint: ``best.pt`` or its run folder.
        features: feature-set name -> folder, the sets the checkpoint was trained on.
        out: the ERI CSV to write (``File_ID`` + the checkpoint's label names, values in [0, 1]).
    Returns:
        ``{"out", "videos", "label_names"}``.
    """
    ckpt = load_checkpoint(checkpoint)
    data, pred = eri_predictions(ckpt, model_from_checkpoint(ckpt), features, table, split)
    provenance = _provenance(ckpt)
    if table is not None:
        provenance.update(table=str(table), split=split)
    write_eri_predictions(out, data.file_ids, pred, label_names=tuple(ckpt["label_names"]), provenance=provenance)
    return {"out": str(out), "videos": len(data), "label_names": list(ckpt["label_names"])}


def evaluate_from_features(checkpoint: str | Path, features: Mapping[str, str | Path], table: str | Path,
                           split: str = "val", results: str | Path | None = None,
                           predictions: str | Path | None = None) -> dict:
    """Score an ERI checkpoint on the labelled ``split`` of ``table``.

    Writes the per-emotion results CSV (``emotion, pearson, mse, mean_true, mean_pred``) to ``results``
    (default ``<run>/eval_<split>.csv``) and, with ``predictions``, the predictions as an ERI CSV.
    Returns ``{"checkpoint", "split", "mean_pearson", "mse", "pearson": {emotion: r}, "n_videos", "results"}``.
    """
    ckpt = load_checkpoint(checkpoint)
    data, pred = eri_predictions(ckpt, model_from_checkpoint(ckpt), features, table, split)
    if data.labels is None:
        raise ValueError(f"{table}: split {split!r} has no labels to evaluate against")
    if list(data.label_names) != list(ckpt["label_names"]):
        raise ValueError(f"{table}: labels {data.label_names} differ from the checkpoint's {ckpt['label_names']}")
    metrics, rows = per_emotion_results(data.labels.numpy(), pred, data.label_names)
    ckpt_path = Path(ckpt["path"])
    out = Path(results) if results else ckpt_path.parent / f"eval_{split}.csv"
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(out, buf.getvalue())
    if predictions:
        write_eri_predictions(predictions, data.file_ids, np.asarray(pred), label_names=tuple(data.label_names),
                              provenance={"checkpoint": str(ckpt_path), "split": split})
    return {"checkpoint": str(ckpt_path), "split": split, **metrics, "results": str(out)}


def item_checkpoint(path: str | Path) -> dict | None:
    """The item-classifier checkpoint dict at ``path`` (``affectfuse classify train``), or None when the file is
    a per-frame EXPR checkpoint (or unreadable: the frame loader then names the problem)."""
    try:
        return read_checkpoint(path, ITEMS_FORMAT, "EXPR item checkpoint")
    except (ValueError, FileNotFoundError):
        return None
