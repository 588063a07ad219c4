"""Regression metrics of the ERI task: Pearson's r per emotion over all videos, and their mean.

The challenge metric (ABAW5 ERI) is the mean over the 7 emotions of Pearson's correlation between
predicted and true intensities, computed over every video of the split. A column that is constant
(in the predictions or the labels) has no defined correlation; here it scores 0.0 with a warning
naming the column, so an evaluation never returns NaN.
"""

from __future__ import annotations

import warnings

import numpy as np

from affectfuse.labels import ERI_EMOTIONS


def _check(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.ndim == 1:
        y_true = y_true[:, None]
    if y_pred.ndim == 1:
        y_pred = y_pred[:, None]
    if y_true.shape != y_pred.shape or y_true.ndim != 2:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must both be (N, K)")
    if y_true.shape[0] < 2:
        raise ValueError(f"Pearson's r needs at least 2 videos, got {y_true.shape[0]}")
    for name, arr in (("y_true", y_true), ("y_pred", y_pred)):
        if not np.isfinite(arr).all():
            cols = np.flatnonzero(~np.isfinite(arr).all(axis=0)).tolist()
            raise ValueError(f"{name} holds NaN or infinite values (columns {cols})")
    return y_true, y_pred


def pearson_per_column(y_true, y_pred, label_names: tuple[str, ...] | list[str] | None = None) -> np.ndarray:
    """Pearson's r of each column over the N rows.

    Args:
        y_true: (N, K) labels.
        y_pred: (N, K) predictions.
        label_names: K column names used in warnings (default: ``ERI_EMOTIONS`` when K = 7).

    Returns:
        (K,) float64, each in [-1, 1]; a column that is constant in either input gives 0.0 and a
        ``RuntimeWarning`` naming the column.
    """
    y_true, y_pred = _check(y_true, y_pred)
    k = y_true.shape[1]
    if label_names is None:
        label_names = ERI_EMOTIONS if k == len(ERI_EMOTIONS) else [f"column {j}" for j in range(k)]
    if len(label_names) != k:
        raise ValueError(f"{len(label_names)} label names for {k} columns")
    t = y_true - y_true.mean(axis=0)
    p = y_pred - y_pred.mean(axis=0)
    # float64 sums; a spread at rounding level relative to the values counts as constant
    ss_t, ss_p = (t * t).sum(axis=0), (p * p).sum(axis=0)
    tiny = lambda y, ss: ss <= (1e-12 * np.maximum(np.abs(y).max(axis=0), 1.0)) ** 2 * y.shape[0]  # noqa: E731
    constant = tiny(y_true, ss_t) | tiny(y_pred, ss_p)
    r = np.zeros(k, dtype=np.float64)
    ok = ~constant
    r[ok] = (t[:, ok] * p[:, ok]).sum(axis=0) / np.sqrt(ss_t[ok] * ss_p[ok])
    r = np.clip(r, -1.0, 1.0)
    for j in np.flatnonzero(constant):
        which = "labels" if tiny(y_true[:, [j]], ss_t[[j]])[0] else "predictions"
        warnings.warn(f"Pearson's r of {label_names[j]!r} is undefined (constant {which}); scored as 0.0",
                      RuntimeWarning, stacklevel=2)
    return r


def mean_pearson(y_true, y_pred, label_names=None) -> float:
    """Mean over columns of :func:`pearson_per_column` (the ABAW5 ERI metric)."""
    return float(pearson_per_column(y_true, y_pred, label_names).mean())


def eri_metrics(y_true, y_pred, label_names=ERI_EMOTIONS) -> dict:
    """``{"mean_pearson": m, "pearson": {emotion: r}}`` for (N, 7) labels and predictions."""
    label_names = tuple(label_names)
    r = pearson_per_column(y_true, y_pred, label_names)
    return {"mean_pearson": float(r.mean()), "pearson": {n: float(v) for n, v in zip(label_names, r)}}
