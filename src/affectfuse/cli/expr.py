"""``affectfuse expr``: per-frame expression classification (ABAW EXPR) and labelled-item probes.

Sub-commands::

    expr train     features + Aff-Wild2 annotation folders (or a manifest) -> run folder with best.pt
    expr evaluate  checkpoint + labelled data -> macro F1 / UAR / accuracy, per class, confusion PNG
    expr predict   checkpoint + features -> per-frame probability CSV (class names as columns)
    expr submit    probability CSVs (several = ensemble, averaged) -> ABAW5/6 submission or per-video txt
    expr validate  check a submission (file or txt folder) against the organisers' frame list
    expr probe     manifest + features -> stratified / grouped k-fold scores (+ zero-shot baseline)
    expr cv        manifest + features -> leave-one-group-out (or k-fold) scores of the default item head
                   and of its built-in logistic probe, side by side

A manifest (one label per item) trains the item-level classifier of :mod:`affectfuse.training.items`
(pooled statistics -> small head started at a logistic probe); Aff-Wild2 annotations (a label per frame)
train the frame transformer of :mod:`affectfuse.training.expr`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

HELP = ("expression classification per frame (ABAW EXPR) or per item (manifest): train, evaluate, predict, "
        "submit, validate, probe, cv")
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="expr_command", metavar="SUBCOMMAND", required=True)

    def features(p, required=True):
        p.add_argument("--features", nargs="+", required=required, metavar="FOLDER",
                       help="face feature sets, stitched per frame in this order" +
                       ("" if required else " (default: those the checkpoint names)"))
        p.add_argument("--audio", metavar="FOLDER", help="optional audio feature set aligned to frames")
        p.add_argument("--fps", type=float, help="video frame rate for rows -> frames (default: from the feature set)")
        p.add_argument("--fill", choices=("ffill", "interpolate", "mask"),
                       help="faceless frames: forward-fill, interpolate or mask (default ffill / the checkpoint's)")

    def data(p, split_default="val"):
        p.add_argument("--annotations", metavar="DIR", help="Aff-Wild2 <video>.txt annotation folder")
        p.add_argument("--manifest", metavar="CSV", help="generic manifest with a 'label' column (items)")
        p.add_argument("--split", default=split_default, help=f"manifest split to use (default {split_default})")

    t = sub.add_parser("train", help="train the EXPR frame transformer")
    features(t)
    t.add_argument("--annotations", metavar="DIR", help="training annotation folder (Train_Set)")
    t.add_argument("--val-annotations", metavar="DIR", help="validation annotation folder (Validation_Set)")
    t.add_argument("--manifest", metavar="CSV", help="generic manifest with train and val rows (instead)")
    t.add_argument("--config", metavar="YAML", help="training config recipe (ExprTrainConfig fields)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set epochs=50 --set model.d_model=128")
    t.add_argument("--label-map", metavar="MAP",
                   help="map the manifest's class names onto the 8 ABAW classes before training, so that "
                        "`affectfuse predict --expr-checkpoint` accepts the checkpoint: 'abaw' (usual spellings, "
                        "contempt -> Other) or NAME=CLASS pairs, e.g. --label-map contempt=Other,joy=Happiness")
    t.add_argument("--out", required=True, metavar="RUN_DIR")
    t.add_argument("--resume", action="store_true", help="go on with the run in --out (same config) from its last.pt")

    e = sub.add_parser("evaluate", help="score a checkpoint on labelled data")
    e.add_argument("--checkpoint", required=True)
    features(e, required=False)
    data(e)
    e.add_argument("--smooth", default=None, help="temporal smoothing: none, mean:N or mode:N")
    e.add_argument("--out", metavar="DIR", help="write scores.json, per_class.csv, confusion.png, probabilities.csv")

    p = sub.add_parser("predict", help="per-frame class probabilities from a checkpoint")
    p.add_argument("--checkpoint", required=True)
    features(p, required=False)
    data(p, split_default="test")
    p.add_argument("--frame-list", metavar="FILE", help="organisers' list: videos and frame counts to predict")
    p.add_argument("--ids", nargs="+", help="video ids to predict (frames: all the features cover)")
    p.add_argument("--smooth", default=None, help="temporal smoothing: none, mean:N or mode:N")
    p.add_argument("--out", required=True, metavar="CSV")

    s = sub.add_parser("submit", help="probability CSV(s) -> challenge submission (several are averaged)")
    s.add_argument("--probabilities", nargs="+", required=True, metavar="CSV")
    s.add_argument("--frame-list", required=True, metavar="FILE")
    s.add_argument("--smooth", default=None, help="temporal smoothing: none, mean:N or mode:N")
    s.add_argument("--format", choices=("abaw", "txt"), default="abaw",
                   help="abaw: one ABAW5/6 file; txt: one <video>.txt per video (older rounds)")
    s.add_argument("--out", required=True, metavar="PATH")

    v = sub.add_parser("validate", help="check a submission against the frame list")
    v.add_argument("submission", help="ABAW5/6 submission file, or a folder of <video>.txt files")
    v.add_argument("--frame-list", required=True, metavar="FILE")

    r = sub.add_parser("probe", help="k-fold classification probe on a labelled manifest")
    r.add_argument("--manifest", required=True, metavar="CSV")
    r.add_argument("--features", nargs="+", required=True, metavar="FOLDER")
    r.add_argument("--folds", type=int, default=5)
    r.add_argument("--group", action="store_true", help="grouped folds by the manifest's 'group' column")
    r.add_argument("--classifier", choices=("transformer", "logreg", "both"), default="both",
                   help="transformer (the EXPR frame model, minutes per fold), logreg (linear probe on mean "
                        "features, seconds) or both (default)")
    r.add_argument("--zero-shot", action="store_true",
                   help="also score the feature network's own class probabilities (faceexpressionnet)")
    r.add_argument("--fill", choices=("ffill", "interpolate", "mask"), default="ffill")
    r.add_argument("--config", metavar="YAML")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", metavar="DIR")

    c = sub.add_parser("cv", help="cross-validate the default item classifier against its logistic probe")
    c.add_argument("--manifest", required=True, metavar="CSV", help="manifest with a 'label' (+ 'group') column")
    c.add_argument("--features", nargs="+", required=True, metavar="FOLDER", help="feature sets (each pooled)")
    c.add_argument("--folds", type=int, help="k grouped folds (default: leave one group out; 5 stratified "
                                             "folds when the manifest has no 'group' column)")
    c.add_argument("--label-map", metavar="MAP", help="as for expr train")
    c.add_argument("--config", metavar="YAML", help="item classifier recipe (ItemTrainConfig fields)")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an item classifier option, e.g. --set hidden=0")
    c.add_argument("--out", metavar="DIR", help="write cv.json, model_/probe_scores.json, per_class.csv, "
                                               "confusion.png and probabilities.csv")


def run(args: argparse.Namespace) -> int:
    return {"train": _train, "evaluate": _evaluate, "predict": _predict, "submit": _submit,
            "validate": _validate, "probe": _probe, "cv": _cv}[args.expr_command](args)


def _cv(args) -> int:
    from affectfuse.cli.expr_items import cross_validate_command

    return cross_validate_command(args)


# -- helpers -------------------------------------------------------------------------------------------
def _config(path: str | None, overrides: list[str], items: bool = False):
    """ExprTrainConfig (frames) or, with ``items``, ItemTrainConfig: recipe YAML, then ``--set`` pairs."""
    import yaml

    from affectfuse.training.expr import ExprTrainConfig
    from affectfuse.training.items import ItemTrainConfig
    from affectfuse.utils import parse_value

    values: dict = {}
    if path:
        values = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a config recipe must be a mapping of ExprTrainConfig fields")
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: use KEY=VALUE")
        value = parse_value(text)
        if key.startswith("model.") and not items:
            values.setdefault("model", {})[key[6:]] = value
        else:
            values[key] = value
    return (ItemTrainConfig if items else ExprTrainConfig).from_dict(values)


def _open_sets(paths):
    from affectfuse.data.store import FeatureSet

    return [FeatureSet.open(p) for p in paths]


def _describe_sets(sets) -> list[dict]:
    return [{"name": fs.meta.name, "path": str(fs.path), "dim": fs.meta.dim, "extractor": fs.meta.extractor,
             "random_weights": fs.meta.random_weights, "weights": fs.meta.weights} for fs in sets]


def _sets_for_checkpoint(args, info: dict):
    """Feature sets named on the command line (checked against the checkpoint) or stored in it."""
    from affectfuse.weights import check_same_weights

    face_paths = args.features or [d["path"] for d in info.get("feature_sets", [])]
    face = _open_sets(face_paths)
    want = [d["dim"] for d in info.get("feature_sets", [])]
    if want and [fs.meta.dim for fs in face] != want:
        raise ValueError(f"feature dims {[fs.meta.dim for fs in face]} differ from the checkpoint's {want} "
                         f"({', '.join(d['name'] for d in info['feature_sets'])})")
    for d, fs in zip(info.get("feature_sets", []), face):
        check_same_weights(d, fs.meta.to_dict(), f"{args.checkpoint} (feature set {d['name']!r})",
                           f"feature set {fs.meta.name!r} ({fs.path})")
    audio_path = args.audio or (info.get("audio_set") or {}).get("path")
    audio = _open_sets([audio_path])[0] if audio_path else None
    return face, audio


def _manifest_items(path, split, face_sets, fill, label_map: str | None = None):
    """(table, items) of a manifest split as frame sequences (for frame checkpoints and ``expr probe``)."""
    from affectfuse.data.affwild2 import load_items

    table, _ = _manifest_table(path, split, label_map)
    return table, load_items(table.ids, table.labels, face_sets, fill)


def _print(obj) -> None:
    print(json.dumps(obj))


def _write_scores(out: Path, scores: dict, title: str, prefix: str = "") -> None:
    import csv
    import io

    from affectfuse.outputs.plots import plot_confusion
    from affectfuse.utils import write_json_atomic, write_text_atomic

    write_json_atomic(out / f"{prefix}scores.json", scores)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["class", "f1", "precision", "recall", "support"])
    for name, s in scores["per_class"].items():
        w.writerow([name, f"{s['f1']:.4f}", f"{s['precision']:.4f}", f"{s['recall']:.4f}", s["support"]])
    write_text_atomic(out / f"{prefix}per_class.csv", buf.getvalue())
    plot_confusion(scores["confusion"], scores["class_names"], out / f"{prefix}confusion.png", title=title)


def _write_item_probabilities(path, ids, probs, class_names, truth=None) -> None:
    """CSV ``id, <class probabilities>, predicted[, label]``: probs (N, C) per item, truth (N,) class indices."""
    import numpy as np
    import pandas as pd

    from affectfuse.utils import write_text_atomic

    df = pd.DataFrame(np.asarray(probs), columns=list(class_names))
    df.insert(0, "id", list(ids))
    df["predicted"] = np.asarray(class_names)[np.asarray(probs).argmax(1)]
    if truth is not None:
        df["label"] = [class_names[int(k)] if int(k) >= 0 else "" for k in truth]
    write_text_atomic(path, df.to_csv(index=False, float_format="%.6f"))


def _summary(scores: dict) -> dict:
    return {k: round(scores[k], 4) if isinstance(scores[k], float) else scores[k]
            for k in ("macro_f1", "uar", "accuracy", "n")}


# -- sub-commands --------------------------------------------------------------------------------------
def _train(args) -> int:
    from affectfuse.data.affwild2 import load_expr_videos, read_expr_folder
    from affectfuse.training.expr import train_expr

    if args.manifest:
        from affectfuse.cli.expr_items import train_items

        return train_items(args)
    config = _config(args.config, args.set)
    face = _open_sets(args.features)
    audio = _open_sets([args.audio])[0] if args.audio else None
    fill = args.fill or "ffill"
    info = {"feature_sets": _describe_sets(face), "audio_set": _describe_sets([audio])[0] if audio else None,
            "audio_dim": audio.meta.dim if audio else 0, "fill": fill, "fps": args.fps}
    if args.annotations and args.val_annotations:
        from affectfuse.labels import EXPR_CLASSES

        if args.label_map:
            raise ValueError("--label-map applies to --manifest labels; Aff-Wild2 annotations are ABAW classes")
        train = load_expr_videos(read_expr_folder(args.annotations), face, audio, args.fps, fill)
        val = load_expr_videos(read_expr_folder(args.val_annotations), face, audio, args.fps, fill)
        class_names, info["task"] = EXPR_CLASSES, "frames"
    else:
        raise ValueError("expr train needs --annotations and --val-annotations, or --manifest")
    run = train_expr(train, val, config, run_dir=args.out, info=info, class_names=class_names, progress=True,
                     resume=args.resume)
    _print({"best_epoch": run.best_epoch, "checkpoint": str(Path(args.out) / "best.pt"), **_summary(run.best)})
    return 0


def _manifest_table(path, split, label_map):
    import dataclasses

    from affectfuse.data.label_map import map_classes, parse_label_map
    from affectfuse.data.layouts import load_manifest

    table = load_manifest(path)
    if table.task != "classification":
        raise ValueError(f"{path}: needs a 'label' column of class names for classification")
    if label_map:
        names, labels = map_classes(table.label_names, table.labels, parse_label_map(label_map))
        table = dataclasses.replace(table, label_names=names, labels=labels)
    return (table.subset(split) if split else table), None


def _label_note(class_names, label_map) -> dict:
    """What ``affectfuse predict --expr-checkpoint`` will make of these classes (said at training time)."""
    from affectfuse.data.label_map import predict_note

    note = predict_note(class_names)
    if note:
        print(f"note: {note}", file=sys.stderr)
    elif label_map:
        print(f"classes after --label-map {label_map}: {', '.join(class_names)}", file=sys.stderr)
    return {"predict_accepts": note is None, "label_map": label_map}


def _load(args):
    from affectfuse.data.windows import parse_smoothing
    from affectfuse.training.expr import load_checkpoint

    model, ckpt = load_checkpoint(args.checkpoint)
    info = ckpt["info"]
    face, audio = _sets_for_checkpoint(args, info)
    return model, ckpt, info, face, audio, parse_smoothing(args.smooth)


def _frame_data(args, info, face, audio, ids=None, n_frames=None, problems=None):
    """Frame sequences of the annotated (or listed) videos; ``problems`` receives why a listed one is left out."""
    from affectfuse.data.affwild2 import load_expr_videos, read_expr_folder

    fill, fps = args.fill or info.get("fill", "ffill"), args.fps or info.get("fps")
    labels = read_expr_folder(args.annotations) if args.annotations else ids
    return load_expr_videos(labels, face, audio, fps, fill, n_frames=n_frames,
                            on_missing="error" if args.annotations else "skip", problems=problems)


def _evaluate(args) -> int:
    from affectfuse.metrics.classification import classification_scores, format_scores
    from affectfuse.outputs.expr_files import write_probabilities
    from affectfuse.training.expr import evaluate_probabilities, item_probabilities, predict_videos

    from affectfuse.cli.expr_items import evaluate_items, item_checkpoint

    items = item_checkpoint(args.checkpoint)
    if items is not None:
        return evaluate_items(args, items)
    model, ckpt, info, face, audio, smoothing = _load(args)
    train_cfg = ckpt["train_config"]
    class_names = info["class_names"]
    if args.manifest:
        table, videos = _manifest_items(args.manifest, args.split, face, args.fill or info.get("fill", "ffill"))
    elif args.annotations:
        videos = _frame_data(args, info, face, audio)
    else:
        raise ValueError("expr evaluate needs --annotations or --manifest")
    probs = predict_videos(model, videos, train_cfg["window"], train_cfg["predict_stride"], smoothing=smoothing)
    if args.manifest:
        item_p = item_probabilities(probs, videos)
        scores = classification_scores(table.labels, item_p.argmax(1), len(class_names), class_names)
    else:
        scores = evaluate_probabilities(videos, probs, class_names)
    print(format_scores(scores))
    if args.out:
        out = Path(args.out)
        _write_scores(out, scores, f"EXPR {Path(args.checkpoint).name}")
        if args.manifest:  # one row per item: its id, the class probabilities, predicted and true class
            _write_item_probabilities(out / "probabilities.csv", table.file_ids, item_p, class_names,
                                      truth=table.labels)
        else:
            write_probabilities(out / "probabilities.csv", probs, face={v.id: v.face for v in videos})
    _print(_summary(scores))
    return 0


def _predict(args) -> int:
    from affectfuse.data.affwild2 import read_frame_list
    from affectfuse.outputs.expr_files import write_probabilities
    from affectfuse.training.expr import item_probabilities, predict_videos

    from affectfuse.cli.expr_items import item_checkpoint, predict_items

    items = item_checkpoint(args.checkpoint)
    if items is not None:
        return predict_items(args, items)
    model, ckpt, info, face, audio, smoothing = _load(args)
    cfg = ckpt["train_config"]
    if args.manifest:
        import numpy as np
        import pandas as pd

        from affectfuse.utils import write_text_atomic

        table, items = _manifest_items(args.manifest, args.split, face, args.fill or info.get("fill", "ffill"))
        p = item_probabilities(predict_videos(model, items, cfg["window"], cfg["predict_stride"]), items)
        _write_item_probabilities(args.out, table.file_ids, p, info["class_names"])
        _print({"items": len(items), "out": args.out})
        return 0
    n_frames, ids = None, args.ids
    if args.frame_list:
        frames = read_frame_list(args.frame_list)
        ids, n_frames = list(frames), {v: int(f.max()) for v, f in frames.items()}
    if not (ids or args.annotations):
        raise ValueError("expr predict needs --frame-list, --ids, --annotations or --manifest")
    problems: list[str] = []
    videos = _frame_data(args, info, face, audio, ids, n_frames, problems)
    missing = sorted(set(ids or []) - {v.id for v in videos})
    if missing:  # the others are still predicted; the failures file lists these, each with its real cause
        from affectfuse.utils import FailureLog

        why = {p.split(": ", 1)[0]: p.split(": ", 1)[1] for p in problems if ": " in p}
        failures = FailureLog(Path(args.out).with_suffix(".failures.csv"))
        for vid in missing:
            reason = why.get(vid, "no usable features in " + ", ".join(str(fs.path) for fs in face))
            log.warning("video %s not predicted: %s", vid, reason)
            print(f"{vid}: not predicted: {reason}", file=sys.stderr)
            failures.add(vid, reason)
    probs = predict_videos(model, videos, cfg["window"], cfg["predict_stride"], smoothing=smoothing)
    write_probabilities(args.out, probs, face={v.id: v.face for v in videos})
    _print({"videos": len(videos), "frames": int(sum(v.n_frames for v in videos)), "missing": missing,
            "out": args.out})
    return 1 if missing else 0


def _submit(args) -> int:
    from affectfuse.data.affwild2 import read_frame_list
    from affectfuse.data.windows import parse_smoothing, smooth_probabilities
    from affectfuse.outputs.expr_files import (average_probabilities, validate_submission, validate_txt_folder,
                                               write_submission, write_txt_folder)

    frame_list = read_frame_list(args.frame_list)
    method, window = parse_smoothing(args.smooth)
    avg = average_probabilities(args.probabilities)
    preds = {v: (fr, smooth_probabilities(p, method, window).argmax(1)) for v, (fr, p, _) in avg.items()}
    if args.format == "txt":
        n_frames = {v: int(f.max()) for v, f in frame_list.items()}
        write_txt_folder(args.out, preds, n_frames)
        result = validate_txt_folder(args.out, n_frames)
    else:
        write_submission(args.out, preds, frame_list)
        result = validate_submission(args.out, frame_list)
    _print({"out": args.out, "runs": len(args.probabilities), **result})
    return 0


def _validate(args) -> int:
    from affectfuse.data.affwild2 import read_frame_list
    from affectfuse.outputs.expr_files import SubmissionError, validate_submission, validate_txt_folder

    frame_list = read_frame_list(args.frame_list)
    try:
        if Path(args.submission).is_dir():
            result = validate_txt_folder(args.submission, {v: int(f.max()) for v, f in frame_list.items()})
        else:
            result = validate_submission(args.submission, frame_list)
    except SubmissionError as exc:
        print(f"INVALID {exc}")
        return 1
    _print({"valid": True, **result})
    return 0


def _probe(args) -> int:
    from affectfuse.metrics.classification import classification_scores, format_scores
    from affectfuse.training.expr import cross_validate_items

    face = _open_sets(args.features)
    table, items = _manifest_items(args.manifest, None, face, args.fill)
    class_names = list(table.label_names)
    groups = None
    if args.group:
        if table.groups is None:
            raise ValueError(f"{args.manifest}: --group needs a 'group' column")
        groups = table.groups
    config = _config(args.config, args.set)
    kinds = ("transformer", "logreg") if args.classifier == "both" else (args.classifier,)
    print(f"expr probe: {len(items)} items, {args.folds} folds, classifier(s) {' then '.join(kinds)} "
          f"(--classifier transformer|logreg|both, default both; logreg is the fast one)", file=sys.stderr)
    results = {}
    for kind in kinds:
        res = cross_validate_items(items, class_names, args.folds, groups, kind, config, args.seed)
        results[kind] = res["scores"]
        results[kind]["fold_macro_f1"] = [f["macro_f1"] for f in res["folds"]]
    if args.zero_shot:
        results["zero_shot"] = classification_scores(
            table.labels, zero_shot_probabilities(items, face[0], class_names).argmax(1), len(class_names), class_names)
    for kind, scores in results.items():
        print(f"== {kind} ==\n{format_scores(scores)}")
        if args.out:
            _write_scores(Path(args.out), scores, f"{kind}: {Path(args.manifest).name}", prefix=f"{kind}_")
    _print({kind: _summary(s) for kind, s in results.items()})
    return 0


def zero_shot_probabilities(items, feature_set, class_names):
    """(I, C) item probabilities from a face-expression network's own 7-class columns (faceexpressionnet:
    the last 7 columns ``p_neutral..p_surprised``) mapped to ``class_names``; classes it lacks get 0."""
    import numpy as np

    from affectfuse.features.faceapi import FACEAPI_CLASSES, FACEAPI_TO_ABAW

    columns = (feature_set.meta.extra or {}).get("columns") or []
    if feature_set.meta.extractor != "faceexpressionnet" and not {f"p_{c}" for c in FACEAPI_CLASSES} <= set(columns):
        raise ValueError(f"{feature_set.path}: zero-shot needs faceexpressionnet features "
                         f"(extractor {feature_set.meta.extractor!r})")
    first = feature_set.meta.dim - len(FACEAPI_CLASSES)
    lookup = {n.lower(): k for k, n in enumerate(class_names)}
    out = np.zeros((len(items), len(class_names)), np.float32)
    for i, item in enumerate(items):
        rows = item.features[item.valid] if item.valid.any() else item.features
        p = rows[:, first:first + len(FACEAPI_CLASSES)].mean(axis=0)
        for j, name in enumerate(FACEAPI_CLASSES):
            k = lookup.get(FACEAPI_TO_ABAW[name].lower())
            if k is not None:
                out[i, k] = p[j]
    return out


def run_ensemble(paths, weights, args) -> int:
    """``affectfuse ensemble`` for EXPR per-frame probability CSVs: the weighted mean of the runs' per-frame
    probabilities (the paper's Table 4 ensemble) written to ``args.out``. With ``--table`` = an Aff-Wild2
    annotation folder, the ensemble and each member are scored (macro F1) and one JSON line is printed."""
    import numpy as np

    from affectfuse.data.affwild2 import read_expr_folder
    from affectfuse.metrics.classification import expr_macro_f1
    from affectfuse.outputs.expr_files import ensemble_probability_files, labels_at, read_probabilities

    ensemble_probability_files(paths, args.out, weights)
    if getattr(args, "table", None) is None:
        return 0
    labels = read_expr_folder(args.table)

    def score(path) -> float:
        probs = read_probabilities(path)
        missing = sorted(set(labels) - set(probs))
        if missing:
            raise ValueError(f"{path}: no predictions for {len(missing)} annotated video(s): {missing[:10]}")
        y = [labels[v] for v in labels]
        p = [labels_at(probs[v][0], probs[v][1].argmax(1), np.arange(1, len(labels[v]) + 1)) for v in labels]
        return expr_macro_f1(np.concatenate(y), np.concatenate(p))

    _print({"macro_f1": round(score(args.out), 4), "videos": len(labels), "out": str(args.out),
            "members": [{"file": str(p), "macro_f1": round(score(p), 4)} for p in paths],
            "weights": [float(w) for w in weights]})
    return 0
