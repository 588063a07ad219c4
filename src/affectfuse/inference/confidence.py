"""How sure a prediction is: top-two margins, face/voice agreement, smoothed timelines and segments.

A headline (the one label a person reads for a video or a segment) is the argmax of a distribution, shown
as ``"uncertain"`` when the margin between the top two classes is below :data:`MARGIN_THRESHOLD` or when
no source it rests on is reliable (``docs/predict.md``, "How sure": how the thresholds were chosen).

Segments: the per-frame face probabilities are smoothed by a centred moving average over
:data:`SMOOTH_S` seconds (frames without a face left out), each point takes its dominant class (or
"uncertain" / "no face"), and runs shorter than :data:`MIN_SEGMENT_S` are merged into a neighbour.

Letters: T time points (frames, or bins of the decimated plot series), C classes.
"""

from __future__ import annotations

import numpy as np

UNCERTAIN = "uncertain"
NO_FACE = "no face"
MARGIN_THRESHOLD = 0.35  # top-1 minus top-2 probability; chosen by scripts/uncertainty_thresholds.py (docs/predict.md)
SMOOTH_S = 1.0  # seconds of the centred moving average behind the segments and the smoothed timeline
MIN_SEGMENT_S = 0.5  # shorter runs of one dominant class are merged into a neighbour


def top_two(probs: dict[str, float]) -> tuple[str | None, str | None, float]:
    """(top class, second class, margin p1 - p2) of a name -> probability dict; margin 1 with one class."""
    ranked = sorted(probs.items(), key=lambda kv: -kv[1])
    if not ranked:
        return None, None, 0.0
    if len(ranked) == 1:
        return ranked[0][0], None, 1.0
    return ranked[0][0], ranked[1][0], float(ranked[0][1] - ranked[1][1])


def floor2(x: float) -> float:
    """``x`` rounded down to 2 decimals, so a margin just under the threshold never prints as equal to it."""
    return float(np.floor(x * 100 + 1e-9) / 100)


def headline(probs: dict[str, float], reliable: bool = True, threshold: float = MARGIN_THRESHOLD,
             reason: str = "") -> dict:
    """The label a person reads: the top class, or :data:`UNCERTAIN` (margin < threshold, or not reliable).

    Returns:
        dict with ``label``, ``top``, ``second``, ``margin`` (probability points), ``threshold``,
        ``confident`` (bool) and ``reason`` (one sentence, empty when confident).
    """
    top, second, margin = top_two(probs)
    if top is None:
        return {"label": None, "top": None, "second": None, "margin": 0.0, "threshold": threshold,
                "confident": False, "reason": reason or "nothing to decide from"}
    if not reliable:
        why = reason or "no reliable source"
    elif margin < threshold:
        why = f"{top} leads {second} by only {floor2(margin):.2f} (< {threshold:.2f})"
    else:
        why = ""
    return {"label": UNCERTAIN if why else top, "top": top, "second": second, "margin": round(margin, 4),
            "threshold": threshold, "confident": not why, "reason": why}


def agreement(face: dict[str, float] | None, voice: dict[str, float] | None) -> dict | None:
    """Face vs voice over the classes both name (each renormalised there); None unless both exist.

    Returns:
        dict with ``face_top``, ``voice_top``, ``same_top`` (bool) and ``overlap`` = 1 - total variation
        distance, in [0, 1] (1: identical distributions, 0: disjoint).
    """
    if not face or not voice:
        return None
    shared = [c for c in face if c in voice]
    if not shared:
        return None
    pf = np.array([max(0.0, face[c]) for c in shared]) + 1e-12
    pv = np.array([max(0.0, voice[c]) for c in shared]) + 1e-12
    pf, pv = pf / pf.sum(), pv / pv.sum()
    ft, vt = shared[int(np.argmax(pf))], shared[int(np.argmax(pv))]
    return {"face_top": ft, "voice_top": vt, "same_top": ft == vt,
            "overlap": round(float(1.0 - 0.5 * np.abs(pf - pv).sum()), 4)}


def smooth(times: np.ndarray, found: np.ndarray, probs: np.ndarray, window_s: float = SMOOTH_S) -> np.ndarray:
    """Centred moving average over ``window_s`` seconds, skipping frames without a face.

    Args:
        times: (T,) seconds, increasing; found: (T,) bool; probs: (T, C) (rows without a face ignored).

    Returns:
        (T, C) smoothed probabilities; NaN rows where no face lies within the window.
    """
    times = np.asarray(times, np.float64)
    ok = np.asarray(found, bool)
    p = np.where(ok[:, None], np.nan_to_num(np.asarray(probs, np.float64)), 0.0)  # (T, C)
    csum = np.vstack([np.zeros((1, p.shape[1])), np.cumsum(p, axis=0)])  # (T + 1, C)
    ccount = np.concatenate([[0], np.cumsum(ok)])  # (T + 1,)
    lo = np.searchsorted(times, times - window_s / 2, side="left")
    hi = np.searchsorted(times, times + window_s / 2, side="right")
    count = (ccount[hi] - ccount[lo])[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (csum[hi] - csum[lo]) / count, np.nan)


def point_labels(smoothed: np.ndarray, class_names, threshold: float = MARGIN_THRESHOLD) -> list[str]:
    """(T, C) smoothed probabilities -> T labels: the dominant class, UNCERTAIN or NO_FACE (NaN row)."""
    out = []
    for row in np.asarray(smoothed, np.float64):
        if not np.isfinite(row).all():
            out.append(NO_FACE)
            continue
        order = np.argsort(-row)
        margin = row[order[0]] - (row[order[1]] if len(row) > 1 else 0.0)
        out.append(class_names[int(order[0])] if margin >= threshold else UNCERTAIN)
    return out


