"""The levers tried for the faces photos (docs/expr.md "Faces"): networks, test-time views, identical 5 folds.

Usage (after ``scripts/faces_cv.py`` or any ``affectfuse extract`` of the photos filled the face-crop cache)::

    python scripts/faces_levers.py --out /tmp/faces_levers [--data ../shared/data/faces] [--configs a,b,...]

Per photo, the cached 112 px ``mtcnn_box`` crop (:mod:`affectfuse.faces.crop_cache`; a photo without a
face has no row, as in ``extract``) goes through ``faceexpressionnet`` and ``fer-mini-xception`` under
every view of :func:`affectfuse.features.tta.views` (zoom 0.8, 0.9, 1.0, 1.15, each also mirrored);
outputs are cached in ``OUT/views_<extractor>.npz``. A configuration averages some views per network and
concatenates networks as feature sets; it is scored by the default item classifier's probe (rows
standardised with the training fold, pooled, block-scaled logistic regression, ``C`` chosen by the UAR of
inner folds of the training fold only; the default head *is* this probe, ``hidden=0``), on the same 5
stratified folds and the same 5 person-disjoint folds for every configuration.

Note: here ``fer-mini-xception`` sees the 112 px RGB crop turned grey and resized to 64 px; ``extract`` cuts
its own 64 px grey crop (its plan), so the figures of ``scripts/faces_cv.py`` differ slightly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from faces_cv import DEFAULT_DATA, PERSON  # noqa: E402

CLASSES = ["Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other"]
LABELS = {"neutral": 0, "anger": 1, "disgust": 2, "fear": 3, "happiness": 4, "sadness": 5, "surprise": 6,
          "contempt": 7}
SCALES = (0.8, 0.9, 1.0, 1.15)
NETS = {"fex": "faceexpressionnet", "fer": "fer-mini-xception"}
# name -> {feature set: (network, scales, flips)}
CONFIGS = {
    "fex": {"fex": ("fex", (1.0,), (0,))},
    "fex flip": {"fex": ("fex", (1.0,), (0, 1))},
    "fex flip+scales": {"fex": ("fex", (0.9, 1.0, 1.15), (0, 1))},
    "fer": {"fer": ("fer", (1.0,), (0,))},
    "fer flip": {"fer": ("fer", (1.0,), (0, 1))},
    "fex + fer": {"fex": ("fex", (1.0,), (0,)), "fer": ("fer", (1.0,), (0,))},
    "fex + fer flip": {"fex": ("fex", (1.0,), (0,)), "fer": ("fer", (1.0,), (0, 1))},
    "fex + fer flip+scales": {"fex": ("fex", (1.0,), (0,)), "fer": ("fer", (0.9, 1.0, 1.15), (0, 1))},
    "fex flip + fer flip": {"fex": ("fex", (1.0,), (0, 1)), "fer": ("fer", (1.0,), (0, 1))},
    "fex flip+scales + fer flip+scales": {"fex": ("fex", (0.9, 1.0, 1.15), (0, 1)),
                                          "fer": ("fer", (0.9, 1.0, 1.15), (0, 1))},
}


def cached_crops(data: Path, images: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """((N, 112, 112, 3) uint8 crops, (N,) face found) from the shared crop cache; error when one is missing."""
    from affectfuse.faces.crop_cache import CropCache
    from affectfuse.faces.plan import CropSpec

    cache, crops, found = CropCache(), [], []
    for name in images:
        hit = cache.read(data / "images" / name, CropSpec(112, "mtcnn_box"))
        if hit is None:
            raise SystemExit(f"{name}: no cached crop; run scripts/faces_cv.py (affectfuse extract) first")
        crops.append(hit[0])
        found.append(hit[1])
    return np.stack(crops), np.asarray(found)


def view_outputs(net: str, crops: np.ndarray, out: Path) -> dict[str, np.ndarray]:
    """{"<scale>|<flip>": (N, D)} of one network over every view (cached in ``out``)."""
    from affectfuse.features.registry import create_extractor
    from affectfuse.features.tta import zoom

    path = out / f"views_{NETS[net]}.npz"
    if path.is_file():
        return dict(np.load(path))
    ext, res = create_extractor(NETS[net], tta="none"), {}
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    for s in SCALES:
        z = zoom(x, s).clamp(0, 255).round().byte().permute(0, 2, 3, 1).numpy()
        for flip in (0, 1):
            res[f"{s}|{flip}"] = ext(np.ascontiguousarray(z[:, :, ::-1] if flip else z))
    out.mkdir(parents=True, exist_ok=True)
    np.savez(path, **res)
    return res


def score(sets: dict[str, np.ndarray], found, y, groups, grouped: bool) -> dict:
    """Out-of-fold scores of the probe on 5 folds (stratified, or person-disjoint with ``grouped``)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    from affectfuse.data.items import ItemRows, pool_items, row_norm_stats
    from affectfuse.metrics.classification import classification_scores
    from affectfuse.training.probes import fit_logistic, logistic_probabilities

    rows = [[x[i:i + 1] if found[i] else x[:0] for i in range(len(x))] for x in sets.values()]
    items = ItemRows([str(i) for i in range(len(y))], list(sets), rows, y, groups)
    index = np.arange(len(y))
    splits = (StratifiedGroupKFold(5, shuffle=True, random_state=0).split(index, y, groups) if grouped
              else StratifiedKFold(5, shuffle=True, random_state=0).split(index, y))
    probs, per_fold = np.zeros((len(y), len(CLASSES))), []
    for tr, te in splits:
        a, b = items.subset(tr), items.subset(te)
        norm = row_norm_stats(a)
        probe = fit_logistic(pool_items(a, norm), a.labels, len(CLASSES), a.groups if grouped else None,
                             blocks=[2 * d for d in a.dims()])
        probs[te] = logistic_probabilities(probe, pool_items(b, norm))
        per_fold.append(classification_scores(y[te], probs[te].argmax(1), len(CLASSES), CLASSES)["macro_f1"])
    s = classification_scores(y, probs.argmax(1), len(CLASSES), CLASSES)
    return {**s, "fold_mean": float(np.mean(per_fold)), "fold_sd": float(np.std(per_fold))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names of CONFIGS")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data, out = Path(args.data), Path(args.out)
    table = pd.read_csv(data / "labels.csv")
    y = table["emotion"].str.lower().map(LABELS).to_numpy()
    groups = [PERSON.sub("", Path(n).stem) for n in table["image"]]
    crops, found = cached_crops(data, list(table["image"]))
    views = {net: view_outputs(net, crops, out) for net in NETS}
    print("| features | split | pooled macro F1 | per-fold macro F1 | UAR | accuracy | Fear F1 | Other F1 |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.configs.split(","):
        sets = {k: np.mean([views[net][f"{s}|{f}"] for s in scales for f in flips], 0)
                for k, (net, scales, flips) in CONFIGS[name].items()}
        for grouped in (False, True):
            s = score(sets, found, y, groups, grouped)
            print(f"| {name} | {'person' if grouped else 'stratified'} | {s['macro_f1']:.3f} | {s['fold_mean']:.3f} "
                  f"+- {s['fold_sd']:.3f} | {s['uar']:.3f} | {s['accuracy']:.3f} | "
                  f"{s['per_class']['Fear']['f1']:.3f} | {s['per_class']['Other']['f1']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
