"""The simplest baseline on the same features, fitted inside every training run.

ERI: ridge regression on pooled statistics (per-video mean and std over the valid rows of each modality,
standardised with the training split's statistics), the ridge penalty chosen by efficient leave-one-out
cross-validation on the training split (``RidgeCV``), predictions clipped to the label range [0, 1].
A learned model that does not beat this on validation is reported as such.
"""

from __future__ import annotations

import numpy as np

from affectfuse.data.moments import row_moments, usable_std
from affectfuse.data.sequences import SequenceData, pooled_statistics

RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-1, 5, 13))
LOGIT_CLIP = 0.02   # tangent points of the pooled skip are kept in [0.02, 0.98] (a mean of 0 or 1 has no logit)


def pooled_ridge(train: SequenceData, modalities: list[str], norm: dict | None = None) -> dict:
    """:func:`ridge_loo` of ``train``'s labels on its pooled statistics (after ``norm``): the one fit that both
    the probe (:func:`ridge_probe`) and the probe-started path (:func:`init_pooled_skip`) use."""
    return ridge_loo(pooled_statistics(train, modalities, norm), train.labels.numpy())


def ridge_probe(train: SequenceData, val: SequenceData, modalities: list[str], norm: dict | None = None,
                fit: dict | None = None) -> dict:
    """Fit the ridge probe on ``train`` (or take ``fit``, :func:`pooled_ridge` with the same ``norm``) and
    score it on ``val`` (mean Pearson over the label columns).

    Returns {"kind", "pooling", "modalities", "alpha", "val_mean_pearson", "per_emotion": {name: r}}.
    """
    from affectfuse.metrics.regression import eri_metrics

    fit = fit or pooled_ridge(train, modalities, norm)
    pred = np.clip(ridge_predict(fit, pooled_statistics(val, modalities, norm)), 0.0, 1.0)
    m = eri_metrics(val.labels.numpy(), pred, val.label_names)
    return {"kind": "ridge", "pooling": "mean+std over valid rows", "modalities": list(modalities),
            "alpha": fit["alpha"], "val_mean_pearson": float(m["mean_pearson"]),
            "per_emotion": {k: float(v) for k, v in m["pearson"].items()}}


def init_pooled_skip(model, train: SequenceData, modalities: list[str], norm: dict | None = None,
                     fit: dict | None = None) -> float:
    """Start ``model.skip`` (Linear on pooled statistics -> intensity logits) at the ridge probe, and shrink
    the network's intensity head to a tenth (bias 0), so the untrained model predicts what the probe does,
    gradients reach the network from the first step, and training adds what the probe misses.

    The probe's fit p = w x + b of the labels (:func:`ridge_loo`, the pooled statistics the model computes,
    after ``norm``) goes through the sigmoid's tangent at each label's training mean m:
    logit = logit(m) + (p - m) / (m (1 - m)), so sigmoid(logit) = p to first order about m and, being a
    monotone map of p, ranks the videos exactly as the probe does. (A ridge fit of the label *logits*, the
    start before, lost 0.03 mean Pearson to the probe on one planted seed: the logits of labels near 0 or 1,
    clipped to [0.02, 0.98], are mostly noise.) The standardisation is folded into the weights. ``fit``:
    :func:`pooled_ridge` with the same ``norm`` when already made. Returns the chosen ridge penalty.
    """
    import torch

    y = train.labels.numpy().astype(np.float64)                           # (N, K) in [0, 1]
    fit = fit or pooled_ridge(train, modalities, norm)                    # on (N, P) pooled statistics
    centre = np.clip(y.mean(0), LOGIT_CLIP, 1 - LOGIT_CLIP)               # (K,) tangent points
    slope = centre * (1 - centre)
    weight = fit["coef"] / fit["scale"] / slope[:, None]                  # (K, P)
    bias = np.log(centre / (1 - centre)) + (fit["intercept"] - centre) / slope - weight @ fit["mean"]
    with torch.no_grad():
        model.skip.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        model.skip.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        model.intensity_head.weight.mul_(0.1)
        model.intensity_head.bias.zero_()
    return fit["alpha"]


