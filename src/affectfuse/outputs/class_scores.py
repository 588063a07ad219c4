"""Files of classification results: scores (``scores.json``, ``per_class.csv``, ``confusion.png``) and per-item
probability CSVs with the class names as columns. Every write is atomic."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from affectfuse.outputs.plots import plot_confusion
from affectfuse.utils import write_json_atomic, write_text_atomic


def write_scores(out: str | Path, scores: dict, title: str, prefix: str = "") -> None:
    """``<prefix>scores.json``, ``<prefix>per_class.csv`` (class, f1, precision, recall, support) and
    ``<prefix>confusion.png`` in ``out``, from :func:`affectfuse.metrics.classification.classification_scores`."""
    out = Path(out)
    write_json_atomic(out / f"{prefix}scores.json", scores)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["class", "f1", "precision", "recall", "support"])
    for name, s in scores["per_class"].items():
        w.writerow([name, f"{s['f1']:.4f}", f"{s['precision']:.4f}", f"{s['recall']:.4f}", s["support"]])
    write_text_atomic(out / f"{prefix}per_class.csv", buf.getvalue())
    plot_confusion(scores["confusion"], scores["class_names"], out / f"{prefix}confusion.png", title=title)


def write_item_probabilities(path: str | Path, ids: Sequence[str], probs, class_names: Sequence[str],
                             truth=None) -> None:
    """CSV ``id, <class probabilities>, predicted[, label]``: probs (N, C) per item, truth (N,) class indices
    (-1: unlabelled, an empty cell)."""
    probs = np.asarray(probs)
    df = pd.DataFrame(probs, columns=list(class_names))
    df.insert(0, "id", list(ids))
    df["predicted"] = np.asarray(class_names)[probs.argmax(1)]
    if truth is not None:
        df["label"] = [class_names[int(k)] if int(k) >= 0 else "" for k in truth]
    write_text_atomic(path, df.to_csv(index=False, float_format="%.6f"))


def write_cv_probabilities(path: str | Path, table, probs: dict, class_names: Sequence[str]) -> None:
    """Out-of-fold CSV ``id, group, label, model_<class>..., probe_<class>..., model_predicted, probe_predicted``;
    ``probs[kind]`` is (N, C) in the manifest ``table``'s row order."""
    df = pd.DataFrame({"id": table.file_ids, "group": table.groups if table.groups is not None else "",
                       "label": [class_names[int(k)] for k in table.labels]})
    for kind in ("model", "probe"):
        for j, name in enumerate(class_names):
            df[f"{kind}_{name}"] = probs[kind][:, j]
    for kind in ("model", "probe"):
        df[f"{kind}_predicted"] = np.asarray(class_names)[probs[kind].argmax(1)]
    write_text_atomic(path, df.to_csv(index=False, float_format="%.6f"))
