"""Temporal smoothing of per-frame class probabilities, chosen on validation and stored with the model.

One spec travels everywhere: ``{"method": "none" | "mean" | "mode" | "hmm", "window": int, ...}`` (``"mean"``:
centred moving average of the probabilities; ``"mode"``: majority vote of the argmax labels in the window, the
categorical median; see :func:`affectfuse.data.windows.smooth_probabilities`; ``"hmm"``: forward-backward
marginals under a Markov chain of the classes learned from the training labels, see
:mod:`affectfuse.models.expr_decoder`, with ``"scale"`` (emission exponent), ``"run_scale"`` and the (C, C)
``"transitions"`` as lists). :func:`choose_smoothing` picks it on labelled validation videos from
:data:`SMOOTHING_GRID` (and the HMM grid when training label statistics are given); the EXPR checkpoint stores it under
``info["smoothing"]``; ``expr evaluate``, ``expr predict`` and ``expr submit`` apply it with
:func:`apply_smoothing` (through :func:`resolve_smoothing`, where ``--smooth`` overrides it).
Letters: N frames of one video, C classes.
"""

from __future__ import annotations

import numpy as np

from affectfuse.data.windows import parse_smoothing, smooth_probabilities
from affectfuse.models.expr_decoder import decode, forward_backward, transition_matrix

NO_SMOOTHING = {"method": "none", "window": 1}
# centred windows in frames (odd, so the window is centred on its frame); 30 fps: 0.1 s .. 2 s
SMOOTHING_WINDOWS = (3, 5, 9, 15, 25, 45, 61)
SMOOTHING_GRID = ((("none", 1),) + tuple(("mean", w) for w in SMOOTHING_WINDOWS)
                  + tuple(("mode", w) for w in SMOOTHING_WINDOWS))
# HMM decoder candidates: emission exponents x multipliers of the training run lengths
HMM_SCALES = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
HMM_RUN_SCALES = (0.5, 1.0, 2.0)


def smoothing_spec(method: str = "none", window: int = 1, **decoder) -> dict:
    """The stored form ``{"method", "window"}`` (+ ``scale``, ``run_scale``, ``transitions`` for ``"hmm"``);
    checked: unknown methods, windows < 1 and an HMM without its transitions are errors."""
    if method == "hmm":
        trans = np.asarray(decoder.get("transitions", ()), dtype=np.float64)
        if trans.ndim != 2 or trans.shape[0] != trans.shape[1] or not np.allclose(trans.sum(1), 1.0, atol=1e-4):
            raise ValueError("an hmm smoothing needs a square row-stochastic 'transitions' matrix")
        return {"method": "hmm", "window": 1, "scale": float(decoder.get("scale", 1.0)),
                "run_scale": float(decoder.get("run_scale", 1.0)), "transitions": trans.tolist()}
    if method not in ("none", "mean", "mode"):
        raise ValueError(f"unknown smoothing {method!r}; valid: none, mean, mode (hmm: chosen by training)")
    if int(window) < 1:
        raise ValueError(f"smoothing window must be >= 1 frame, got {window}")
    return NO_SMOOTHING.copy() if method == "none" or int(window) == 1 else {"method": method, "window": int(window)}


def hmm_spec(stats: dict, scale: float, run_scale: float) -> dict:
    """The ``"hmm"`` spec of training label statistics (:func:`~affectfuse.models.expr_decoder.label_statistics`)."""
    return smoothing_spec("hmm", scale=scale, run_scale=run_scale, transitions=transition_matrix(stats, run_scale))


def describe(spec: dict | None) -> str:
    """``"mean:9"`` / ``"none"`` -- the ``--smooth`` spelling of a spec; ``"hmm(scale 0.3, runs x1)"`` for HMMs."""
    spec = spec or NO_SMOOTHING
    if spec["method"] == "hmm":
        return f"hmm(scale {spec['scale']:g}, runs x{spec['run_scale']:g})"
    return "none" if spec["method"] == "none" else f"{spec['method']}:{spec['window']}"


def apply_smoothing(probs: dict[str, np.ndarray] | np.ndarray, spec: dict | None):
    """Smooth (or decode) one video's (N, C) probabilities, or every video of an id -> (N, C) dict, along time."""
    spec = spec or NO_SMOOTHING
    if spec["method"] == "hmm":
        trans = np.asarray(spec["transitions"], dtype=np.float64)
        if isinstance(probs, dict):
            ids = list(probs)
            return dict(zip(ids, forward_backward([probs[i] for i in ids], [trans], [spec["scale"]])))
        return decode(probs, trans, spec["scale"])
    if isinstance(probs, dict):
        return {vid: smooth_probabilities(p, spec["method"], spec["window"]) for vid, p in probs.items()}
    return smooth_probabilities(probs, spec["method"], spec["window"])


