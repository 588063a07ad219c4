"""Temporal smoothing of per-frame class probabilities, chosen on validation and stored with the model.

One spec travels everywhere: ``{"method": "none" | "mean" | "mode", "window": int}`` (``"mean"``: centred
moving average of the probabilities; ``"mode"``: majority vote of the argmax labels in the window, the
categorical median; see :func:`affectfuse.data.windows.smooth_probabilities`). :func:`choose_smoothing`
picks it on labelled validation videos from :data:`SMOOTHING_GRID`; the EXPR checkpoint stores it under
``info["smoothing"]``; ``expr evaluate``, ``expr predict`` and ``expr submit`` apply it with
:func:`apply_smoothing` (through :func:`resolve_smoothing`, where ``--smooth`` overrides it).
Letters: N frames of one video, C classes.
"""

from __future__ import annotations

import numpy as np

from affectfuse.data.windows import parse_smoothing, smooth_probabilities

NO_SMOOTHING = {"method": "none", "window": 1}
# centred windows in frames (odd, so the window is centred on its frame); 30 fps: 0.1 s .. 2 s
SMOOTHING_WINDOWS = (3, 5, 9, 15, 25, 45, 61)
SMOOTHING_GRID = ((("none", 1),) + tuple(("mean", w) for w in SMOOTHING_WINDOWS)
                  + tuple(("mode", w) for w in SMOOTHING_WINDOWS))


def smoothing_spec(method: str = "none", window: int = 1) -> dict:
    """The stored form ``{"method", "window"}`` (checked: unknown methods or windows < 1 are errors)."""
    if method not in ("none", "mean", "mode"):
        raise ValueError(f"unknown smoothing {method!r}; valid: none, mean, mode")
    if int(window) < 1:
        raise ValueError(f"smoothing window must be >= 1 frame, got {window}")
    return NO_SMOOTHING.copy() if method == "none" or int(window) == 1 else {"method": method, "window": int(window)}


def describe(spec: dict | None) -> str:
    """``"mean:9"`` / ``"none"`` -- the ``--smooth`` spelling of a spec."""
    spec = spec or NO_SMOOTHING
    return "none" if spec["method"] == "none" else f"{spec['method']}:{spec['window']}"


def apply_smoothing(probs: dict[str, np.ndarray] | np.ndarray, spec: dict | None):
    """Smooth one video's (N, C) probabilities, or every video of an id -> (N, C) dict, along time."""
    spec = spec or NO_SMOOTHING
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


def choose_smoothing(labels: list[np.ndarray], probs: list[np.ndarray], grid=SMOOTHING_GRID) -> dict:
    """Pick the smoothing with the best validation macro F1.

    Args:
        labels: per video (N_i,) classes, -1 = not scored.
        probs: per video (N_i, C) probabilities, same order.
        grid: (method, window) candidates; ties go to the earlier one (none first, then shorter windows).

    Returns ``{"method", "window", "macro_f1", "unsmoothed_macro_f1", "scores": {"mean:9": F1, ...}}``.
    """
    if len(labels) != len(probs) or not labels:
        raise ValueError("choose_smoothing needs one (N, C) probability array per labelled video")
    n_classes = probs[0].shape[1]
    scores = {}
    for method, window in grid:
        spec = smoothing_spec(method, window)
        smoothed = [apply_smoothing(p, spec) for p in probs]
        scores[describe(spec)] = macro_f1_of(labels, smoothed, n_classes)
    best = max(scores, key=lambda k: scores[k])  # first maximum: the simplest of equals
    spec = resolve_smoothing(best, None)
    return {**spec, "macro_f1": scores[best], "unsmoothed_macro_f1": scores["none"], "scores": scores}


def smoothed_scores(labels: list[np.ndarray], probs: list[np.ndarray], class_names, setting: str = "auto") -> dict:
    """Validation scores of per-video (N_i, C) probabilities after smoothing: ``setting`` ``"auto"`` chooses
    it (:func:`choose_smoothing`), else it is a ``--smooth`` spelling applied as is (``none``, ``mean:9``).

    Returns :func:`~affectfuse.metrics.classification.classification_scores` of the smoothed predictions plus
    ``"smoothing"`` ({"method", "window"}) and ``"unsmoothed_macro_f1"``.
    """
    from affectfuse.metrics.classification import classification_scores

    if setting == "auto":
        chosen = choose_smoothing(labels, probs)
        spec, unsmoothed = smoothing_spec(chosen["method"], chosen["window"]), chosen["unsmoothed_macro_f1"]
    else:
        spec, unsmoothed = resolve_smoothing(setting, None), macro_f1_of(labels, probs, probs[0].shape[1])
    pred = np.concatenate([apply_smoothing(p, spec).argmax(1) for p in probs])
    scores = classification_scores(np.concatenate(labels), pred, len(class_names), class_names)
    return {**scores, "smoothing": spec, "unsmoothed_macro_f1": unsmoothed}
