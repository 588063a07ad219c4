"""Compare affectfuse's MTCNN with the real facenet-pytorch MTCNN on the shared images and video frames.

    pip install --no-deps --target /tmp/facenet facenet-pytorch      # once, outside the project
    PYTHONPATH=/tmp/facenet python scripts/compare_mtcnn_facenet.py [--data ../shared/data] [--faces 0]
        [--frames 100] [--golden tests/data/mtcnn_facenet_golden.json]

Image sets (``--data`` is the shared data folder, see its README):
- ``media``: ``media/single_face.jpg``, ``multi_face.jpg``, ``astronaut.png``;
- ``faces``: the photographs of ``faces/images`` (all, or the first ``--faces`` in name order);
- ``frames``: ``--frames`` frames spread evenly over every frame of the shared videos
  (``media/*.mp4`` and ``crema-d/clips/*.flv``, in name order).

facenet-pytorch runs on one image at a time with its defaults (``keep_all=True``); affectfuse's
detector runs batched (up to ``--batch`` images of equal size together), as the video pipeline runs it.
A detection matches the unused reference box of highest IoU when that IoU is >= 0.5. Printed per set:
images, matched detections, extra (ours only), missing (facenet only), min / mean box IoU, the largest
landmark distance and box-corner difference in px, and the largest score difference.

``--golden PATH`` also writes the reference boxes, landmarks and scores of a small spread of the images
(every image of ``media``, every 50th of ``faces``, every 10th of ``frames``) as a JSON fixture for the
tests that run without facenet-pytorch.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from affectfuse.faces import load_mtcnn, read_image
from affectfuse.faces.track import box_iou
from affectfuse.media import iter_frames

ROOT = Path(__file__).resolve().parents[1]
MEDIA_IMAGES = ("single_face.jpg", "multi_face.jpg", "astronaut.png")
GOLDEN_STEP = {"media": 1, "faces": 50, "frames": 10}


def video_paths(data: Path) -> list[Path]:
    """The shared videos, in a fixed order."""
    return sorted((data / "media").glob("*.mp4")) + sorted((data / "crema-d" / "clips").glob("*.flv"))


def sample_frames(data: Path, n: int) -> list[tuple[str, np.ndarray]]:
    """``n`` frames spread evenly over all frames of the shared videos -> (key, (H, W, 3) uint8 RGB).

    The key is ``<path relative to data>#<1-based frame number>``.
    """
    frames = []
    for path in video_paths(data):
        for batch in iter_frames(path):
            frames += [(f"{path.relative_to(data)}#{num}", img) for num, img in zip(batch.frame_numbers, batch.images)]
    picks = np.unique(np.linspace(0, len(frames) - 1, n).round().astype(int))
    return [frames[k] for k in picks]


def load_sets(data: Path, n_faces: int, n_frames: int) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Image sets by name -> list of (key, (H, W, 3) uint8 RGB); keys are paths relative to ``data``."""
    faces = sorted((data / "faces" / "images").iterdir())
    faces = faces[:n_faces] if n_faces else faces
    return {
        "media": [(f"media/{name}", read_image(data / "media" / name)) for name in MEDIA_IMAGES],
        "faces": [(str(p.relative_to(data)), read_image(p)) for p in faces],
        "frames": sample_frames(data, n_frames),
    }


def run_facenet(images: list[np.ndarray]) -> list[dict]:
    """facenet-pytorch's MTCNN, defaults, one image at a time.

    Returns:
        per image a dict of boxes (F, 4), landmarks (F, 5, 2), scores (F,), float32.
    """
    from facenet_pytorch import MTCNN as FacenetMTCNN

    model = FacenetMTCNN(keep_all=True, device="cpu")
    out = []
    for img in images:
        boxes, scores, marks = model.detect(img, landmarks=True)
        if boxes is None:
            boxes, scores, marks = np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
        out.append({"boxes": np.asarray(boxes, np.float32), "landmarks": np.asarray(marks, np.float32),
                    "scores": np.asarray(scores, np.float32)})
    return out


def run_ours(images: list[np.ndarray], batch: int) -> list[dict]:
    """affectfuse's MTCNN, batches of up to ``batch`` images (equal sizes run together)."""
    model = load_mtcnn()
    out = []
    for k in range(0, len(images), batch):
        out += [{"boxes": d.boxes, "landmarks": d.landmarks, "scores": d.scores}
                for d in model.detect(images[k:k + batch])]
    return out