def resolve_smoothing(override: str | None, stored: dict | None) -> dict:
    """The smoothing to apply: ``--smooth`` when given (``none``, ``mean:N``, ``mode:N``), else the stored one
    (a checkpoint from before smoothing was stored: none)."""
    if override:
        return smoothing_spec(*parse_smoothing(override))
    return smoothing_spec(**stored) if stored else NO_SMOOTHING.copy()


def macro_f1_of(labels: list[np.ndarray], probs: list[np.ndarray], n_classes: int) -> float:
    """Frame macro F1 over all ``n_classes`` (-1 frames excluded) of per-video labels and (N, C) probabilities."""
    from affectfuse.metrics.classification import classification_scores

    y = np.concatenate(labels)
    pred = np.concatenate([p.argmax(1) for p in probs])
    return float(classification_scores(y, pred, n_classes)["macro_f1"])


def choose_smoothing(labels: list[np.ndarray], probs: list[np.ndarray], grid=SMOOTHING_GRID,
                     label_stats: dict | None = None, run_scales=HMM_RUN_SCALES) -> dict:
    """Pick the smoothing with the best validation macro F1.

    Args:
        labels: per video (N_i,) classes, -1 = not scored.
        probs: per video (N_i, C) probabilities, same order.
        grid: (method, window) candidates; ties go to the earlier one (none first, then shorter windows).
        label_stats: the training labels' run statistics (:func:`~affectfuse.models.expr_decoder.label_statistics`):
            when given, the HMM decoders of :data:`HMM_SCALES` x :data:`HMM_RUN_SCALES` are candidates too
            (after the windows, so a window wins a tie).
        run_scales: the HMM's run-length multipliers (``scripts/expr_planted.py levers --run-scales`` tries others).

    Returns ``{"method", "window", (hmm: "scale", "run_scale", "transitions"), "macro_f1", "unsmoothed_macro_f1",
    "scores": {"mean:9": F1, ...}}``.
    """
    if len(labels) != len(probs) or not labels:
        raise ValueError("choose_smoothing needs one (N, C) probability array per labelled video")
    n_classes = probs[0].shape[1]
    specs = [smoothing_spec(method, window) for method, window in grid]
    scores = {}
    for spec in specs:
        scores[describe(spec)] = macro_f1_of(labels, [apply_smoothing(p, spec) for p in probs], n_classes)
    if label_stats is not None:
        hmms = [hmm_spec(label_stats, s, r) for r in run_scales for s in HMM_SCALES]
        decoded = forward_backward(probs, [np.asarray(h["transitions"]) for h in hmms], [h["scale"] for h in hmms])
        for g, spec in enumerate(hmms):
            specs.append(spec)
            scores[describe(spec)] = macro_f1_of(labels, decoded[g * len(probs):(g + 1) * len(probs)], n_classes)
    keys = list(scores)
    best = max(range(len(keys)), key=lambda i: scores[keys[i]])  # first maximum: the simplest of equals
    unsmoothed = scores.get("none", macro_f1_of(labels, probs, n_classes))
    return {**specs[best], "macro_f1": scores[keys[best]], "unsmoothed_macro_f1": unsmoothed, "scores": scores}


def smoothed_scores(labels: list[np.ndarray], probs: list[np.ndarray], class_names, setting: str = "auto",
                    label_stats: dict | None = None) -> dict:
    """Validation scores of per-video (N_i, C) probabilities after smoothing: ``setting`` ``"auto"`` chooses
    it (:func:`choose_smoothing`, with the HMM candidates when ``label_stats`` is given), else it is a
    ``--smooth`` spelling applied as is (``none``, ``mean:9``).

    Returns :func:`~affectfuse.metrics.classification.classification_scores` of the smoothed predictions plus
    ``"smoothing"`` (the spec) and ``"unsmoothed_macro_f1"``.
    """
    from affectfuse.metrics.classification import classification_scores

    if setting == "auto":
        chosen = choose_smoothing(labels, probs, label_stats=label_stats)
        spec = {k: v for k, v in chosen.items() if k not in ("macro_f1", "unsmoothed_macro_f1", "scores")}
        unsmoothed = chosen["unsmoothed_macro_f1"]
    else:
        spec, unsmoothed = resolve_smoothing(setting, None), macro_f1_of(labels, probs, probs[0].shape[1])
    smoothed = apply_smoothing(dict(enumerate(probs)), spec)
    pred = np.concatenate([smoothed[i].argmax(1) for i in range(len(probs))])
    scores = classification_scores(np.concatenate(labels), pred, len(class_names), class_names)
    return {**scores, "smoothing": spec, "unsmoothed_macro_f1": unsmoothed}
