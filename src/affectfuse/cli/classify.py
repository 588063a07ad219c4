"""``affectfuse classify``: one label per item from a manifest (CSV with ``path``/``id``, ``label``, optional
``split`` and ``group``): the item classifier of :mod:`affectfuse.training.items` (rows standardised, pooled to
mean + std per feature set, a small head started at a logistic probe's solution).

Sub-commands::

    classify train     manifest train/val rows + feature sets -> run folder with best.pt (item checkpoint)
    classify evaluate  item checkpoint + a manifest split -> macro F1 / UAR / accuracy, per class, confusion PNG
    classify predict   item checkpoint + a manifest split -> per-item probability CSV (class names as columns)
    classify cv        leave-one-group-out (or k-fold) scores of the classifier and of its logistic probe

The old spellings ``expr train --manifest``, ``expr cv`` and ``expr evaluate|predict`` with an item checkpoint
run these after a deprecation line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from affectfuse.cli.common import Sub, add_group, print_json, run_group, score_summary

HELP = "one label per manifest item (speech clips, photos, videos): train, evaluate, predict, cv"
log = logging.getLogger(__name__)


def _manifest_features(p) -> None:
    p.add_argument("--manifest", required=True, metavar="CSV", help="manifest with a 'label' (+ 'group') column")
    p.add_argument("--features", nargs="+", required=True, metavar="FOLDER",
                   help="feature sets (each pooled per item)")


def _config_options(p) -> None:
    p.add_argument("--config", metavar="YAML", help="item classifier recipe (ItemTrainConfig fields)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an item classifier option, e.g. --set hidden=0")


def label_map_option(p) -> None:
    p.add_argument("--label-map", metavar="MAP",
                   help="map the manifest's class names onto the 8 ABAW classes before training, so that "
                        "`affectfuse predict --expr-checkpoint` can use the model: 'abaw' (usual spellings, "
                        "contempt -> Other) or NAME=CLASS pairs, e.g. --label-map contempt=Other,joy=Happiness")


def item_config(path: str | None, overrides: list[str]):
    """:class:`~affectfuse.training.items.ItemTrainConfig`: defaults -> recipe YAML -> ``--set`` (typed)."""
    from affectfuse.training.items import ItemTrainConfig
    from affectfuse.training.resolver import resolve_dataclass

    return resolve_dataclass(ItemTrainConfig, files=path, overrides=overrides)


# -- train ---------------------------------------------------------------------------------------------
def add_train(p) -> None:
    _manifest_features(p)
    _config_options(p)
    label_map_option(p)
    p.add_argument("--out", required=True, metavar="RUN_DIR")
    p.add_argument("--resume", action="store_true", help="a finished run in --out is reported, not trained again")


def run_train(args) -> int:
    """The item classifier on the manifest's train rows, early-stopped on its val rows (:func:`affectfuse.api.train`)."""
    from affectfuse.api import train

    if getattr(args, "audio", None):
        raise ValueError("--audio applies to frame training; with --manifest give every feature set to --features")
    res = train("classify", features=args.features, manifest=args.manifest, out=args.out, config=args.config,
                overrides=args.set, label_map=args.label_map, resume=args.resume)
    if res.get("finished_earlier"):
        print(f"{args.out}: finished item run, not trained again", file=sys.stderr)
        print_json({k: v for k, v in res.items() if k not in ("run", "checkpoint", "finished_earlier")})
        return 0
    if res["note"]:
        print(f"note: {res['note']}", file=sys.stderr)
    elif args.label_map:
        print(f"classes after --label-map {args.label_map}: {', '.join(res['val']['class_names'])}", file=sys.stderr)
    m, p, k = res["model"], res["probe"], res["metric"]
    print(f"item head: val {k} {m[k]:.4f} (macro F1 {m['macro_f1']:.4f}); logistic probe on the same pooled "
          f"features (C {res['probe_C']:g}): {k} {p[k]:.4f} (macro F1 {p['macro_f1']:.4f}); kept: "
          f"{res['kept']} (epoch {res['best_epoch']})", file=sys.stderr)
    print_json({"best_epoch": res["best_epoch"], "checkpoint": res["checkpoint"], **score_summary(res["val"]),
                "probe": score_summary(res["probe_val"]), "beats_probe": res["beats_probe"]})
    return 0


# -- evaluate / predict --------------------------------------------------------------------------------
def add_evaluate(p, split_default="val") -> None:
    p.add_argument("--checkpoint", required=True, help="item checkpoint (best.pt of classify train)")
    p.add_argument("--manifest", required=True, metavar="CSV", help="manifest with the items")
    p.add_argument("--features", nargs="+", metavar="FOLDER",
                   help="feature sets (default: the folders the checkpoint names)")
    p.add_argument("--split", default=split_default, help=f"manifest split (default {split_default})")
    p.add_argument("--out", required=split_default == "test", metavar="DIR" if split_default == "val" else "CSV",
                   help="evaluate: write scores.json, per_class.csv, confusion.png, probabilities.csv; "
                        "predict: the probability CSV")