def match(ours: dict, ref: dict) -> dict:
    """Pair each reference detection with our unused detection of highest IoU (>= 0.5).

    Returns:
        dict with ``matched``, ``extra``, ``missing`` counts and, over matched pairs, ``ious`` (list),
        ``landmark_px`` (largest landmark distance), ``box_px`` (largest corner difference), ``score``
        (largest score difference).
    """
    iou = box_iou(ours["boxes"], ref["boxes"]) if len(ours["boxes"]) and len(ref["boxes"]) else np.zeros(
        (len(ours["boxes"]), len(ref["boxes"])))
    used, pairs = set(), []
    for r in range(iou.shape[1]):
        cand = [(iou[o, r], o) for o in range(iou.shape[0]) if o not in used and iou[o, r] >= 0.5]
        if cand:
            best = max(cand)[1]
            used.add(best)
            pairs.append((best, r))
    o_idx, r_idx = np.array([p[0] for p in pairs], int), np.array([p[1] for p in pairs], int)
    marks = np.linalg.norm(ours["landmarks"][o_idx] - ref["landmarks"][r_idx], axis=-1)
    return {"matched": len(pairs), "extra": iou.shape[0] - len(pairs), "missing": iou.shape[1] - len(pairs),
            "ious": [float(iou[o, r]) for o, r in pairs],
            "landmark_px": float(marks.max(initial=0.0)),
            "box_px": float(np.abs(ours["boxes"][o_idx] - ref["boxes"][r_idx]).max(initial=0.0)),
            "score": float(np.abs(ours["scores"][o_idx] - ref["scores"][r_idx]).max(initial=0.0))}


def summarise(rows: list[dict]) -> dict:
    """Per-image :func:`match` results -> one table row."""
    ious = [v for r in rows for v in r["ious"]]
    return {"images": len(rows), "matched": sum(r["matched"] for r in rows), "extra": sum(r["extra"] for r in rows),
            "missing": sum(r["missing"] for r in rows), "min_iou": min(ious, default=float("nan")),
            "mean_iou": float(np.mean(ious)) if ious else float("nan"),
            "landmark_px": max(r["landmark_px"] for r in rows), "box_px": max(r["box_px"] for r in rows),
            "score": max(r["score"] for r in rows)}


def golden(sets: dict, refs: dict) -> dict:
    """The reference detections of every ``GOLDEN_STEP``-th image of each set, as plain lists."""
    import facenet_pytorch

    items = []
    for name, items_of_set in sets.items():
        for k in range(0, len(items_of_set), GOLDEN_STEP[name]):
            ref = refs[name][k]
            items.append({"image": items_of_set[k][0], "boxes": np.round(ref["boxes"].astype(float), 3).tolist(),
                          "landmarks": np.round(ref["landmarks"].astype(float), 3).tolist(),
                          "scores": np.round(ref["scores"].astype(float), 5).tolist()})
    version = getattr(facenet_pytorch, "__version__", None) or "2.6.0"
    return {"source": f"facenet-pytorch {version} MTCNN(keep_all=True) defaults, one image at a time",
            "made_by": "scripts/compare_mtcnn_facenet.py --golden", "items": items}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--faces", type=int, default=0, help="first N photos of faces/images (0 = all)")
    parser.add_argument("--frames", type=int, default=100, help="video frames to sample")
    parser.add_argument("--batch", type=int, default=16, help="images per batch for affectfuse's detector")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (both detectors)")
    parser.add_argument("--golden", type=Path, help="write the reference detections of a spread of the images here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sets = load_sets(args.data, args.faces, args.frames)
    refs, table = {}, {}
    for name, items in sets.items():
        images = [img for _, img in items]
        t0 = time.perf_counter()
        refs[name] = run_facenet(images)
        t1 = time.perf_counter()
        ours = run_ours(images, args.batch)
        t2 = time.perf_counter()
        table[name] = {**summarise([match(o, r) for o, r in zip(ours, refs[name])]),
                       "facenet_s": t1 - t0, "ours_s": t2 - t1}
    print(f"torch {torch.__version__}, {args.threads} thread(s), {platform.machine()}")
    head = ("set", "images", "matched", "extra", "missing", "min IoU", "mean IoU", "max landmark px",
            "max box px", "max score diff", "facenet s", "ours s")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, r in table.items():
        print(f"| {name} | {r['images']} | {r['matched']} | {r['extra']} | {r['missing']} | {r['min_iou']:.4f} | "
              f"{r['mean_iou']:.4f} | {r['landmark_px']:.3g} | {r['box_px']:.3g} | {r['score']:.2g} | "
              f"{r['facenet_s']:.1f} | {r['ours_s']:.1f} |")
    if args.golden:
        args.golden.parent.mkdir(parents=True, exist_ok=True)
        args.golden.write_text(json.dumps(golden(sets, refs), indent=None, separators=(",", ":")) + "\n")
        print(f"wrote {args.golden}")


if __name__ == "__main__":
    main()
