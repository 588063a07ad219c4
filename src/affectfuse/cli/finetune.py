"""``affectfuse finetune``: train a face extractor's network on a face-expression image dataset.

Examples::

    affectfuse finetune --model faceexpressionnet --data faces/labels.csv --classes expr8 --out runs/fex --fold 0
    affectfuse finetune --model posterv2 --data affectnet/training.csv --val-data affectnet/validation.csv \\
        --classes affectnet7 --align none --out runs/posterv2 --epochs 20 --lr 3.5e-5 --batch-size 144

Settings come from the dataclass defaults (:class:`~affectfuse.training.finetune.FinetuneConfig`), then an
optional ``--config recipe.yaml``, then the options given here. ``--fold all`` runs every fold into
``OUT/fold<k>`` and writes ``OUT/cv_summary.json``. The exported weights land in ``OUT/export/<model>.pt``.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path

HELP = "fine-tune a face backbone (faceexpressionnet, posterv2, vit-b16, posterv2-vit) on expression images"
MODELS = ("faceexpressionnet", "posterv2", "vit-b16", "posterv2-vit")

# option -> (config field, type, help); None default so that only given options override the recipe
OPTIONS = {
    "--model": ("model", str, f"extractor to fine-tune: {', '.join(MODELS)} (default faceexpressionnet)"),
    "--data": ("data", str, "CSV (image path + expression index or name) or a folder with one sub-folder per class"),
    "--val-data": ("val_data", str, "separate validation CSV / folder (e.g. AffectNet's validation.csv)"),
    "--classes": ("classes", str, "affectnet7 | affectnet8 | expr8 | auto | comma-separated names (default auto)"),
    "--weights": ("weights", str, "starting weights of the extractor (a path; default: its usual lookup)"),
    "--align": ("align", str, "mtcnn (detect + align, default) or none (images are face crops already)"),
    "--crop-cache": ("crop_cache", str, "face-crop cache folder (default ~/.cache/affectfuse/face_crops)"),
    "--folds": ("folds", int, "K of a stratified K-fold split (default 5)"),
    "--val-fraction": ("val_fraction", float, "stratified hold-out fraction when no --fold (default 0.1; 0 = none)"),
    "--max-items": ("max_items", int, "stratified subset of the training images (quick runs)"),
    "--epochs": ("epochs", int, "epochs (default 10)"),
    "--batch-size": ("batch_size", int, "images per step (default 64)"),
    "--lr": ("lr", float, "peak learning rate of the network (default 1e-4)"),
    "--head-lr-mult": ("head_lr_mult", float, "head learning rate = lr x this (default 10)"),
    "--weight-decay": ("weight_decay", float, "AdamW weight decay (default 1e-4)"),
    "--warmup-epochs": ("warmup_epochs", float, "linear warm-up before the cosine decay (default 1)"),
    "--label-smoothing": ("label_smoothing", float, "cross-entropy label smoothing (default 0)"),
    "--balance": ("balance", str, "loss (class-weighted, default) | sampler | none"),
    "--class-weights": ("class_weights", str, "with --balance loss: inverse (default) | inverse_sqrt | effective"),
    "--head-init": ("head_init", str, "pretrained (the extractor's head rows by class name, default) | probe "
                    "(linear probe of the frozen embeddings, then fine-tune)"),
    "--probe-c": ("probe_c", float, "inverse regularisation of the --head-init probe (default 0.01)"),
    "--loss": ("loss", str, "ce (default) | focal"),
    "--gamma": ("gamma", float, "focal loss gamma (default 2)"),
    "--freeze": ("freeze", str, "comma-separated parameter-name prefixes kept fixed, e.g. dense0,dense1"),
    "--select": ("select", str, "export the best validation epoch (best, default) or the last one (last)"),
    "--stop-after": ("stop_after", int, "end after this many epochs, leaving a resumable run"),
    "--device": ("device", str, "auto (default: cuda when available) | cpu | cuda[:k]"),
    "--workers": ("workers", int, "data-loader worker processes (default 0)"),
    "--seed": ("seed", int, "seed of the split, shuffling and augmentation (default 0)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for flag, (_, typ, text) in OPTIONS.items():
        parser.add_argument(flag, type=typ, default=None, help=text)
    parser.add_argument("--out", required=True, help="run folder (checkpoints, metrics, export/)")
    parser.add_argument("--fold", default=None, help="fold 0..K-1 of the K-fold split, or 'all'")
    parser.add_argument("--config", help="YAML recipe of FinetuneConfig fields (options given here win)")
    parser.add_argument("--resume", action="store_true", help="go on from OUT/checkpoint.pt")
    parser.add_argument("--random-weights", action="store_true", help="start from random weights (tests only)")
    parser.add_argument("--no-amp", action="store_true", help="no bf16 autocast on GPU (fp32 throughout)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def resolve_config(args):
    """Dataclass defaults -> ``--config`` YAML -> given options, through the shared typed resolver."""
    from affectfuse.training.finetune import FinetuneConfig
    from affectfuse.training.resolver import resolve_dataclass

    values: dict = {}
    for flag, (name, _, _) in OPTIONS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            values[name] = value
    if args.random_weights:
        values["random_weights"] = True
    if args.no_amp:
        values["amp"] = False
    cfg = resolve_dataclass(FinetuneConfig, files=args.config, options=values)
    if not cfg.data:
        raise ValueError("--data is required (here or in --config)")
    return cfg


def _report(summary: dict) -> None:
    from affectfuse.metrics.classification import format_scores

    m = summary.get("metrics")
    print(f"run {summary['run']}: {summary['n_train']} training / {summary['n_val']} validation images, "
          f"{summary['no_face']} without a detected face, {summary['failed']} left out")
    if m:
        print(f"best epoch {summary['best_epoch']} (validation):")
        print(format_scores({**m, "class_names": summary["classes"]}))
    print(f"exported: {summary['export']}")


def run(args) -> int:
    import dataclasses

    import numpy as np
    import torch

    from affectfuse.training.finetune_run import run_finetune
    from affectfuse.utils import write_json_atomic

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = resolve_config(args)
    out, progress = Path(args.out), not args.no_progress
    if args.fold != "all":
        if args.fold is not None:
            cfg = dataclasses.replace(cfg, fold=int(args.fold))
        summary = run_finetune(cfg, out, resume=args.resume, progress=progress)
        _report(summary)
        return 1 if summary["failed"] else 0
    results = []
    for k in range(cfg.folds):
        summary = run_finetune(dataclasses.replace(cfg, fold=k), out / f"fold{k}", resume=args.resume, progress=progress)
        _report(summary)
        results.append(summary)
    scores = {key: [r["metrics"][key] for r in results] for key in ("macro_f1", "accuracy", "uar")}
    cv = {"config": asdict(cfg), "folds": cfg.folds,
          **{key: {"mean": float(np.mean(v)), "std": float(np.std(v)), "per_fold": v} for key, v in scores.items()}}
    write_json_atomic(out / "cv_summary.json", cv)
    print(json.dumps({k: cv[k] for k in scores}, indent=1))
    logging.getLogger(__name__).info("wrote %s", out / "cv_summary.json")
    return 1 if any(r["failed"] for r in results) else 0
