"""Classification metrics for EXPR and for users' own labelled data.

The ABAW EXPR metric is the macro F1 over all 8 classes: every class counts, even one absent from the
split (its F1 is then 0 unless it was also never predicted, in which case it is 0 too: ``zero_division=0``),
and frames whose label is -1 are left out. Everything here comes from one confusion matrix built with
``np.bincount``, so scoring a million frames takes milliseconds; ``tests/test_metrics_classification.py``
checks every figure against scikit-learn.
"""

from __future__ import annotations

import numpy as np

from affectfuse.labels import EXPR_CLASSES, EXPR_IGNORE


def confusion(y_true, y_pred, n_classes: int, ignore: int = EXPR_IGNORE) -> np.ndarray:
    """(C, C) int64 counts, rows = true class, columns = predicted class; ``ignore`` labels dropped.

    Raises ValueError when a label or prediction lies outside ``0..n_classes-1``.
    """
    y_true = np.asarray(y_true).reshape(-1).astype(np.int64)
    y_pred = np.asarray(y_pred).reshape(-1).astype(np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{y_true.size} labels but {y_pred.size} predictions")
    keep = y_true != ignore
    y_true, y_pred = y_true[keep], y_pred[keep]
    for name, arr in (("label", y_true), ("prediction", y_pred)):
        bad = (arr < 0) | (arr >= n_classes)
        if bad.any():
            raise ValueError(f"{int(bad.sum())} {name}s outside 0..{n_classes - 1} (e.g. {int(arr[bad][0])})")
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def scores_from_confusion(cm: np.ndarray, class_names=None) -> dict:
    """All scores from a confusion matrix.

    Returns a dict: ``macro_f1`` (mean F1 over all C classes, zero_division=0), ``uar`` (unweighted
    average recall over the classes present in the labels, = sklearn ``balanced_accuracy_score``),
    ``accuracy``, ``n`` (scored items), ``per_class`` (name -> {f1, precision, recall, support}),
    ``class_names`` and ``confusion`` (nested list, rows = true class).
    """
    cm = np.asarray(cm, dtype=np.int64)
    n_classes = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n_classes)]
    if len(names) != n_classes:
        raise ValueError(f"{len(names)} class names for {n_classes} classes")
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * tp, support + predicted)
    total = float(cm.sum())
    present = support > 0
    return {
        "macro_f1": float(f1.mean()),
        "uar": float(recall[present].mean()) if present.any() else 0.0,
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "n": int(total),
        "per_class": {name: {"f1": float(f1[i]), "precision": float(precision[i]),
                             "recall": float(recall[i]), "support": int(support[i])}
                      for i, name in enumerate(names)},
        "class_names": names,
        "confusion": cm.tolist(),
    }


def classification_scores(y_true, y_pred, n_classes: int | None = None, class_names=None,
                          ignore: int = EXPR_IGNORE) -> dict:
    """Scores of integer predictions against integer labels (see :func:`scores_from_confusion`).

    ``n_classes`` defaults to ``len(class_names)``, else 8 (the ABAW EXPR classes, whose names are then
    used). Labels equal to ``ignore`` (-1) are not scored.
    """
    if class_names is None and n_classes in (None, len(EXPR_CLASSES)):
        class_names = EXPR_CLASSES
    if n_classes is None:
        n_classes = len(class_names)
    return scores_from_confusion(confusion(y_true, y_pred, n_classes, ignore), class_names)


def expr_macro_f1(y_true, y_pred) -> float:
    """The ABAW EXPR challenge metric: macro F1 over the 8 classes, -1 frames excluded."""
    return scores_from_confusion(confusion(y_true, y_pred, len(EXPR_CLASSES)))["macro_f1"]


def format_scores(scores: dict) -> str:
    """A small plain-text table: one line per class (F1, precision, recall, support) and the summary."""
    lines = [f"{'class':<12} {'F1':>6} {'prec':>6} {'recall':>6} {'support':>8}"]
    for name, s in scores["per_class"].items():
        lines.append(f"{name:<12} {s['f1']:6.3f} {s['precision']:6.3f} {s['recall']:6.3f} {s['support']:8d}")
    lines.append(f"macro F1 {scores['macro_f1']:.4f}  UAR {scores['uar']:.4f}  "
                 f"accuracy {scores['accuracy']:.4f}  n {scores['n']}")
    return "\n".join(lines)
