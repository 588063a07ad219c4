"""Faces photos, 5 folds, with the default commands only: ``affectfuse extract`` then ``affectfuse classify cv``.

Usage::

    python scripts/faces_cv.py --out /tmp/faces_cv [--data ../shared/data/faces] [--split both|stratified|person]

Steps, each a plain command a user would type (printed as it runs):

1. ``affectfuse extract DATA/images --out OUT/feats`` with no option: the photo default (faceexpressionnet,
   fer-mini-xception, mobilenetv2-face; the first two averaged over flip+scales views, features.registry
   PHOTO_EXTRACTORS / PHOTO_TTA); face crops come from and go to the shared face-crop cache, so a rerun
   does not detect again, and a rerun into the same OUT does not extract again;
2. a manifest ``OUT/manifest*.csv`` (``id,label[,group]``) from ``DATA/labels.csv``: the id is the image
   name without its extension (the key ``extract`` gives a photo), the label the collection's emotion
   name (``--label-map abaw`` maps contempt to Other), the group the person (the file name without its
   number, e.g. ``John_Ashcroft``) in the person-disjoint manifest only;
3. ``affectfuse classify cv --manifest M --features <every face feature set extract wrote> --folds 5
   --label-map abaw --out OUT/cv_<split>``: without a group column the 5 folds are stratified (photos of
   one person can sit on both sides), with it they are person-disjoint (``StratifiedGroupKFold``).

Prints one table: per split, the model and its built-in logistic probe: pooled out-of-fold macro F1,
UAR, accuracy, per-fold macro F1 mean +- s.d., and per-class F1.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "faces"
PERSON = re.compile(r"_?\d+$")   # John_Ashcroft_0030 -> John_Ashcroft, Dwarakish_106 -> Dwarakish


def run(cmd: list[str]) -> None:
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def cv_command(exe: list[str]) -> list[str]:
    """``classify cv``; ``expr cv`` (its older spelling) on a checkout that predates ``classify``."""
    probe = subprocess.run(exe + ["classify", "--help"], capture_output=True)
    return ["classify", "cv"] if probe.returncode == 0 else ["expr", "cv"]


def write_manifest(data: Path, path: Path, person_groups: bool) -> None:
    """``id,label[,group]`` of every photo in ``data/labels.csv``."""
    table = pd.read_csv(data / "labels.csv")
    ids = [Path(name).stem for name in table["image"]]
    out = pd.DataFrame({"id": ids, "label": table["emotion"].str.lower()})
    if person_groups:
        out["group"] = [PERSON.sub("", i) for i in ids]
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, index=False)


def face_sets(feats: Path) -> list[Path]:
    """Feature folders under ``feats`` that hold rows for the photos (audio sets skip photos)."""
    sets = []
    for meta in sorted(feats.glob("*/meta.json")):
        index = meta.parent / "index.csv"
        if index.is_file() and len(pd.read_csv(index)):
            sets.append(meta.parent)
    if not sets:
        raise SystemExit(f"{feats}: extract wrote no feature set with rows")
    return sets


def summarise(cv_dir: Path) -> list[str]:
    cv = json.loads((cv_dir / "cv.json").read_text())
    lines = []
    for kind in ("model", "probe"):
        scores = json.loads((cv_dir / f"{kind}_scores.json").read_text())
        per_fold = np.array([f[f"{kind}_macro_f1"] for f in cv["folds"]])
        per_class = " ".join(f"{n} {s['f1']:.3f}" for n, s in scores["per_class"].items())
        lines.append(f"| {cv_dir.name} | {kind} | {scores['macro_f1']:.3f} | {per_fold.mean():.3f} +- "
                     f"{per_fold.std():.3f} | {scores['uar']:.3f} | {scores['accuracy']:.3f} | {per_class} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for features, manifests and cv results")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="faces folder (labels.csv + images/)")
    parser.add_argument("--split", choices=("both", "stratified", "person"), default="both")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    if not (data / "labels.csv").is_file():
        raise SystemExit(f"{data}: no labels.csv (the shared faces photos live in ../shared/data/faces)")
    exe = [sys.executable, "-m", "affectfuse.cli"]
    run(exe + ["extract", str(data / "images"), "--out", str(out / "feats"), "--no-progress"])
    sets = [str(s) for s in face_sets(out / "feats")]
    rows = []
    for split in ("stratified", "person"):
        if args.split not in ("both", split):
            continue
        manifest = out / f"manifest_{split}.csv"
        write_manifest(data, manifest, person_groups=split == "person")
        run(exe + cv_command(exe) + ["--manifest", str(manifest), "--features", *sets, "--folds", str(args.folds),
                   "--label-map", "abaw", "--out", str(out / f"cv_{split}")])
        rows += summarise(out / f"cv_{split}")
    print(f"feature sets: {', '.join(Path(s).name for s in sets)}")
    print("| split | | pooled macro F1 | per-fold macro F1 | UAR | accuracy | per-class F1 |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
