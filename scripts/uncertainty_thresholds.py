"""How the "uncertain" margin threshold and the smoothing window of ``affectfuse predict`` were chosen.

Reads ``affectfuse predict`` outputs (``expressions.csv`` + ``summary.json`` per video) of labelled clips:
the six CREMA-D clips of actor 1001 (label = the emotion code in the file name) and the bundled sample
(labels per segment from ``assets/sample/PROVENANCE.json``), and prints

1. frame level: the accuracy of the smoothed face argmax by top-two margin bin, for several smoothing
   windows (how often a label with a given margin is right), and the threshold the rule below picks;
2. video / segment level: the fused distribution of each clip (the issue-17 reliability-weighted rule,
   recomputed from summary.json), its margin and whether its top class is right.

The rule, fixed before looking at the figures: with the 1.0 s smoothing window, the threshold is the
smallest margin on a 0.05 grid such that labels with a margin in the 0.10-wide band above it were right at
least half of the time (a label is shown only where such labels were more often right than wrong).

Usage (about 3 minutes on 2 cores, most of it ``predict``)::

    affectfuse predict ../shared/data/crema-d/clips/ --out /tmp/crema
    affectfuse predict --out /tmp/sample
    python scripts/uncertainty_thresholds.py /tmp/crema /tmp/sample
"""

from __future__ import annotations

import argparse
import csv
import json
from importlib import resources
from pathlib import Path

import numpy as np

from affectfuse.inference.confidence import segments, smooth, top_two
from affectfuse.inference.fusion import late_fusion, voice_window_weights
from affectfuse.labels import EXPR_CLASSES

CODES = {"ANG": "Anger", "DIS": "Disgust", "FEA": "Fear", "HAP": "Happiness", "NEU": "Neutral", "SAD": "Sadness"}
BINS = (0.0, 0.05, 0.10, 0.15, 0.20, 0.30, 0.50, 1.01)


def read_frames(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """expressions.csv -> times (T,) s, found (T,) bool, probs (T, 8)."""
    rows = list(csv.DictReader(open(folder / "expressions.csv")))
    t = np.array([float(r["time_s"]) for r in rows])
    found = np.array([r["face_found"] == "1" for r in rows])
    p = np.array([[float(r[c] or 0) for c in EXPR_CLASSES] for r in rows])
    return t, found, p


def labelled_spans(folder: Path) -> list[tuple[float, float, str]]:
    """(start_s, end_s, label) spans of a clip: the sample's segments, or the CREMA-D code of the name."""
    if folder.name == "sample_clip":
        prov = json.loads(resources.files("affectfuse").joinpath("assets/sample/PROVENANCE.json").read_text())
        return [(s["start_s"], s["end_s"], CODES[s["label"]]) for s in prov["segments"]]
    return [(0.0, 1e9, CODES[folder.name.split("_")[2]])]


def _labelled(folder: Path) -> bool:
    """The sample, or a CREMA-D clip named ``<actor>_<sentence>_<EMO>_<level>``; other folders are left out."""
    parts = folder.name.split("_")
    return folder.name == "sample_clip" or (len(parts) == 4 and parts[2] in CODES)


def frame_table(folders: list[Path], window_s: float) -> list[tuple[str, int, float]]:
    """Per bin of smoothed-face margin: (bin, frames, accuracy)."""
    margins, right = margins_and_hits(folders, window_s)
    out = []
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        sel = (margins >= lo) & (margins < hi)
        out.append((f"[{lo:.2f}, {min(hi, 1):.2f})", int(sel.sum()), float(right[sel].mean()) if sel.any() else np.nan))
    return out


def margins_and_hits(folders: list[Path], window_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed-face top-two margins (N,) and whether the argmax is the label (N,) over labelled frames."""
    margins, right = [], []
    for folder in folders:
        t, found, p = read_frames(folder)
        sm = smooth(t, found, p, window_s)
        for a, b, label in labelled_spans(folder):
            for row in sm[(t >= a) & (t < b) & np.isfinite(sm).all(axis=1)]:
                order = np.argsort(-row)
                margins.append(row[order[0]] - row[order[1]])
                right.append(EXPR_CLASSES[order[0]] == label)
    return np.array(margins), np.array(right)


def pick_threshold(margins: np.ndarray, right: np.ndarray, band: float = 0.10) -> float:
    """The smallest margin on a 0.05 grid whose band ``[m, m + band)`` is right at least half of the time."""
    for m in np.arange(0.0, 1.0, 0.05):
        sel = (margins >= m) & (margins < m + band)
        if sel.sum() >= 10 and right[sel].mean() >= 0.5:
            return round(float(m), 2)
    return 1.0


def fused_of(summary: dict) -> dict:
    """The reliability-weighted fusion of a summary's face and voice (recomputed from its windows)."""
    face = summary["expressions"]["mean_probabilities"] or None
    voice, rv = None, 0.0
    v = summary.get("voice") or {}
    windows = [w for w in v.get("windows", []) if w.get("voiced")]
    if windows:
        w = voice_window_weights(np.ones(len(windows), bool), np.array([x.get("outside_domain", False) for x in windows]))
        probs = np.array([[x["probabilities"][c] for c in v["classes"]] for x in windows])
        use = w if w.sum() else np.ones(len(windows))
        voice, rv = dict(zip(v["classes"], (use @ probs / use.sum()).tolist())), float(w.mean())
    e = summary["expressions"]
    rf = e["face_found_frames"] / max(1, e["frames"])
    face_classes = [c for c in EXPR_CLASSES if c not in ("Other",)]
    return late_fusion(face, voice, face_classes=face_classes, voice_classes=v.get("classes", []),
                       reliability=(rf, rv))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="+", help="predict output folders")
    args = ap.parse_args(argv)
    folders = sorted(f.parent for r in args.roots for f in Path(r).glob("*/summary.json") if _labelled(f.parent))
    print(f"{len(folders)} clips: {', '.join(f.name for f in folders)}\n")
    print("frame level, smoothed face argmax: accuracy by top-two margin")
    for window in (0.0, 0.5, 1.0, 2.0):
        print(f"  smoothing {window:.1f} s: " + "; ".join(
            f"{b} n={n} acc={acc:.2f}" for b, n, acc in frame_table(folders, window)))
    tau = pick_threshold(*margins_and_hits(folders, 1.0))
    print(f"\nthreshold picked (1.0 s smoothing): {tau:.2f}")
    print("\nclip level (reliability-weighted fusion) and the sample's segments (smoothed face, 1.0 s)")
    for folder in folders:
        s = json.loads((folder / "summary.json").read_text())
        fused = fused_of(s)
        top, second, margin = top_two(fused["probabilities"])
        top = top if margin >= tau else f"({top})"
        label = labelled_spans(folder)[0][2] if folder.name != "sample_clip" else "mixed"
        print(f"  {folder.name:18s} label {label:9s} fused {top:9s} margin {margin:.3f} "
              f"weights {fused['weights']}  {'right' if top == label else ''}")
        if folder.name == "sample_clip":
            t, found, p = read_frames(folder)
            for seg in segments(t, found, p, EXPR_CLASSES, threshold=tau):
                h = seg["headline"]
                print(f"      {seg['start_s']:.2f}-{seg['end_s']:.2f} s  {h['label']:9s} margin {h['margin']:.3f}")


if __name__ == "__main__":
    main()
