"""``affectfuse predict``: ERI intensities per video -> the challenge CSV.

Today's input is feature sets (:func:`predict_from_features`); raw videos (positional ``VIDEO``
arguments) go through extraction first, see the predict issue.
"""

from __future__ import annotations

HELP = ("videos -> expressions, voice emotion, top emotion, HTML report (no argument: the bundled clip); "
        "with --features: ERI challenge CSV from feature sets")


def add_arguments(p) -> None:
    p.add_argument("videos", nargs="*", metavar="VIDEO",
                   help="video files or folders (video mode; default: the bundled sample clip)")
    p.add_argument("--checkpoint", help="trained ERI checkpoint (best.pt) or its run folder")
    p.add_argument("--features", nargs="+", metavar="NAME=DIR", help="feature sets the checkpoint was trained on")
    p.add_argument("--table", help="dataset table; with --split predicts that split, in table order")
    p.add_argument("--split", default="test", help="split of --table to predict (default: test)")
    p.add_argument("--out", help="feature-set mode: output CSV (File_ID,Adoration,...,Surprise); "
                                 "video mode: output folder (default predict_out)")
    from affectfuse.cli import predict_video

    predict_video.add_arguments(p)  # the video mode's options (cli/predict_video.py)


def predict_from_features(checkpoint: str, features: list[str], out: str, table: str | None = None,
                          split: str | None = "test") -> dict:
    """Feature-set mode: checkpoint + feature sets (+ optional table split) -> ERI CSV at ``out``."""
    from affectfuse.outputs.eri_csv import write_eri_predictions
    from affectfuse.training.checkpoint import load_checkpoint, model_from_checkpoint
    from affectfuse.training.eri import predict
    from affectfuse.training.run import checkpoint_data, open_feature_sets, parse_feature_args

    ckpt = load_checkpoint(checkpoint)
    tab = None
    if table is not None:
        from affectfuse.data.layouts import load_table

        tab = load_table(table)
    data = checkpoint_data(ckpt, open_feature_sets(parse_feature_args(features)), tab, split if tab else None)
    pred = predict(model_from_checkpoint(ckpt), data)
    provenance = {"checkpoint": ckpt["path"], "model": ckpt["model"]["name"],
                  "feature_sets": {k: v.get("name", k) for k, v in ckpt["feature_sets"].items()},
                  "random_weights": any(bool(v.get("random_weights")) for v in ckpt["feature_sets"].values())}
    if tab is not None:
        provenance.update(table=str(table), split=split)
    write_eri_predictions(out, data.file_ids, pred, label_names=tuple(ckpt["label_names"]), provenance=provenance)
    return {"out": str(out), "videos": len(data), "label_names": list(ckpt["label_names"])}


def limit_kernel_cache() -> None:
    """Keep oneDNN from caching a compiled kernel per input shape (``ONEDNN_PRIMITIVE_CACHE_CAPACITY=0``
    unless set): MTCNN's R-Net and O-Net see a new batch size at almost every frame batch, and the cache
    (1024 kernels by default) made predict's peak memory grow with video length (+258 MB from 0.5 to
    3 min of video, docs/benchmarks.md); without it memory is flat at about 8 % more CPU time. Takes
    effect when set before the first convolution of the process."""
    import os

    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")


def run(args) -> int:
    import json

    if not args.features:  # positional VIDEOs, or no argument at all: the video mode
        from affectfuse.cli import predict_video

        limit_kernel_cache()
        return predict_video.run(args)
    if not (args.checkpoint and args.features and args.out):
        raise ValueError("feature-set prediction needs --checkpoint, --features and --out")
    print(json.dumps(predict_from_features(args.checkpoint, args.features, args.out, args.table, args.split)))
    return 0
