"""Late fusion of face and voice into one top emotion per video.

Rule (documented in docs/predict.md, fixed before looking at any evaluation clip):

1. Face, per video: the mean of the per-frame 8-class probabilities over frames where a face was found.
2. Voice, per video: the mean of the per-window probabilities over *voiced* windows (window RMS above
   a silence threshold), mapped to the ABAW class names by the voice head's class mapping.
3. Shared classes: the ABAW classes both modalities can output (for the default models: Neutral,
   Anger, Disgust, Fear, Happiness, Sadness; the face network has no Other, the voice head no Surprise).
4. Each modality's video-level distribution is restricted to the shared classes and renormalised to
   sum 1; the fused distribution is their weighted arithmetic mean (weights 0.5 / 0.5 by default).
   The top emotion is its argmax.
5. A modality that is missing (no face found in any frame; no audio track or no voiced window) drops
   out: the other one alone decides, over all its classes.

Letters: T frames, W windows, C classes.
"""

from __future__ import annotations

import numpy as np


def mean_probabilities(probs: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray | None:
    """Mean of (T, C) probabilities over rows where ``valid`` (T,) is True; None when no valid row."""
    probs = np.asarray(probs, dtype=np.float64)
    if valid is not None:
        probs = probs[np.asarray(valid, dtype=bool)]
    if probs.shape[0] == 0:
        return None
    return probs.mean(axis=0)


def to_named(probs: np.ndarray | None, names) -> dict[str, float] | None:
    return None if probs is None else {n: float(p) for n, p in zip(names, probs)}


def _restrict(dist: dict[str, float], classes: list[str]) -> dict[str, float]:
    sub = {c: max(0.0, float(dist.get(c, 0.0))) for c in classes}
    total = sum(sub.values())
    if total <= 0:
        return {c: 1.0 / len(classes) for c in classes}
    return {c: v / total for c, v in sub.items()}


def late_fusion(face: dict[str, float] | None, voice: dict[str, float] | None, *,
                face_classes, voice_classes, weights: tuple[float, float] = (0.5, 0.5)) -> dict:
    """Fuse video-level face and voice distributions (class name -> probability); see the module rule.

    Args:
        face: face distribution over ``face_classes`` (None when no face was found).
        voice: voice distribution over ``voice_classes`` (None without voiced audio).
        face_classes, voice_classes: the classes each model can output (ABAW names).
        weights: (face, voice) weights of the arithmetic mean.

    Returns:
        dict with ``classes`` (the classes fused over), ``probabilities`` (name -> fused probability),
        ``top_emotion`` (None when both modalities are missing), ``modalities`` (which took part),
        ``weights`` and ``rule`` (one sentence).
    """
    if face is None and voice is None:
        return {"classes": [], "probabilities": {}, "top_emotion": None, "modalities": [],
                "weights": {}, "rule": "no face found and no voiced audio: nothing to fuse"}
    if face is None or voice is None:
        name, dist, classes = ("voice", voice, list(voice_classes)) if face is None else ("face", face, list(face_classes))
        probs = _restrict(dist, classes)
        return {"classes": classes, "probabilities": probs, "top_emotion": max(probs, key=probs.get),
                "modalities": [name], "weights": {name: 1.0},
                "rule": f"only the {name} was available: its mean probabilities decide"}
    shared = [c for c in face_classes if c in set(voice_classes)]
    if not shared:
        raise ValueError(f"face classes {list(face_classes)} and voice classes {list(voice_classes)} share none")
    wf, wv = (float(w) for w in weights)
    pf, pv = _restrict(face, shared), _restrict(voice, shared)
    probs = {c: (wf * pf[c] + wv * pv[c]) / (wf + wv) for c in shared}
    return {"classes": shared, "probabilities": probs, "top_emotion": max(probs, key=probs.get),
            "modalities": ["face", "voice"], "weights": {"face": wf, "voice": wv},
            "rule": (f"weighted mean ({wf:g} face, {wv:g} voice) of the video-level face and voice "
                     f"probabilities, each restricted to the shared classes and renormalised")}