def ridge_loo(x: np.ndarray, y: np.ndarray, alphas=RIDGE_ALPHAS, chunk: int = 1024) -> dict:
    """Ridge regression of ``y`` (N, K) on standardised ``x`` (N, P), the penalty chosen from ``alphas`` by
    exact leave-one-out error (mean over videos and targets; the first alpha on ties), intercept unpenalised:
    what ``StandardScaler`` + ``RidgeCV(alphas)`` give, without their float64 copies of ``x``.

    ``x`` stays as given (float32 is fine); float64 is used only for P x P (or N x N when N < P) matrices
    and chunks of ``chunk`` rows. With Z the standardised, centred ``x`` and Z^T Z = V diag(e) V^T, the hat
    matrix is 11^T / N + Q diag(1 / (e + alpha)) Q^T with Q = Z V, so every alpha's leave-one-out residuals
    (y - y_hat) / (1 - h) come from one eigendecomposition (N < P: the same from Z Z^T). Returns {"alpha", "coef" (K, P) on the
    standardised features, "intercept" (K,), "mean" (P,), "scale" (P,), "loo_mse" {alpha: error}}.
    """
    import scipy.linalg

    y = np.asarray(y, np.float64)
    y = y[:, None] if y.ndim == 1 else y
    n = len(x)
    mean, scale = row_moments((x[s:s + chunk] for s in range(0, n, chunk)), x.shape[1])   # float64
    y_mean = y.mean(0)
    y_c = y - y_mean

    def z_rows(start):                                                     # (c, P) float64, standardised
        return (np.asarray(x[start:start + chunk], np.float64) - mean) / scale

    dual = n < x.shape[1]
    if dual:                                                               # Z Z^T: (N, N)
        z_all = np.concatenate([z_rows(s) for s in range(0, n, chunk)]) if n else np.zeros((0, x.shape[1]))
        gram = z_all @ z_all.T
    else:                                                                  # Z^T Z: (P, P)
        gram = np.zeros((x.shape[1], x.shape[1]))
        for s in range(0, n, chunk):
            z = z_rows(s)
            gram += z.T @ z
    # gram is symmetric: its transpose is the Fortran-ordered array LAPACK overwrites in place (no copy)
    e, vecs = scipy.linalg.eigh(gram.T, overwrite_a=True, check_finite=False, driver="evr")
    del gram
    e = np.clip(e, 0.0, None)
    zty = vecs.T @ y_c if dual else vecs.T @ sum(z_rows(s).T @ y_c[s:s + chunk] for s in range(0, n, chunk))
    # hat = Q diag(w) Q^T: Q = U (orthonormal) with w = e / (e + alpha), or Q = Z V (Q^T Q = diag(e)) with 1 / (e + alpha)
    shrink = [(e if dual else 1.0) / (e + a) for a in alphas]             # per alpha: (R,)
    sq_err = np.zeros(len(alphas))
    for s in range(0, n, chunk):
        q = vecs[s:s + chunk] if dual else z_rows(s) @ vecs                # (c, R)
        q2 = q * q
        for i, f in enumerate(shrink):
            h = 1.0 / n + q2 @ f                                           # (c,) leverages
            resid = (y_c[s:s + chunk] - q @ (f[:, None] * zty)) / (1.0 - h)[:, None]
            sq_err[i] += float((resid ** 2).sum())
    best = int(np.argmin(sq_err))
    alpha = float(alphas[best])
    direction = vecs @ (zty / (e + alpha)[:, None])                        # (R, K)
    coef = (z_all.T @ direction if dual else direction).T                  # (K, P)
    return {"alpha": alpha, "coef": coef, "intercept": y_mean, "mean": mean, "scale": scale,
            "loo_mse": {float(a): float(v / y.size) for a, v in zip(alphas, sq_err)}}


def ridge_predict(fit: dict, x: np.ndarray) -> np.ndarray:
    """(N, K) predictions of a :func:`ridge_loo` fit on ``x`` (N, P)."""
    return ((np.asarray(x, np.float64) - fit["mean"]) / fit["scale"]) @ fit["coef"].T + fit["intercept"]


# -- classes: logistic regression on pooled item statistics ---------------------------------------------
# C applies to block-scaled features (each feature set's pooled block has total variance 1), so one grid
# fits 88-d eGeMAPS and 1280-d MobileNetV2 alike (EmoDB's folds chose 1 to 1000 on a finer grid).
LOGISTIC_CS = (1.0, 10.0, 100.0, 1000.0)


def inner_folds(y: np.ndarray, groups=None, max_folds: int = 4, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index pairs on ``y`` (N,) for choosing a penalty inside a training split: grouped
    (``StratifiedGroupKFold``, at most one fold per group) when ``groups`` has >= 2 groups, else stratified
    (at most as many folds as the rarest class has items, at least 2)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    y = np.asarray(y)
    if groups is not None and len(set(groups)) >= 2:
        k = min(max_folds, len(set(groups)))
        return list(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(y, y, np.asarray(groups)))
    k = max(2, min(max_folds, int(np.bincount(y).min(initial=2))))
    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(y, y))


