"""Zero-shot item probabilities: a face-expression network's own class outputs, read from its feature set, mapped
onto a task's class names (the baseline ``affectfuse expr probe --zero-shot`` scores next to trained heads)."""

from __future__ import annotations

import numpy as np

from affectfuse.features.faceapi import FACEAPI_CLASSES, FACEAPI_TO_ABAW


def zero_shot_probabilities(items, feature_set, class_names):
    """(I, C) item probabilities from a face-expression network's own 7-class columns (faceexpressionnet:
    the last 7 columns ``p_neutral..p_surprised``) mapped to ``class_names``; classes it lacks get 0."""
    columns = (feature_set.meta.extra or {}).get("columns") or []
    if feature_set.meta.extractor != "faceexpressionnet" and not {f"p_{c}" for c in FACEAPI_CLASSES} <= set(columns):
        raise ValueError(f"{feature_set.path}: zero-shot needs faceexpressionnet features "
                         f"(extractor {feature_set.meta.extractor!r})")
    first = feature_set.meta.dim - len(FACEAPI_CLASSES)
    lookup = {n.lower(): k for k, n in enumerate(class_names)}
    out = np.zeros((len(items), len(class_names)), np.float32)
    for i, item in enumerate(items):
        rows = item.features[item.valid] if item.valid.any() else item.features
        p = rows[:, first:first + len(FACEAPI_CLASSES)].mean(axis=0)
        for j, name in enumerate(FACEAPI_CLASSES):
            k = lookup.get(FACEAPI_TO_ABAW[name].lower())
            if k is not None:
                out[i, k] = p[j]
    return out
