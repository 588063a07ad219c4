"""``affectfuse expr``: per-frame expression classification (ABAW EXPR, Aff-Wild2 layout).

Sub-commands::

    expr train     features + Aff-Wild2 annotation folders -> run folder with best.pt (the frame transformer)
    expr evaluate  checkpoint + annotations (or a manifest, scored per item) -> macro F1 / UAR / accuracy,
                   per class, confusion PNG
    expr predict   checkpoint + features -> per-frame probability CSV (class names as columns)
    expr submit    probability CSVs (several = ensemble, averaged) -> ABAW5/6 submission or per-video txt
    expr validate  check a submission (file or txt folder) against the organisers' frame list

One label per item (a manifest) is ``affectfuse classify``; the old spellings ``expr train --manifest``,
``expr cv`` and ``expr evaluate|predict`` with an item checkpoint run it after a deprecation line, and the
hidden ``expr probe`` (:mod:`affectfuse.cli.expr_probe`) still scores the frame model on a manifest.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from affectfuse.cli import classify, expr_probe
from affectfuse.cli.common import Sub, add_group, deprecated, print_json, run_group, score_summary

HELP = "expression classes per frame (ABAW EXPR, Aff-Wild2 layout): train, evaluate, predict, submit, validate"
SMOOTH_HELP = "temporal smoothing: none, mean:N or mode:N (default: the window or HMM decoder chosen on " \
              "validation and stored in the checkpoint)"
log = logging.getLogger(__name__)


def _features(p, required=True) -> None:
    p.add_argument("--features", nargs="+", required=required, metavar="FOLDER",
                   help="face feature sets, stitched per frame in this order" +
                   ("" if required else " (default: those the checkpoint names)"))
    p.add_argument("--audio", metavar="FOLDER", help="optional audio feature set aligned to frames")
    p.add_argument("--fps", type=float, help="video frame rate for rows -> frames (default: from the feature set)")
    p.add_argument("--fill", choices=("ffill", "interpolate", "mask"),
                   help="faceless frames: forward-fill, interpolate or mask (default ffill / the checkpoint's)")


def _data(p, split_default="val") -> None:
    p.add_argument("--annotations", metavar="DIR", help="Aff-Wild2 <video>.txt annotation folder")
    p.add_argument("--manifest", metavar="CSV", help="manifest with a 'label' column: the frame model scored "
                                                     "per item (an item checkpoint: `affectfuse classify`)")
    p.add_argument("--split", default=split_default, help=f"manifest split to use (default {split_default})")


# -- train ---------------------------------------------------------------------------------------------
def add_train(t) -> None:
    _features(t)
    t.add_argument("--annotations", metavar="DIR", required=False, help="training annotation folder (Train_Set)")
    t.add_argument("--val-annotations", metavar="DIR", help="validation annotation folder (Validation_Set)")
    t.add_argument("--config", metavar="YAML", help="training config recipe (ExprTrainConfig fields)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set epochs=50 --set model.d_model=128")
    t.add_argument("--out", required=True, metavar="RUN_DIR")
    t.add_argument("--resume", action="store_true", help="go on with the run in --out (same config) from its last.pt")
    # old spelling of `classify train`, hidden
    t.add_argument("--manifest", metavar="CSV", help=argparse.SUPPRESS)
    t.add_argument("--label-map", metavar="MAP", help=argparse.SUPPRESS)


def run_train(args) -> int:
    """The frame transformer on Aff-Wild2 annotation folders (:func:`affectfuse.api.train`)."""
    from affectfuse.api import train
    from affectfuse.training.temporal import describe

    if args.manifest:
        deprecated("expr train --manifest", "classify train --manifest")
        return classify.run_train(args)
    if args.label_map:
        raise ValueError("--label-map applies to manifest labels (`affectfuse classify train`); Aff-Wild2 "
                         "annotations are ABAW classes")
    if not (args.annotations and args.val_annotations):
        raise ValueError("expr train needs --annotations and --val-annotations (a manifest: `affectfuse classify "
                         "train`)")
    res = train("expr", features=args.features, annotations=args.annotations, val_annotations=args.val_annotations,
                out=args.out, config=args.config, overrides=args.set, audio=args.audio, fps=args.fps,
                fill=args.fill or "ffill", resume=args.resume, progress=True)
    print_json({"best_epoch": res["best_epoch"], "checkpoint": res["checkpoint"], **score_summary(res["val"]),
                "smoothing": describe(res["val"].get("smoothing")), "versus_probe": res.get("versus_probe")})
    return 0


# -- evaluate / predict --------------------------------------------------------------------------------
def add_evaluate(e) -> None:
    e.add_argument("--checkpoint", required=True)
    _features(e, required=False)
    _data(e)
    e.add_argument("--smooth", default=None, help=SMOOTH_HELP)
    e.add_argument("--out", metavar="DIR", help="write scores.json, per_class.csv, confusion.png, probabilities.csv")


def add_predict(p) -> None:
    p.add_argument("--checkpoint", required=True)
    _features(p, required=False)
    _data(p, split_default="test")
    p.add_argument("--frame-list", metavar="FILE", help="organisers' list: videos and frame counts to predict")
    p.add_argument("--ids", nargs="+", help="video ids to predict (frames: all the features cover)")
    p.add_argument("--smooth", default=None, help=SMOOTH_HELP)
    p.add_argument("--out", required=True, metavar="CSV")


def _item_checkpoint(args, verb: str):
    """The item checkpoint at ``--checkpoint`` (old spelling: runs ``classify VERB`` after a deprecation line)."""
    from affectfuse.inference.from_features import item_checkpoint

    ckpt = item_checkpoint(args.checkpoint)
    if ckpt is not None:
        deprecated(f"expr {verb} --checkpoint ITEM_CHECKPOINT", f"classify {verb} --checkpoint ITEM_CHECKPOINT")
    return ckpt


def _load(args):
    """(model, checkpoint, info, face sets, audio set, smoothing spec) of a frame checkpoint."""
    from affectfuse.data.manifest_splits import checkpoint_sets
    from affectfuse.training.expr import load_checkpoint
    from affectfuse.training.temporal import describe, resolve_smoothing

    model, ckpt = load_checkpoint(args.checkpoint)
    info = ckpt["info"]
    face, audio = checkpoint_sets(args.checkpoint, info, args.features, args.audio)
    spec = resolve_smoothing(args.smooth, info.get("smoothing"))  # --smooth, else the one chosen on validation
    print(f"temporal smoothing: {describe(spec)}" + ("" if args.smooth else " (the checkpoint's)"), file=sys.stderr)
    return model, ckpt, info, face, audio, spec


def _frame_data(args, info, face, audio, ids=None, n_frames=None, problems=None):
    """Frame sequences of the annotated (or listed) videos; ``problems`` receives why a listed one is left out."""
    from affectfuse.data.affwild2 import load_expr_videos, read_expr_folder

    fill, fps = args.fill or info.get("fill", "ffill"), args.fps or info.get("fps")
    labels = read_expr_folder(args.annotations) if args.annotations else ids
    return load_expr_videos(labels, face, audio, fps, fill, n_frames=n_frames,
                            on_missing="error" if args.annotations else "skip", problems=problems)


def frame_checkpoint_command(verb: str, run_frames):
    """``expr VERB``: ``run_frames(args, model, checkpoint, info, face, audio, smoothing)`` on a frame checkpoint;
    an item checkpoint (the old spelling) goes to ``classify VERB`` after the deprecation line."""
    def run(args) -> int:
        items = _item_checkpoint(args, verb)
        if items is not None:
            return getattr(classify, f"run_{verb}")(args, items)
        return run_frames(args, *_load(args))

    return run


def _evaluate(args, model, ckpt, info, face, audio, smoothing) -> int:
    from affectfuse.data.manifest_splits import manifest_frames
    from affectfuse.metrics.classification import classification_scores, format_scores
    from affectfuse.outputs.class_scores import write_item_probabilities, write_scores
    from affectfuse.outputs.expr_files import write_probabilities
    from affectfuse.training.expr import evaluate_probabilities, item_probabilities, predict_videos

    train_cfg = ckpt["train_config"]
    class_names = info["class_names"]
    if args.manifest:
        table, videos = manifest_frames(args.manifest, args.split, face, args.fill or info.get("fill", "ffill"))
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
        write_scores(out, scores, f"EXPR {Path(args.checkpoint).name}")
        if args.manifest:  # one row per item: its id, the class probabilities, predicted and true class
            write_item_probabilities(out / "probabilities.csv", table.file_ids, item_p, class_names,
                                     truth=table.labels)
        else:
            write_probabilities(out / "probabilities.csv", probs, face={v.id: v.face for v in videos})
    print_json(score_summary(scores))
    return 0


def _predict_manifest(args, model, cfg, info, face) -> int:
    from affectfuse.data.manifest_splits import manifest_frames
    from affectfuse.outputs.class_scores import write_item_probabilities
    from affectfuse.training.expr import item_probabilities, predict_videos

    table, items = manifest_frames(args.manifest, args.split, face, args.fill or info.get("fill", "ffill"))
    p = item_probabilities(predict_videos(model, items, cfg["window"], cfg["predict_stride"]), items)
    write_item_probabilities(args.out, table.file_ids, p, info["class_names"])
    print_json({"items": len(items), "out": args.out})
    return 0


def _report_missing(out, missing: list[str], problems: list[str], face) -> None:
    """Videos listed but not predicted: one stderr line each and ``<out>.failures.csv``, with the real cause."""
    from affectfuse.utils import FailureLog

    why = {p.split(": ", 1)[0]: p.split(": ", 1)[1] for p in problems if ": " in p}
    failures = FailureLog(Path(out).with_suffix(".failures.csv"))
    for vid in missing:
        reason = why.get(vid, "no usable features in " + ", ".join(str(fs.path) for fs in face))
        log.warning("video %s not predicted: %s", vid, reason)
        print(f"{vid}: not predicted: {reason}", file=sys.stderr)
        failures.add(vid, reason)


def _predict(args, model, ckpt, info, face, audio, smoothing) -> int:
    from affectfuse.data.affwild2 import read_frame_list
    from affectfuse.outputs.expr_files import write_probabilities
    from affectfuse.training.expr import predict_videos

    cfg = ckpt["train_config"]
    if args.manifest:
        return _predict_manifest(args, model, cfg, info, face)
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
        _report_missing(args.out, missing, problems, face)
    probs = predict_videos(model, videos, cfg["window"], cfg["predict_stride"], smoothing=smoothing)
    write_probabilities(args.out, probs, face={v.id: v.face for v in videos})
    print_json({"videos": len(videos), "frames": int(sum(v.n_frames for v in videos)), "missing": missing,
                "out": args.out})
    return 1 if missing else 0


run_evaluate = frame_checkpoint_command("evaluate", _evaluate)
run_predict = frame_checkpoint_command("predict", _predict)


# -- submit / validate ---------------------------------------------------------------------------------
def add_submit(s) -> None:
    s.add_argument("--probabilities", nargs="+", required=True, metavar="CSV")
    s.add_argument("--frame-list", required=True, metavar="FILE")
    s.add_argument("--smooth", default=None, help="temporal smoothing of the averaged probabilities: none (default: "
                   "expr predict already applied each checkpoint's), mean:N or mode:N")
    s.add_argument("--format", choices=("abaw", "txt"), default="abaw",
                   help="abaw: one ABAW5/6 file; txt: one <video>.txt per video (older rounds)")
    s.add_argument("--out", required=True, metavar="PATH")


def run_submit(args) -> int:
    from affectfuse.data.affwild2 import read_frame_list
    from affectfuse.outputs.expr_files import (average_probabilities, submission_labels, validate_submission,
                                               validate_txt_folder, write_submission, write_txt_folder)

    frame_list = read_frame_list(args.frame_list)
    preds = submission_labels(average_probabilities(args.probabilities), args.smooth)
    if args.format == "txt":
        n_frames = {v: int(f.max()) for v, f in frame_list.items()}
        write_txt_folder(args.out, preds, n_frames)
        result = validate_txt_folder(args.out, n_frames)
    else:
        write_submission(args.out, preds, frame_list)
        result = validate_submission(args.out, frame_list)
    print_json({"out": args.out, "runs": len(args.probabilities), **result})
    return 0


def add_validate(v) -> None:
    v.add_argument("submission", help="ABAW5/6 submission file, or a folder of <video>.txt files")
    v.add_argument("--frame-list", required=True, metavar="FILE")


def run_validate(args) -> int:
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
    print_json({"valid": True, **result})
    return 0


COMMANDS = {
    "train": Sub("train the EXPR frame transformer on Aff-Wild2 annotations", add_train, run_train),
    "evaluate": Sub("score a frame checkpoint on labelled data", add_evaluate, run_evaluate),
    "predict": Sub("per-frame class probabilities from a checkpoint", add_predict, run_predict),
    "submit": Sub("probability CSV(s) -> challenge submission (several are averaged)", add_submit, run_submit),
    "validate": Sub("check a submission against the frame list", add_validate, run_validate),
}
HIDDEN = {"cv": (classify.COMMANDS["cv"], "classify cv"),
          "probe": (Sub(expr_probe.HELP, expr_probe.add_arguments, expr_probe.run), "classify cv", False)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_group(parser, "expr", COMMANDS, HIDDEN)


run = run_group