def block_scaler(x: np.ndarray, blocks: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean (P,), scale (P,)) so that ``(x - mean) / scale`` has per column mean 0 and variance
    1 / (size of its block): each block (a feature set's pooled columns; ``blocks`` = their sizes, None =
    one block) has total variance 1, so feature sets count equally whatever their dims. Constant columns
    get scale 1 (they map to 0)."""
    x = np.asarray(x, np.float64)
    mean, std = x.mean(0), x.std(0)
    std = usable_std(mean, std)
    sizes = list(blocks) if blocks else [x.shape[1]]
    if sum(sizes) != x.shape[1]:
        raise ValueError(f"blocks {sizes} do not add up to the {x.shape[1]} pooled columns")
    return mean, std * np.sqrt(np.repeat(np.asarray(sizes, np.float64), sizes))


def fit_logistic(x: np.ndarray, y: np.ndarray, n_classes: int, groups=None, cs=LOGISTIC_CS, seed: int = 0,
                 blocks: list[int] | None = None) -> dict:
    """The logistic probe on pooled features ``x`` (N, P), classes ``y`` (N,) in 0..n_classes-1.

    :func:`block_scaler` + multinomial ``LogisticRegression`` (L2, ``class_weight="balanced"``), ``C``
    chosen from ``cs`` by the UAR of :func:`inner_folds` on this training split only (ties: the smaller
    C), then refitted on all of it. Returns {"C", "inner_uar": {C: UAR}, "scaler_mean" (P,),
    "scaler_scale" (P,), "coef" (n_classes, P) in the scaled space, "intercept" (n_classes,)}; classes
    absent from ``y`` get weight 0 and bias -30.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):   # small problems: BLAS threads only spin on shared cores (40x slower here)
        return _fit_logistic(np.asarray(x, np.float64), np.asarray(y), n_classes, groups, list(cs), seed, blocks)


def _fit_logistic(x, y, n_classes, groups, cs, seed, blocks) -> dict:
    from sklearn.metrics import balanced_accuracy_score

    inner = {}
    if len(cs) > 1:
        folds = inner_folds(y, groups, seed=seed)
        for c in cs:
            pred = np.zeros(len(y), np.int64)
            for tr, te in folds:
                mean, scale = block_scaler(x[tr], blocks)
                pred[te] = _logistic((x[tr] - mean) / scale, y[tr], c, seed).predict((x[te] - mean) / scale)
            inner[float(c)] = float(balanced_accuracy_score(y, pred))
    best = max(inner, key=lambda c: (inner[c], -c)) if inner else float(cs[0])
    mean, scale = block_scaler(x, blocks)
    clf = _logistic((x - mean) / scale, y, best, seed)
    w, b = clf.coef_, clf.intercept_
    if len(clf.classes_) == 2:   # sklearn keeps one row (class 1 vs 0): split it as a 2-row softmax
        w, b = np.stack([-w[0] / 2, w[0] / 2]), np.array([-b[0] / 2, b[0] / 2])
    coef, intercept = np.zeros((n_classes, x.shape[1])), np.full(n_classes, -30.0)
    coef[clf.classes_], intercept[clf.classes_] = w, b
    return {"C": best, "inner_uar": inner, "scaler_mean": mean, "scaler_scale": scale,
            "coef": coef, "intercept": intercept}


def _logistic(z: np.ndarray, y: np.ndarray, c: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, class_weight="balanced", max_iter=3000, random_state=seed).fit(z, y)


def logistic_probabilities(probe: dict, x: np.ndarray) -> np.ndarray:
    """(N, C) class probabilities of a :func:`fit_logistic` probe on pooled features ``x`` (N, P)."""
    z = (np.asarray(x, np.float64) - probe["scaler_mean"]) / probe["scaler_scale"]
    return softmax_linear(z, probe["coef"], probe["intercept"])


def softmax_linear(z: np.ndarray, coef, intercept) -> np.ndarray:
    """(N, C) float32 softmax of ``z @ coef.T + intercept``: ``z`` (N, P) standardised features, ``coef``
    (C, P), ``intercept`` (C,) (a logistic probe's linear part)."""
    logits = z @ np.asarray(coef).T + np.asarray(intercept)
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    return (p / p.sum(1, keepdims=True)).astype(np.float32)
