"""``affectfuse evaluate``: score a trained ERI run or checkpoint on a labelled split."""

from __future__ import annotations

HELP = "evaluate an ERI run/checkpoint on a split: one JSON line of metrics + a per-emotion results CSV"


def add_arguments(p) -> None:
    p.add_argument("checkpoint", metavar="RUN_or_CKPT", help="run folder (uses its best.pt) or a .pt file")
    p.add_argument("--table", required=True, help="dataset table (data_info.csv, MuSe folder, manifest)")
    p.add_argument("--features", nargs="+", required=True, metavar="NAME=DIR", help="feature sets")
    p.add_argument("--split", default="val", help="split to score (default: val)")
    p.add_argument("--out", help="per-emotion results CSV (default: <run>/eval_<split>.csv)")
    p.add_argument("--predictions", help="also write the predictions as an ERI CSV here")


def run(args) -> int:
    import csv
    import io
    import json
    from pathlib import Path

    from affectfuse.data.layouts import load_table
    from affectfuse.training.checkpoint import load_checkpoint, model_from_checkpoint
    from affectfuse.training.eri import predict
    from affectfuse.training.run import checkpoint_data, open_feature_sets, parse_feature_args, per_emotion_results
    from affectfuse.utils import write_text_atomic

    ckpt = load_checkpoint(args.checkpoint)
    table = load_table(args.table)
    data = checkpoint_data(ckpt, open_feature_sets(parse_feature_args(args.features)), table, args.split)
    if data.labels is None:
        raise ValueError(f"{args.table}: split {args.split!r} has no labels to evaluate against")
    if list(data.label_names) != list(ckpt["label_names"]):
        raise ValueError(f"{args.table}: labels {data.label_names} differ from the checkpoint's {ckpt['label_names']}")
    pred = predict(model_from_checkpoint(ckpt), data)
    metrics, rows = per_emotion_results(data.labels.numpy(), pred, data.label_names)
    ckpt_path = Path(ckpt["path"])
    out = Path(args.out) if args.out else ckpt_path.parent / f"eval_{args.split}.csv"
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(out, buf.getvalue())
    if args.predictions:
        from affectfuse.outputs.eri_csv import write_eri_predictions

        write_eri_predictions(args.predictions, data.file_ids, pred, label_names=tuple(data.label_names),
                              provenance={"checkpoint": str(ckpt_path), "split": args.split})
    print(json.dumps({"checkpoint": str(ckpt_path), "split": args.split, **metrics, "results": str(out)}))
    return 0
