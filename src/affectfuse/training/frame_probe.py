"""The per-frame baseline inside every ``expr train`` run: a logistic probe on standardised frame features,
smoothed over time with its own window chosen on validation.

Probe: every labelled training frame (label >= 0, face found or filled) is one row; columns standardised with
the training rows' mean and std (:func:`affectfuse.data.moments.row_mean_std`, constant columns kept at 0);
multinomial ``LogisticRegression`` (L2, ``class_weight="balanced"``), ``C`` from :data:`PROBE_CS`; then the
smoothing of :func:`affectfuse.training.temporal.choose_smoothing`. ``C`` and the window are both chosen on
the validation videos, as the model's epoch and smoothing are, so the two are compared on equal terms.
At most :data:`MAX_TRAIN_FRAMES` training frames are used (an even subsample: neighbouring frames repeat
each other). Letters: N frames, D feature dim, C classes.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from affectfuse.data.affwild2 import ExprVideo
from affectfuse.data.moments import row_mean_std
from affectfuse.training.temporal import choose_smoothing, describe
from affectfuse.training.probes import softmax_linear

log = logging.getLogger(__name__)
PROBE_CS = (0.01, 0.1, 1.0)
MAX_TRAIN_FRAMES = 40_000


def _training_rows(videos: list[ExprVideo]) -> tuple[np.ndarray, np.ndarray]:
    """(M, D) features and (M,) labels of the labelled frames with features, evenly subsampled."""
    x = np.concatenate([v.features[(v.labels >= 0) & v.valid] for v in videos])
    y = np.concatenate([v.labels[(v.labels >= 0) & v.valid] for v in videos])
    if len(y) > MAX_TRAIN_FRAMES:
        keep = np.linspace(0, len(y) - 1, MAX_TRAIN_FRAMES).round().astype(np.int64)
        x, y = x[keep], y[keep]
    return x, y


def _probabilities(clf, mean, std, videos: list[ExprVideo], n_classes: int) -> dict[str, np.ndarray]:
    """id -> (N, C) probe probabilities of every frame (classes unseen in training get 0); a frame without
    features (``valid`` False) reads as the mean frame, as the model's probe path does."""
    out = {}
    for v in videos:
        p = np.zeros((v.n_frames, n_classes), np.float32)
        z = np.where(v.valid[:, None], (v.features - mean) / std, 0.0)
        p[:, clf.classes_] = clf.predict_proba(z)
        out[v.id] = p
    return out


def frame_probe(train: list[ExprVideo], val: list[ExprVideo], n_classes: int, seed: int = 0,
                cs=PROBE_CS) -> dict:
    """Fit the probe on ``train`` and choose its ``C`` and smoothing on ``val`` (labelled).

    Returns {"C", "macro_f1" (validation, with its smoothing), "unsmoothed_macro_f1", "smoothing"
    ({"method", "window"}), "smoothing_scores" ({"mean:9": F1, ...} for the chosen C), "by_C" ({C: F1}),
    "train_frames", "seconds"} (JSON-ready) and "fit": {"mean" (D,), "std" (D,), "coef" (C, D) on
    standardised frames, "intercept" (C,)} of the chosen C (classes absent from training: 0 and -30).
    """
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    start = time.perf_counter()
    x, y = _training_rows(train)
    if len(np.unique(y)) < 2:
        raise ValueError("the frame probe needs labelled training frames of at least two classes")
    mean, std = row_mean_std([x], x.shape[1])
    z = (x - mean) / std
    labels = [v.labels for v in val]
    best, by_c = None, {}
    with threadpool_limits(1):   # small dense problems: BLAS threads only contend on shared cores
        for c in cs:
            clf = LogisticRegression(C=c, class_weight="balanced", max_iter=500, random_state=seed).fit(z, y)
            probs = _probabilities(clf, mean, std, val, n_classes)
            chosen = choose_smoothing(labels, [probs[v.id] for v in val])
            by_c[float(c)] = chosen["macro_f1"]
            if best is None or chosen["macro_f1"] > best[1]["macro_f1"]:
                best = (float(c), chosen, clf)
    c, chosen, clf = best
    coef, intercept = np.zeros((n_classes, x.shape[1])), np.full(n_classes, -30.0)
    w, b = clf.coef_, clf.intercept_
    if len(clf.classes_) == 2:   # sklearn keeps one row (class 1 vs 0): the same model as a 2-row softmax
        w, b = np.stack([-w[0] / 2, w[0] / 2]), np.array([-b[0] / 2, b[0] / 2])
    coef[clf.classes_], intercept[clf.classes_] = w, b
    result = {"C": c, "macro_f1": chosen["macro_f1"], "unsmoothed_macro_f1": chosen["unsmoothed_macro_f1"],
              "smoothing": {"method": chosen["method"], "window": chosen["window"]},
              "smoothing_scores": chosen["scores"], "by_C": by_c, "train_frames": int(len(y)),
              "seconds": round(time.perf_counter() - start, 2),
              "fit": {"mean": mean, "std": std, "coef": coef, "intercept": intercept}}
    log.info("frame probe: C %g, validation macro F1 %.4f per frame, %.4f with %s", c,
             result["unsmoothed_macro_f1"], result["macro_f1"], describe(result["smoothing"]))
    return result