def _item_inputs(args, ckpt):
    """(table, ItemRows, ItemClassifier) of the manifest split for the item checkpoint ``ckpt``."""
    from affectfuse.data.manifest_splits import checkpoint_sets, manifest_rows
    from affectfuse.training.items import classifier_from_payload

    if not args.manifest:
        raise ValueError(f"{args.checkpoint}: an item checkpoint (classify train) needs --manifest")
    info = ckpt["info"]
    face, _ = checkpoint_sets(args.checkpoint, info, args.features)
    table, items = manifest_rows(args.manifest, args.split, face, info.get("label_map"))
    clf = classifier_from_payload(ckpt)
    items.set_names = list(clf.norm)  # the checkpoint's keys for the same sets, in its order
    return table, items, clf


def _checkpoint(path):
    from affectfuse.inference.from_features import item_checkpoint

    ckpt = item_checkpoint(path)
    if ckpt is None:
        raise ValueError(f"{path}: not an item checkpoint (classify train); a per-frame checkpoint goes to "
                         "`affectfuse expr evaluate|predict`")
    return ckpt


def run_evaluate(args, ckpt=None) -> int:
    from affectfuse.metrics.classification import format_scores
    from affectfuse.outputs.class_scores import write_item_probabilities, write_scores
    from affectfuse.training.items import scores_of

    table, items, clf = _item_inputs(args, ckpt or _checkpoint(args.checkpoint))
    if list(table.label_names) != clf.class_names:
        raise ValueError(f"{args.manifest}: classes {list(table.label_names)} differ from the checkpoint's "
                         f"{clf.class_names}")
    probs = clf.probabilities(items)
    scores = scores_of(items.labels, probs, clf.class_names)
    print(format_scores(scores))
    if args.out:
        out = Path(args.out)
        write_scores(out, scores, f"items {Path(args.checkpoint).name}")
        write_item_probabilities(out / "probabilities.csv", table.file_ids, probs, clf.class_names,
                                 truth=items.labels)
    print_json(score_summary(scores))
    return 0


def run_predict(args, ckpt=None) -> int:
    from affectfuse.outputs.class_scores import write_item_probabilities

    table, items, clf = _item_inputs(args, ckpt or _checkpoint(args.checkpoint))
    write_item_probabilities(args.out, table.file_ids, clf.probabilities(items), clf.class_names)
    print_json({"items": len(items), "out": args.out})
    return 0


# -- cv ------------------------------------------------------------------------------------------------
def add_cv(p) -> None:
    _manifest_features(p)
    p.add_argument("--folds", type=int, help="k grouped folds (default: leave one group out; 5 stratified "
                                             "folds when the manifest has no 'group' column)")
    label_map_option(p)
    _config_options(p)
    p.add_argument("--out", metavar="DIR", help="write cv.json, model_/probe_scores.json, per_class.csv, "
                                               "confusion.png and probabilities.csv")


def run_cv(args) -> int:
    """Out-of-fold scores of the default item classifier and of its probe."""
    from dataclasses import asdict

    from affectfuse.data.manifest_splits import describe_sets, manifest_rows, open_sets
    from affectfuse.metrics.classification import format_scores
    from affectfuse.outputs.class_scores import write_cv_probabilities, write_scores
    from affectfuse.training.items import cross_validate
    from affectfuse.utils import write_json_atomic

    config = item_config(args.config, args.set)
    face = open_sets(args.features)
    table, items = manifest_rows(args.manifest, None, face, args.label_map)
    if (items.labels < 0).any():
        raise ValueError(f"{args.manifest}: {int((items.labels < 0).sum())} item(s) without a label; cv needs labels")
    names = list(table.label_names)
    how = (f"{args.folds} grouped folds" if args.folds else "leave one group out") if items.groups else \
        f"{args.folds or 5} stratified folds"
    print(f"classify cv: {len(items)} items, {how}, feature sets {', '.join(items.set_names)}", file=sys.stderr)
    res = cross_validate(items, names, config, args.folds, progress=lambda m: print(m, file=sys.stderr, flush=True))
    for kind in ("model", "probe"):
        print(f"== {kind} ==\n{format_scores(res[kind])}")
    summary = {k: score_summary(res[k]) for k in ("model", "probe")}
    summary["beats_probe"] = bool(res["model"][config.metric] >= res["probe"][config.metric])
    if not summary["beats_probe"]:
        log.warning("the item head (%s %.4f) is worse than its logistic probe (%.4f) out of fold", config.metric,
                    res["model"][config.metric], res["probe"][config.metric])
    if args.out:
        out = Path(args.out)
        for kind in ("model", "probe"):
            write_scores(out, res[kind], f"cv {kind}: {Path(args.manifest).name}", prefix=f"{kind}_")
        write_json_atomic(out / "cv.json", {"manifest": str(args.manifest), "features": describe_sets(face),
                                            "splits": how, "config": asdict(config), **summary,
                                            "folds": res["folds"]})
        write_cv_probabilities(out / "probabilities.csv", table, res["probabilities"], names)
    print_json({**summary, "metric": config.metric})
    return 0


COMMANDS = {
    "train": Sub("train the item classifier on a manifest's train rows (early stopping on its val rows)",
                 add_train, run_train),
    "evaluate": Sub("score an item checkpoint on a manifest split", add_evaluate, run_evaluate),
    "predict": Sub("per-item class probabilities from an item checkpoint",
                   lambda p: add_evaluate(p, split_default="test"), run_predict),
    "cv": Sub("cross-validate the item classifier against its logistic probe (leave one group out)",
              add_cv, run_cv),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_group(parser, "classify", COMMANDS)


run = run_group
