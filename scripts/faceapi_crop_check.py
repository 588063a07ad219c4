"""How FaceExpressionNet's zero-shot accuracy on labelled photographs depends on the face crop it is given.

Every photo of ``../shared/data/faces`` (contempt left out: face-api has no such class) is read and its largest
MTCNN face detected once; each candidate crop (template, margin) is cut from it with
:func:`affectfuse.faces.plan.crop_faces` and FaceExpressionNet (shipped weights, float32) reads it. Prints
accuracy and unweighted average recall over the 7 classes per crop (no training: nothing is fitted, so no
folds are needed). Photos without a detected face count as wrong for every crop.

Usage::

    python scripts/faceapi_crop_check.py [--faces ../shared/data/faces]
"""

from __future__ import annotations

import argparse
import csv
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = [("mtcnn_box", 0.0), ("mtcnn_box", 0.1), ("mtcnn_box", 0.2), ("arcface", 0.0), ("arcface", 0.1)]
NAMES = {"anger": "angry", "disgust": "disgusted", "fear": "fearful", "happiness": "happy", "neutral": "neutral",
         "sadness": "sad", "surprise": "surprised"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "data" / "faces")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")  # no-face photos: -1

    from affectfuse.faces import load_mtcnn, read_image
    from affectfuse.faces.plan import CropSpec, crop_faces
    from affectfuse.features.faceapi import FACEAPI_CLASSES, FACE_EXPRESSION_PLAN
    from affectfuse.features.registry import create_extractor
    from sklearn.metrics import balanced_accuracy_score

    with open(args.faces / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["emotion"].lower() in NAMES]
    specs = [CropSpec(FACE_EXPRESSION_PLAN.size, t, m) for t, m in CANDIDATES]
    detector, net = load_mtcnn(), create_extractor("faceexpressionnet")
    crops = {s: [] for s in specs}
    labels, found = [], []
    for row in rows:
        image = read_image(args.faces / "images" / row["image"])
        det = detector.detect([image])[0]
        labels.append(FACEAPI_CLASSES.index(NAMES[row["emotion"].lower()]))
        found.append(len(det) > 0)
        if len(det):
            k = int(np.argmax((det.boxes[:, 2] - det.boxes[:, 0]) * (det.boxes[:, 3] - det.boxes[:, 1])))
            for s in specs:
                crops[s].append(crop_faces(image, det.landmarks[k], s)[0])
    labels, found = np.asarray(labels), np.asarray(found)
    print(f"{len(rows)} photos (7 classes), a face detected in {found.sum()}\n")
    print("| crop (template, margin) | accuracy | UAR |")
    print("|---|---|---|")
    for (t, m), s in zip(CANDIDATES, specs):
        pred = np.full(len(rows), -1)
        pred[found] = net.expressions(np.stack(crops[s]))[0].argmax(1)
        declared = " (declared)" if s == FACE_EXPRESSION_PLAN.crop else ""
        print(f"| {t}, {m:g}{declared} | {(pred == labels).mean():.3f} | {balanced_accuracy_score(labels, pred):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