def choose_centring(train: list[ExprVideo], val: list[ExprVideo], setting: str, prior_frames: float,
                    probe: dict | None, n_classes: int, seed: int, centre) -> tuple[bool, dict | None, dict]:
    """Whether the model reads per-video centred frames, and the probe it starts from.

    ``setting``: ``"off"``, ``"on"`` or ``"auto"`` (on when the probe refitted on centred frames, ``centre``
    (videos) -> centred copies, beats ``probe`` -- the one on raw frames -- on validation, both with their best
    window; off without a raw probe to compare with). Returns (centre or not, the probe to start from: the
    centred one when centring, else ``probe``; a JSON-ready summary {"setting", "on", "prior_frames",
    "raw_probe", "centred_probe"} of validation macro F1).
    """
    summary = {"setting": setting, "on": False, "prior_frames": prior_frames,
               "raw_probe": None if probe is None else round(probe["macro_f1"], 4), "centred_probe": None}
    if setting == "off" or (setting == "auto" and probe is None):
        return False, probe, summary
    centred = frame_probe(centre(train), centre(val), n_classes, seed)
    summary["centred_probe"] = round(centred["macro_f1"], 4)
    on = setting == "on" or centred["macro_f1"] > probe["macro_f1"]
    summary["on"] = on
    log.info("per-video centring %s: probe on centred frames %.4f, on raw frames %s", "on" if on else "off",
             centred["macro_f1"], summary["raw_probe"])
    return on, (centred if on else probe), summary


def start_at_probe(model, probe: dict) -> None:
    """Set a frame model's input statistics and per-frame linear path from a :func:`frame_probe` fit
    (models built with ``standardize`` / ``probe_skip``; the other parts are left alone)."""
    fit = probe["fit"]
    if model.config.standardize:
        model.set_standardization(fit["mean"], fit["std"])
    if model.config.probe_skip:
        if not model.config.standardize:
            raise ValueError("probe_skip needs standardize=True (the probe reads standardised frames)")
        model.set_skip(fit["coef"], fit["intercept"])


def probe_probabilities(fit: dict, videos: list[ExprVideo]) -> dict[str, np.ndarray]:
    """id -> (N, C) probabilities of a :func:`frame_probe` ``fit`` on ``videos`` (frames without features: the
    mean frame), unsmoothed."""
    out = {}
    for v in videos:
        z = np.where(v.valid[:, None], (v.features - fit["mean"]) / fit["std"], 0.0)
        out[v.id] = softmax_linear(z, fit["coef"], fit["intercept"])
    return out


def probe_summary(probe: dict | None) -> dict | None:
    """The JSON-ready part of a :func:`frame_probe` result (without the fitted arrays)."""
    return None if probe is None else {k: v for k, v in probe.items() if k != "fit"}


def compare_with_probe(best: dict, probe: dict | None) -> dict:
    """{"model": validation macro F1 (smoothed), "probe": the probe's, "model_minus_probe", "model_smoothing",
    "probe_smoothing"}; logs a warning when the model loses to its probe."""
    if probe is None:
        return {"model": best["macro_f1"], "probe": None}
    out = {"model": round(best["macro_f1"], 4), "model_smoothing": describe(best.get("smoothing")),
           "probe": round(probe["macro_f1"], 4), "probe_smoothing": describe(probe["smoothing"]),
           "probe_C": probe["C"], "model_minus_probe": round(best["macro_f1"] - probe["macro_f1"], 4)}
    if best["macro_f1"] < probe["macro_f1"]:
        log.warning("the EXPR model (validation macro F1 %.4f with %s) loses to its per-frame logistic probe "
                    "(%.4f with %s); consider the probe's settings or more training videos", best["macro_f1"],
                    out["model_smoothing"], probe["macro_f1"], out["probe_smoothing"])
    return out