def _runs(labels: list[str]) -> list[list[int]]:
    """[start, end) index runs of equal labels."""
    runs: list[list[int]] = []
    for i, lab in enumerate(labels):
        if runs and labels[runs[-1][0]] == lab:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    return runs


def _merge_short(runs: list[list[int]], labels: list[str], times: np.ndarray, min_s: float) -> list[list[int]]:
    """Merge runs shorter than ``min_s`` seconds into the longer neighbour, shortest first."""
    def length(r):
        return float(times[r[1] - 1] - times[r[0]]) + _step(times)

    while len(runs) > 1:
        k = min(range(len(runs)), key=lambda i: length(runs[i]))
        if length(runs[k]) >= min_s:
            break
        left = runs[k - 1] if k > 0 else None
        right = runs[k + 1] if k + 1 < len(runs) else None
        into = left if right is None or (left is not None and length(left) >= length(right)) else right
        into[0], into[1] = min(into[0], runs[k][0]), max(into[1], runs[k][1])
        del runs[k]
        i = runs.index(into)  # neighbours that now carry the same label join
        for j in (i + 1, i - 1):
            if 0 <= j < len(runs) and labels[runs[j][0]] == labels[into[0]]:
                a, b = sorted((i, j))
                runs[a] = [runs[a][0], runs[b][1]]
                del runs[b]
                break
    return runs


def _step(times: np.ndarray) -> float:
    return float(np.median(np.diff(times))) if len(times) > 1 else 0.0


def segments(times: np.ndarray, found: np.ndarray, probs: np.ndarray, class_names,
             window_s: float = SMOOTH_S, min_s: float = MIN_SEGMENT_S,
             threshold: float = MARGIN_THRESHOLD) -> list[dict]:
    """Changes of the dominant face expression over time.

    Args:
        times: (T,) s; found: (T,) bool; probs: (T, C) raw per-frame probabilities over ``class_names``.

    Returns:
        one dict per segment, in time order: ``start_s``, ``end_s`` (each point covering half a step each
        side), ``mean_probabilities`` (class -> mean smoothed probability over the segment's points with a
        face; empty for a "no face" segment) and ``headline`` (:func:`headline` of that mean; "no face"
        segments get label NO_FACE).
    """
    times = np.asarray(times, np.float64)
    if len(times) == 0:
        return []
    sm = smooth(times, found, probs, window_s)  # (T, C)
    labels = point_labels(sm, list(class_names), threshold)
    labels = [lab if ok else NO_FACE for lab, ok in zip(labels, np.asarray(found, bool))]  # the frame's own face
    runs = _merge_short(_runs(labels), labels, times, min_s)
    half = _step(times) / 2
    out = []
    for a, b in runs:
        keep = np.isfinite(sm[a:b]).all(axis=1) & np.asarray(found, bool)[a:b]
        rows = sm[a:b][keep]
        mean = {c: round(float(v), 4) for c, v in zip(class_names, rows.mean(axis=0))} if len(rows) else {}
        head = headline(mean, threshold=threshold) if mean else {
            "label": NO_FACE, "top": None, "second": None, "margin": 0.0, "threshold": threshold,
            "confident": False, "reason": "no face found in this span"}
        out.append({"start_s": round(max(0.0, float(times[a]) - half), 3),
                    "end_s": round(float(times[b - 1]) + half, 3), "mean_probabilities": mean, "headline": head})
    return out


def describe_fusion(fused: dict, face: dict[str, float] | None, voice: dict[str, float] | None) -> dict:
    """What the report shows about a :func:`~affectfuse.inference.fusion.late_fusion` result.

    Returns:
        dict with ``headline`` (:func:`headline` of the fused probabilities), ``agreement`` (face vs voice,
        :func:`agreement`, or None) and ``rule_short`` (one line naming the sources and their weights).
    """
    reason = ""
    if not fused.get("reliable", True) and fused.get("modalities") == ["voice"]:
        reason = "only the voice was heard, and every voiced window is unlike the voice head's training speech"
    head = headline(fused.get("probabilities") or {}, reliable=bool(fused.get("reliable", True)), reason=reason)
    weights = fused.get("weights") or {}
    rule = " + ".join(f"{m} (weight {weights.get(m, 0):.2f})" for m in fused.get("modalities", [])) or "nothing"
    return {"headline": head, "agreement": agreement(face, voice), "rule_short": rule}


def segments_with_voice(times: np.ndarray, found: np.ndarray, probs: np.ndarray, class_names,
                        voice: dict | None, **options) -> list[dict]:
    """:func:`segments` of the face, each with the voiced windows whose centre falls inside it.

    Args:
        times, found, probs: (T,), (T,), (T, C) as for :func:`segments`.
        voice: the ``summary["voice"]`` dict (its ``windows``), or None.

    Each segment gains ``voice_windows``: ``[{"start_s", "end_s", "top", "outside_domain"}]``.
    """
    out = segments(times, found, probs, class_names, **options)
    windows = [w for w in (voice or {}).get("windows", []) if w.get("voiced")]
    for k, seg in enumerate(out):
        last = k == len(out) - 1
        seg["voice_windows"] = [
            {"start_s": w["start_s"], "end_s": w["end_s"], "top": w.get("top"),
             "outside_domain": bool(w.get("outside_domain", False))}
            for w in windows
            if seg["start_s"] <= (w["start_s"] + w["end_s"]) / 2 < seg["end_s"] or
            (last and (w["start_s"] + w["end_s"]) / 2 >= seg["end_s"])]
    return out
