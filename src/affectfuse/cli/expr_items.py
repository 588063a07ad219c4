"""``affectfuse expr`` on manifests with one label per item: train / evaluate / predict with item checkpoints,
and ``expr cv`` (the item classifier against its built-in logistic probe across groups).

The classifier itself is :mod:`affectfuse.training.items`; shared helpers live in :mod:`affectfuse.cli.expr`.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from affectfuse.cli.expr import (_config, _describe_sets, _label_note, _manifest_table, _open_sets, _print,
                                 _sets_for_checkpoint, _summary, _write_item_probabilities, _write_scores)

log = logging.getLogger(__name__)


def _manifest_rows(path, split, face_sets, label_map: str | None = None):
    """(table, :class:`~affectfuse.data.items.ItemRows`) of a manifest split (``None`` = every row)."""
    from affectfuse.data.items import load_item_rows

    table, _ = _manifest_table(path, split, label_map)
    return table, load_item_rows(table.ids, table.labels, face_sets, table.groups)


def train_items(args) -> int:
    """``expr train --manifest``: the item classifier on the train rows, early-stopped on the val rows."""
    from affectfuse.training.items import fit_items, write_item_run

    if args.audio:
        raise ValueError("--audio applies to frame training; with --manifest give every feature set to --features")
    out = Path(args.out)
    if (out / "best.pt").is_file():
        if not args.resume:
            raise ValueError(f"{out}: an EXPR run exists here already; pass --resume to go on or choose another --out")
        print(f"{out}: finished item run, not trained again", file=sys.stderr)
        _print(json.loads((out / "result.json").read_text()))
        return 0
    config = _config(args.config, args.set, items=True)
    face = _open_sets(args.features)
    table, train = _manifest_rows(args.manifest, "train", face, args.label_map)
    _, val = _manifest_rows(args.manifest, "val", face, args.label_map)
    if not len(train) or not len(val):
        raise ValueError(f"{args.manifest}: item training needs train and val rows (split column)")
    class_names = list(table.label_names)
    info = {"feature_sets": _describe_sets(face), **_label_note(class_names, args.label_map)}
    run = fit_items(train, val, config, class_names)
    result = write_item_run(out, run, config, info)
    _say_versus_probe(result)
    _print({"best_epoch": run.best_epoch, "checkpoint": str(out / "best.pt"), **_summary(run.val),
            "probe": _summary(run.probe["val"]), "beats_probe": result["beats_probe"]})
    return 0


def _say_versus_probe(result: dict) -> None:
    m, p, k = result["model"], result["probe"], result["metric"]
    print(f"item head: val {k} {m[k]:.4f} (macro F1 {m['macro_f1']:.4f}); logistic probe on the same pooled "
          f"features (C {result['probe_C']:g}): {k} {p[k]:.4f} (macro F1 {p['macro_f1']:.4f}); kept: "
          f"{result['kept']} (epoch {result['best_epoch']})", file=sys.stderr)


def item_checkpoint(path):
    """The item checkpoint dict at ``path``, or None when the file is a frame checkpoint (or unreadable:
    the frame loader then names the problem)."""
    from affectfuse.training.checkpoint import read_checkpoint
    from affectfuse.training.items import ITEMS_FORMAT

    try:
        return read_checkpoint(path, ITEMS_FORMAT, "EXPR item checkpoint")
    except (ValueError, FileNotFoundError):
        return None


def _item_inputs(args, ckpt, split):
    """(table, ItemRows, ItemClassifier) of a manifest split for an item checkpoint."""
    from affectfuse.training.items import classifier_from_payload

    if not args.manifest:
        raise ValueError(f"{args.checkpoint}: an item checkpoint (expr train --manifest) needs --manifest")
    info = ckpt["info"]
    face, _ = _sets_for_checkpoint(args, info)
    table, items = _manifest_rows(args.manifest, split, face, info.get("label_map"))
    clf = classifier_from_payload(ckpt)
    items.set_names = list(clf.norm)  # the checkpoint's keys for the same sets, in its order
    return table, items, clf


def evaluate_items(args, ckpt) -> int:
    from affectfuse.metrics.classification import format_scores
    from affectfuse.training.items import scores_of

    table, items, clf = _item_inputs(args, ckpt, args.split)
    if list(table.label_names) != clf.class_names:
        raise ValueError(f"{args.manifest}: classes {list(table.label_names)} differ from the checkpoint's "
                         f"{clf.class_names}")
    probs = clf.probabilities(items)
    scores = scores_of(items.labels, probs, clf.class_names)
    print(format_scores(scores))
    if args.out:
        out = Path(args.out)
        _write_scores(out, scores, f"EXPR items {Path(args.checkpoint).name}")
        _write_item_probabilities(out / "probabilities.csv", table.file_ids, probs, clf.class_names,
                                  truth=items.labels)
    _print(_summary(scores))
    return 0


def predict_items(args, ckpt) -> int:
    table, items, clf = _item_inputs(args, ckpt, args.split)
    _write_item_probabilities(args.out, table.file_ids, clf.probabilities(items), clf.class_names)
    _print({"items": len(items), "out": args.out})
    return 0


def cross_validate_command(args) -> int:
    """``expr cv``: out-of-fold scores of the default item classifier and of its probe."""
    from affectfuse.metrics.classification import format_scores
    from affectfuse.training.items import cross_validate
    from affectfuse.utils import write_json_atomic

    config = _config(args.config, args.set, items=True)
    face = _open_sets(args.features)
    table, items = _manifest_rows(args.manifest, None, face, args.label_map)
    if (items.labels < 0).any():
        raise ValueError(f"{args.manifest}: {int((items.labels < 0).sum())} item(s) without a label; cv needs labels")
    names = list(table.label_names)
    how = (f"{args.folds} grouped folds" if args.folds else "leave one group out") if items.groups else \
        f"{args.folds or 5} stratified folds"
    print(f"expr cv: {len(items)} items, {how}, feature sets {', '.join(items.set_names)}", file=sys.stderr)
    res = cross_validate(items, names, config, args.folds, progress=lambda m: print(m, file=sys.stderr, flush=True))
    for kind in ("model", "probe"):
        print(f"== {kind} ==\n{format_scores(res[kind])}")
    summary = {k: _summary(res[k]) for k in ("model", "probe")}
    summary["beats_probe"] = bool(res["model"][config.metric] >= res["probe"][config.metric])
    if not summary["beats_probe"]:
        log.warning("the item head (%s %.4f) is worse than its logistic probe (%.4f) out of fold", config.metric,
                    res["model"][config.metric], res["probe"][config.metric])
    if args.out:
        out = Path(args.out)
        for kind in ("model", "probe"):
            _write_scores(out, res[kind], f"cv {kind}: {Path(args.manifest).name}", prefix=f"{kind}_")
        write_json_atomic(out / "cv.json", {"manifest": str(args.manifest), "features": _describe_sets(face),
                                            "splits": how, "config": _config_dict(config), **summary,
                                            "folds": res["folds"]})
        _write_cv_probabilities(out / "probabilities.csv", table, res["probabilities"], names)
    _print({**summary, "metric": config.metric})
    return 0


def _config_dict(config) -> dict:
    from dataclasses import asdict

    return asdict(config)


def _write_cv_probabilities(path, table, probs: dict, class_names) -> None:
    """``id, group, label, model_<class>..., probe_<class>..., model_predicted, probe_predicted``."""
    import numpy as np
    import pandas as pd

    from affectfuse.utils import write_text_atomic

    df = pd.DataFrame({"id": table.file_ids, "group": table.groups if table.groups is not None else "",
                       "label": [class_names[int(k)] for k in table.labels]})
    for kind in ("model", "probe"):
        for j, name in enumerate(class_names):
            df[f"{kind}_{name}"] = probs[kind][:, j]
    for kind in ("model", "probe"):
        df[f"{kind}_predicted"] = np.asarray(class_names)[probs[kind].argmax(1)]
    write_text_atomic(path, df.to_csv(index=False, float_format="%.6f"))
