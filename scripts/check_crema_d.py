"""Top emotion per clip on the six real CREMA-D clips (actor 1001), face / voice / fused, vs the label.

Runs ``affectfuse predict`` on ``crema-d/clips/1001_DFA_*_XX.flv`` with the defaults (every face network's
declared crop, the log-linear fusion fitted on the CREMA-D vote tables) and prints a Markdown table (the one
in docs/predict.md). The label is the emotion code in the file name. The column "fused, rule before" pools the
same face and voice means with the rule used before issue 13 (weighted mean 0.5 / 0.5 x reliability), for
comparison only.

Usage::

    python scripts/check_crema_d.py [--clips ../shared/data/crema-d/clips] [--out /tmp/crema_predict]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODES = {"ANG": "Anger", "DIS": "Disgust", "FEA": "Fear", "HAP": "Happiness", "NEU": "Neutral", "SAD": "Sadness"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=ROOT.parent / "shared" / "data" / "crema-d" / "clips")
    parser.add_argument("--out", type=Path, default=Path("/tmp/crema_predict"))
    parser.add_argument("extra", nargs="*", help="more `affectfuse predict` options (after --)")
    args = parser.parse_args(argv)

    from affectfuse.cli import main as affectfuse

    clips = sorted(args.clips.glob("1001_DFA_*_XX.flv"))
    if len(clips) != 6:
        raise SystemExit(f"{args.clips}: expected the six 1001_DFA_*_XX.flv clips, found {len(clips)}")
    code = affectfuse(["predict", *map(str, clips), "--out", str(args.out), *args.extra])
    if code:
        raise SystemExit(f"affectfuse predict failed ({code})")
    rows, hits = [], {"face": 0, "voice": 0, "fused": 0, "before": 0}
    for clip in clips:
        s = json.loads((args.out / clip.stem / "summary.json").read_text())
        label = CODES[clip.stem.split("_")[2]]
        got = {"face": s["expressions"]["top"], "voice": (s.get("voice") or {}).get("top"), "fused": s["top_emotion"],
               "before": _before(s)}
        for k, v in got.items():
            hits[k] += v == label
        fused = s["fused"]["probabilities"]
        p = ", ".join(f"{c[:3]} {fused[c]:.2f}" for c in sorted(fused, key=fused.get, reverse=True)[:3])
        head = s["fused"].get("headline") or {}
        shown = f"{head.get('label')} ({head.get('margin', 0):.3f})"
        hits["shown"] = hits.get("shown", 0) + (head.get("label") == label)
        hits["labelled"] = hits.get("labelled", 0) + bool(head.get("confident"))
        w = s["fused"].get("weights") or {}
        rows.append(f"| {clip.name} | {label} | " + " | ".join(
            f"{v}{' ✓' if v == label else ''}" for v in got.values()) + f" | {p} | "
            f"{w.get('face', 0):.2f} / {w.get('voice', 0):.2f} | {shown}{' ✓' if head.get('label') == label else ''} |")
    print("| clip | label | face | voice | fused (argmax) | fused, rule before | fused probabilities (top 3) "
          "| weights face / voice | report says (margin) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"| **correct** | | **{hits['face']}/6** | **{hits['voice']}/6** | **{hits['fused']}/6** | "
          f"**{hits['before']}/6** | | | **{hits.get('shown', 0)} of {hits.get('labelled', 0)} labels right** |")
    voice_only(args.clips)
    return 0


def _before(summary: dict) -> str | None:
    """The fused top emotion under the rule before issue 13: mean 0.5 / 0.5 weighted by the same reliabilities."""
    from affectfuse.inference.fusion import late_fusion

    e, v, rel = summary["expressions"], summary.get("voice") or {}, summary["fused"]["reliability"]
    fused = late_fusion(e["mean_probabilities"] or None, v.get("mean_probabilities") or None,
                        face_classes=e["model_classes"], voice_classes=v.get("classes", []), weights=(0.5, 0.5),
                        reliability=(rel.get("face") or 0.0, rel.get("voice") or 0.0), rule="linear")
    return fused["top_emotion"]


def voice_only(clips_dir: Path) -> None:
    """The voice head alone on the six audio-only clips of actor 1002 (another speaker)."""
    import numpy as np

    from affectfuse.inference.fusion import mean_probabilities
    from affectfuse.inference.models import load_voice_model
    from affectfuse.media import read_audio

    model = load_voice_model("default")
    clips = sorted(clips_dir.glob("1002_DFA_*_XX.mp3"))
    hits, cells = 0, []
    for clip in clips:
        label = CODES[clip.stem.split("_")[2]]
        res = model(read_audio(clip, 16000))
        mean = mean_probabilities(res.probs, res.voiced)
        top = res.class_names[int(np.argmax(mean))] if mean is not None else None
        hits += top == label
        cells.append(f"{label} -> {top}{' ✓' if top == label else ''}")
    print(f"\nvoice head alone, actor 1002 (audio-only): {hits}/{len(clips)}: " + "; ".join(cells))


if __name__ == "__main__":
    raise SystemExit(main())
