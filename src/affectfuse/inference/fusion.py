"""Late fusion of face and voice into one top emotion per video, each source weighed by its reliability.

Rule (documented in docs/predict.md; the reliability weights since issue 17):

1. Face, per video: the mean of the per-frame 8-class probabilities over frames where a face was found.
   Its reliability ``r_face`` is the share of analysed frames with a face.
2. Voice, per video: the mean of the per-window probabilities over *voiced* windows (window RMS above
   a silence threshold) that lie inside the voice head's training domain (typicality at or below its
   ``domain_check`` threshold; :func:`voice_window_weights`), mapped to the ABAW class names by the voice
   head's class mapping. Its reliability ``r_voice`` is the share of voiced windows inside the domain:
   windows unlike the head's training speech count for nothing.
3. Shared classes: the ABAW classes both modalities can output (for the default models: Neutral,
   Anger, Disgust, Fear, Happiness, Sadness; the face network has no Other, the voice head no Surprise).
4. Each modality's video-level distribution is restricted to the shared classes and renormalised to
   sum 1; the fused distribution is their mean weighted by ``weight x reliability`` (weights 0.5 / 0.5
   by default). The top emotion is its argmax.
5. A modality that is missing (no face found in any frame; no audio track or no voiced window) or has
   reliability 0 drops out: the other one alone decides, over all its classes. When the only source left
   is a voice with every window outside its domain, its plain mean is shown but marked unreliable
   (``reliable`` False), and the headline says "uncertain".

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


def voice_window_weights(voiced: np.ndarray, outside: np.ndarray | None = None) -> np.ndarray:
    """(W,) weight of each voice window in the voice mean: 1 voiced and inside the training domain, else 0.

    Args:
        voiced: (W,) bool, window above the silence level; outside: (W,) bool, voiced window unlike the
            head's training data (None: the head has no domain check, every voiced window counts).
    """
    w = np.asarray(voiced, dtype=bool).copy()
    if outside is not None:
        w &= ~np.asarray(outside, dtype=bool)
    return w.astype(np.float64)


def late_fusion(face: dict[str, float] | None, voice: dict[str, float] | None, *,
                face_classes, voice_classes, weights: tuple[float, float] = (0.5, 0.5),
                reliability: tuple[float, float] = (1.0, 1.0)) -> dict:
    """Fuse video-level face and voice distributions (class name -> probability); see the module rule.

    Args:
        face: face distribution over ``face_classes`` (None when no face was found).
        voice: voice distribution over ``voice_classes`` (None without voiced audio).
        face_classes, voice_classes: the classes each model can output (ABAW names).
        weights: (face, voice) weights of the arithmetic mean.
        reliability: (face, voice) in [0, 1], multiplied into the weights (rule steps 1-2).

    Returns:
        dict with ``classes`` (the classes fused over), ``probabilities`` (name -> fused probability),
        ``top_emotion`` (None when both modalities are missing), ``modalities`` (which took part),
        ``weights`` (effective, weight x reliability), ``reliability``, ``reliable`` (False when the
        result rests on no reliable source) and ``rule`` (one sentence).
    """
    rf, rv = (float(min(1.0, max(0.0, r))) for r in reliability)
    wf, wv = (float(w) for w in weights)
    rel = {"face": round(rf, 4) if face is not None else None, "voice": round(rv, 4) if voice is not None else None}
    if face is None and voice is None:
        return {"classes": [], "probabilities": {}, "top_emotion": None, "modalities": [], "weights": {},
                "reliability": rel, "reliable": False, "rule": "no face found and no voiced audio: nothing to fuse"}
    use_face, use_voice = face is not None and wf * rf > 0, voice is not None and wv * rv > 0
    if not (use_face and use_voice):
        name = "face" if use_face or (face is not None and voice is None) else "voice"
        dist, classes = (face, list(face_classes)) if name == "face" else (voice, list(voice_classes))
        probs = _restrict(dist, classes)
        reliable = (rf if name == "face" else rv) > 0
        dropped = ("" if (face is None or voice is None) else
                   f"; the {'voice' if name == 'face' else 'face'} counted for nothing (reliability 0)")
        return {"classes": classes, "probabilities": probs, "top_emotion": max(probs, key=probs.get),
                "modalities": [name], "weights": {name: 1.0}, "reliability": rel, "reliable": reliable,
                "rule": f"only the {name} was usable: its mean probabilities decide{dropped}"}
    shared = [c for c in face_classes if c in set(voice_classes)]
    if not shared:
        raise ValueError(f"face classes {list(face_classes)} and voice classes {list(voice_classes)} share none")
    ef, ev = wf * rf, wv * rv
    pf, pv = _restrict(face, shared), _restrict(voice, shared)
    probs = {c: (ef * pf[c] + ev * pv[c]) / (ef + ev) for c in shared}
    return {"classes": shared, "probabilities": probs, "top_emotion": max(probs, key=probs.get),
            "modalities": ["face", "voice"], "weights": {"face": round(ef, 4), "voice": round(ev, 4)},
            "reliability": rel, "reliable": True,
            "rule": (f"mean of the video-level face and voice probabilities over the shared classes, weighted "
                     f"{wf:g} x {rf:.2f} (face x share of frames with a face) and {wv:g} x {rv:.2f} "
                     f"(voice x share of voiced windows inside its training domain)")}
