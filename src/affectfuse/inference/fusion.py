"""Late fusion of face and voice into one top emotion per video, each source weighed by its reliability.

Rule (documented in docs/predict.md; the reliability weights since issue 17, the pooling rule and its weights
chosen on data since issue 13, :mod:`affectfuse.inference.fusion_fit` and ``scripts/fit_fusion.py``):

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
   sum 1 (floored at :data:`FLOOR`, so one zero is a strong vote against, not a veto); the fused distribution
   is their log-linear pool ``p ~ pf^(wf rf) pv^(wv rv)`` (:data:`FUSION_RULE` ``"geometric"``), weights
   ``(wf, wv)`` = :data:`FUSION_WEIGHTS`: how people's audio-visual judgements of 7,442 CREMA-D clips combine
   their face-only and voice-only judgements, fitted by cross-validation over actors (the face counts about
   twice the voice). With both reliabilities 1 the exponents sum to 1; a less reliable source flattens the
   pool (a smaller margin, so "uncertain" sooner). The top emotion is its argmax. ``rule="linear"`` gives the
   weighted mean ``(wf rf pf + wv rv pv) / (wf rf + wv rv)`` instead.
5. A modality that is missing (no face found in any frame; no audio track or no voiced window) or has
   reliability 0 drops out: the other one alone decides, over all its classes. When the only source left
   is a voice with every window outside its domain, its plain mean is shown but marked unreliable
   (``reliable`` False), and the headline says "uncertain".

Letters: T frames, W windows, C classes.
"""

from __future__ import annotations

import numpy as np

FUSION_RULE = "geometric"
# (face, voice) exponents: the loglinear fit's a / (a + b), b / (a + b) on the CREMA-D vote tables, alpha chosen
# by cross-validation over actors (`python scripts/fit_fusion.py`, docs/predict.md "Fusion rule");
# tests/test_fusion_fit.py checks that a refit on the tables gives these.
FUSION_WEIGHTS = (0.66, 0.34)
FLOOR = 1e-4  # probabilities below this count as this much in the log-linear pool


def pool(pf: np.ndarray, pv: np.ndarray, rule: str, params) -> np.ndarray:
    """Pool (N, C) face and voice distributions -> (N, C), rows sum to 1.

    Rules: ``"linear"``: ``w pf + (1 - w) pv``, ``params = (w,)``; ``"geometric"``: ``p ~ pf^w pv^(1 - w)``,
    ``params = (w,)``; ``"loglinear"``: ``p ~ pf^a pv^b``, ``params = (a, b)``."""
    pf, pv = np.atleast_2d(np.asarray(pf, np.float64)), np.atleast_2d(np.asarray(pv, np.float64))
    if rule == "linear":
        (w,) = params
        return w * pf + (1.0 - w) * pv
    if rule == "geometric":
        (w,) = params
        a, b = w, 1.0 - w
    elif rule == "loglinear":
        a, b = params
    else:
        raise ValueError(f"unknown fusion rule {rule!r}; valid: linear, geometric, loglinear")
    tiny = np.finfo(np.float64).tiny
    logp = a * np.log(np.maximum(pf, tiny)) + b * np.log(np.maximum(pv, tiny))
    logp -= logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(axis=1, keepdims=True)


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
                face_classes, voice_classes, weights: tuple[float, float] | None = None,
                reliability: tuple[float, float] = (1.0, 1.0), rule: str = FUSION_RULE) -> dict:
    """Fuse video-level face and voice distributions (class name -> probability); see the module rule.

    Args:
        face: face distribution over ``face_classes`` (None when no face was found).
        voice: voice distribution over ``voice_classes`` (None without voiced audio).
        face_classes, voice_classes: the classes each model can output (ABAW names).
        weights: (face, voice) weights (exponents of the geometric pool; None: :data:`FUSION_WEIGHTS`).
        reliability: (face, voice) in [0, 1], multiplied into the weights (rule steps 1-2).
        rule: ``"geometric"`` (default, :data:`FUSION_RULE`) or ``"linear"`` (weighted mean).

    Returns:
        dict with ``classes`` (the classes fused over), ``probabilities`` (name -> fused probability),
        ``top_emotion`` (None when both modalities are missing), ``modalities`` (which took part),
        ``weights`` (effective, weight x reliability), ``reliability``, ``reliable`` (False when the
        result rests on no reliable source) and ``rule`` (one sentence).
    """
    if rule not in ("geometric", "linear"):
        raise ValueError(f"unknown fusion rule {rule!r}; valid: geometric, linear")
    rf, rv = (float(min(1.0, max(0.0, r))) for r in reliability)
    wf, wv = (float(w) for w in (FUSION_WEIGHTS if weights is None else weights))
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
    pf, pv = (np.array([d[c] for c in shared]) for d in (_restrict(face, shared), _restrict(voice, shared)))
    if rule == "linear":
        fused, how = (ef * pf + ev * pv) / (ef + ev), "mean"
    else:
        fused, how = pool(np.maximum(pf, FLOOR), np.maximum(pv, FLOOR), "loglinear", (ef, ev))[0], "log-linear pool"
    probs = {c: float(p) for c, p in zip(shared, fused)}
    return {"classes": shared, "probabilities": probs, "top_emotion": max(probs, key=probs.get),
            "modalities": ["face", "voice"], "weights": {"face": round(ef, 4), "voice": round(ev, 4)},
            "reliability": rel, "reliable": True, "fusion_rule": rule,
            "rule": (f"{how} of the video-level face and voice probabilities over the shared classes, weighted "
                     f"{wf:g} x {rf:.2f} (face x share of frames with a face) and {wv:g} x {rv:.2f} "
                     f"(voice x share of voiced windows inside its training domain)")}
