"""Real-signal check of the EXPR generic path on ../shared/data/faces (8 ABAW classes, contempt -> Other).

Each photo: MTCNN (largest face) -> 5-point similarity alignment to the 112 px "MTCNN box" framing that
faceexpressionnet expects -> faceexpressionnet (263-d: 256-d embedding + 7 probabilities), written as a
FeatureSet (one row per photo, mask = face found; cached, resumable). Then ``affectfuse expr probe``
with a stratified 5-fold split: the EXPR frame transformer (focal loss), a logistic-regression probe, and
the network's own zero-shot 7-class output mapped to the 8 ABAW classes.

    python benchmarks/expr_faces_probe.py --cache /tmp/affectfuse_faces --out /tmp/affectfuse_faces/probe

Figures go to docs/expr.md by hand (they are printed and written under --out).
"""

from __future__ import annotations

import argparse
import csv
import re
import time
from pathlib import Path

import numpy as np

ABAW_OF = {"anger": "Anger", "contempt": "Other", "disgust": "Disgust", "fear": "Fear",
           "happiness": "Happiness", "neutral": "Neutral", "sadness": "Sadness", "surprise": "Surprise"}
ROOT = Path(__file__).resolve().parents[1]


def read_labels(data: Path, per_class: int | None = None, seed: int = 0) -> list[tuple[str, str]]:
    """[(image file name, ABAW class)], optionally at most ``per_class`` photos per class (random, seeded)."""
    with open(data / "labels.csv", newline="") as fh:
        rows = [(r["image"], ABAW_OF[r["emotion"].strip().lower()]) for r in csv.DictReader(fh)]
    if per_class:
        rng = np.random.default_rng(seed)
        keep = []
        for cls in sorted({c for _, c in rows}):
            mine = [r for r in rows if r[1] == cls]
            keep += [mine[i] for i in sorted(rng.permutation(len(mine))[:per_class])]
        rows = keep
    return rows


def extract_photos(files: list[Path], out: Path, batch_size: int = 16):
    """Photos -> a ``faceexpressionnet`` FeatureSet at ``out`` (id = file stem); skips ids already there."""
    from affectfuse.data.store import FeatureSet, FeatureSetMeta, VideoFeatures
    from affectfuse.faces.align import align_face
    from affectfuse.faces.images import read_image
    from affectfuse.faces.pipeline import default_detector
    from affectfuse.features.registry import create_extractor

    extractor = create_extractor("faceexpressionnet")
    d = dict(extractor.describe())
    meta = FeatureSetMeta(name=extractor.name, dim=extractor.dim, rate=None, extractor=extractor.name,
                          weights=d.pop("weights"), random_weights=extractor.random_weights,
                          modality=extractor.modality, extra={"columns": d.get("columns"), "input": d.get("input"),
                                                               "crop": "MTCNN largest face, 112 px mtcnn_box template"})
    fs = FeatureSet.create(out, meta)
    todo = [f for f in files if f.stem not in fs]
    detector = default_detector()
    size, kind = extractor.input.size, extractor.input.template
    for b in range(0, len(todo), batch_size):
        batch = todo[b:b + batch_size]
        images = [read_image(f) for f in batch]
        dets = detector.detect(images)
        crops, found = [], []
        for img, det in zip(images, dets):
            if len(det):
                areas = (det.boxes[:, 2] - det.boxes[:, 0]) * (det.boxes[:, 3] - det.boxes[:, 1])
                crops.append(align_face(img, det.landmarks[int(np.argmax(areas))], size, kind))
                found.append(True)
            else:
                crops.append(np.zeros((size, size, 3), np.uint8))
                found.append(False)
        rows = extractor(np.stack(crops))  # (B, 263)
        for f, row, ok in zip(batch, rows, found):
            fs.write(VideoFeatures(f.stem, (row if ok else np.zeros_like(row))[None], np.zeros(1), np.array([ok])))
    return fs


def person(name: str) -> str:
    """Identity of a photo from its file name: ``George_W_Bush_0012.jpg`` -> ``George_W_Bush``."""
    return re.sub(r"_\d+$", "", Path(name).stem)


def write_manifest(rows: list[tuple[str, str]], path: Path) -> Path:
    """``id,label,group`` (group = the person, for identity-disjoint folds)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "label", "group"])
        w.writerows((Path(name).stem, cls, person(name)) for name, cls in rows)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "faces"))
    ap.add_argument("--cache", default="/tmp/affectfuse_faces")
    ap.add_argument("--out", default=None)
    ap.add_argument("--per-class", type=int, default=None, help="subset: at most N photos per class")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--group-by-person", action="store_true",
                    help="identity-disjoint folds (StratifiedGroupKFold on the person in the file name)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from affectfuse.cli import main as cli

    data, cache = Path(args.data), Path(args.cache)
    rows = read_labels(data, args.per_class)
    start = time.perf_counter()
    fs = extract_photos([data / "images" / name for name, _ in rows], cache / "faceexpressionnet")
    found = np.mean([fs.read(Path(n).stem).mask[0] for n, _ in rows])
    print(f"features: {len(rows)} photos, face found in {found:.1%}, {time.perf_counter() - start:.1f} s")
    manifest = write_manifest(rows, cache / "manifest.csv")
    out = args.out or str(cache / "probe")
    grouped = ["--group"] if args.group_by_person else []
    return cli(["expr", "probe", "--manifest", str(manifest), "--features", str(fs.path), "--folds", str(args.folds),
                *grouped, "--classifier", "both", "--zero-shot", "--out", out,
                "--set", f"epochs={args.epochs}", "--set", "patience=15", "--set", "lr=0.001",
                "--set", "batch_size=64", "--set", "model.d_model=128", "--set", "model.n_layers=1",
                "--set", "model.dropout=0.3", "--set", "model.input_dropout=0.3", "--set", "class_weights=inverse"])


if __name__ == "__main__":
    raise SystemExit(main())
