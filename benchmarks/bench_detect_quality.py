"""Face detection of the one-pass path (``iter_faces_sparse``) against MTCNN at full size on every frame.

For each variant (keyword arguments of :func:`affectfuse.faces.sparse.iter_faces_sparse`; ``""`` = the
defaults), over every frame of the shared clips with faces (talking_face_pexels, single_face and the six
CREMA-D videos; 923 frames), in this process with 1 intra-op thread:

- **cost**: CPU ms per video frame of the pass's ``detect`` stage (downscale + MTCNN + tracking; the median over
  ``--rounds`` interleaved rounds) and what MTCNN was given: frames searched over the whole pyramid, frames
  searched for known face sizes only, R-Net and O-Net candidates (these counts do not depend on the machine);
- **quality** against the reference (MTCNN at full size on every frame, :func:`affectfuse.faces.iter_faces`
  with ``detect_max_side=None``): frames with a face, frames the reference has a face in and the variant not,
  box IoU of the main face (median, 5th percentile, min) and landmark error (mean distance of the 5 landmarks
  over the reference box width; median, 95th percentile).

Usage::

    python benchmarks/bench_detect_quality.py [--variants "" "tracked_smallest=0.5,full_search_s=2"]
        [--rounds 3] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine_info  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def clips() -> list[Path]:
    media = [SHARED / "media" / "talking_face_pexels.mp4", SHARED / "media" / "single_face.mp4"]
    return [p for p in media if p.is_file()] + sorted((SHARED / "crema-d" / "clips").glob("*.flv"))


def parse_variant(spec: str) -> dict:
    """``"a=1,b=x"`` -> ``{"a": 1, "b": "x"}`` (values as Python literals where they parse)."""
    out = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


class _Counted:
    """The detector, counting the frames it searches (whole pyramid / known sizes) and its R- and O-Net inputs."""

    def __init__(self, detector):
        self.detector, self.counts = detector, {}
        detector.rnet.register_forward_pre_hook(lambda m, args: self._add("rnet", len(args[0])))
        detector.onet.register_forward_pre_hook(lambda m, args: self._add("onet", len(args[0])))

    @property
    def device(self):
        return self.detector.device

    def _add(self, key: str, n: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def detect(self, images, smallest=None):
        self._add("whole" if smallest is None else "sized", len(images))
        return self.detector.detect(images, smallest=smallest)


def reference(paths, detector, fps: float | None = None) -> dict:
    """Per clip: found (N,), boxes (N, 4), landmarks (N, 5, 2) of MTCNN at full size on every analysed frame."""
    from affectfuse.faces import iter_faces

    out = {}
    for path in paths:
        batches = list(iter_faces(path, fps=fps, detector=detector, detect_max_side=None))
        out[path] = tuple(np.concatenate([getattr(b, k) for b in batches]) for k in ("found", "boxes", "landmarks"))
    return out


def main_face_iou(ref_found, ref_boxes, found, boxes) -> tuple[np.ndarray, np.ndarray]:
    """The M frames with the main face found by both (indices) and its (M,) box IoU against the reference."""
    from affectfuse.faces.track import box_iou

    both = np.flatnonzero(ref_found & found)
    return both, np.array([box_iou(ref_boxes[i:i + 1], boxes[i:i + 1])[0, 0] for i in both], np.float64)


def run_variant(paths, counted: _Counted, ref: dict, options: dict) -> dict:
    from affectfuse.faces.sparse import iter_faces_sparse
    from affectfuse.inference.video import Timer

    counted.counts = {}
    timer, iou, marks, frames, found, missed = Timer(), [], [], 0, 0, 0
    for path in paths:
        batches = list(iter_faces_sparse(path, counted, timer=timer, **options))
        ok, boxes, lm = (np.concatenate([getattr(b, k) for b in batches]) for k in ("found", "boxes", "landmarks"))
        ref_ok, ref_boxes, ref_lm = ref[path]
        frames, found, missed = frames + len(ok), found + int(ok.sum()), missed + int((ref_ok & ~ok).sum())
        both, clip_iou = main_face_iou(ref_ok, ref_boxes, ok, boxes)
        iou.extend(clip_iou.tolist())
        width = ref_boxes[both, 2] - ref_boxes[both, 0]
        marks.extend((np.linalg.norm(ref_lm[both] - lm[both], axis=2).mean(1) / width).tolist())
    return {"detect_ms": 1000 * timer.cpu_seconds.get("detect", 0.0) / frames, **counted.counts,
            "frames": frames, "found": found, "missed": missed, "iou_median": float(np.median(iou)),
            "iou_p5": float(np.percentile(iou, 5)), "iou_min": float(np.min(iou)),
            "landmarks_median": float(np.median(marks)), "landmarks_p95": float(np.percentile(marks, 95))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["", "tracked_smallest=0.5,full_search_s=2"],
                        help='iter_faces_sparse keyword arguments, "k=v,k=v" ("" = the defaults)')
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (the median CPU is reported)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    paths = clips()
    if not paths:
        raise SystemExit(f"no clips with faces under {SHARED} (../shared/data/media, crema-d/clips)")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from affectfuse.faces import load_mtcnn

    torch.set_num_threads(1)
    stamp = lambda: time.strftime("%Y-%m-%d %H:%M", time.gmtime())  # noqa: E731
    result = {"machine": machine_info(), "clips": [p.name for p in paths], "started": stamp(),
              "load_start": os.getloadavg()[0]}
    detector = load_mtcnn()
    ref = reference(paths, detector)
    counted = _Counted(detector)
    run_variant(paths[:1], counted, ref, {})  # warm-up: first calls and lazy imports
    rows = {v: [] for v in args.variants}
    for _ in range(args.rounds):
        for v in args.variants:
            rows[v].append(run_variant(paths, counted, ref, parse_variant(v)))
    result.update(load_end=os.getloadavg()[0], ended=stamp(), rows={
        v: {**runs[0], "detect_ms": statistics.median(r["detect_ms"] for r in runs),
            "detect_ms_runs": [r["detect_ms"] for r in runs]} for v, runs in rows.items()})
    print(f"machine: {describe(result['machine'])}")
    print(f"{len(paths)} clips, {stamp()} UTC, load average {result['load_start']:.2f} -> {result['load_end']:.2f}; "
          f"1 intra-op thread")
    print("\n| variant | detect ms CPU per frame (runs) | MTCNN frames whole / sized | R-Net / O-Net candidates | "
          "found (missed) | box IoU median / p5 / min | landmark error median / p95 |")
    print("|---|---|---|---|---|---|---|")
    for v, r in result["rows"].items():
        runs = ", ".join(f"{x:.2f}" for x in r["detect_ms_runs"])
        print(f"| {v or 'defaults'} | {r['detect_ms']:.2f} ({runs}) | {r.get('whole', 0)} / {r.get('sized', 0)} | "
              f"{r.get('rnet', 0)} / {r.get('onet', 0)} | {r['found']} of {r['frames']} ({r['missed']}) | "
              f"{r['iou_median']:.4f} / {r['iou_p5']:.4f} / {r['iou_min']:.4f} | "
              f"{r['landmarks_median']:.4f} / {r['landmarks_p95']:.4f} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
