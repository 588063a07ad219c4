"""``affectfuse eri``: emotional reaction intensities per video (ABAW ERI) from extracted feature sets.

Sub-commands::

    eri train     table + feature sets -> run folder (config.yaml, metrics.csv, best.pt, last.pt, val_predictions.csv)
    eri evaluate  checkpoint + labelled split -> one JSON line of metrics + a per-emotion results CSV
    eri predict   checkpoint + feature sets -> the challenge CSV (File_ID, Adoration, ..., Surprise)
    eri ablate    the paper's Tables 1 (modality sets) and 2 (tricks) over seeds (affectfuse.training.ablation)

Old spellings ``affectfuse train|evaluate|ablate`` and ``affectfuse predict --checkpoint ... --features ...`` run
these after a deprecation line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from affectfuse.cli.common import Sub, add_group, run_group

HELP = "ERI intensities per video from feature sets: train, evaluate, predict, ablate"
RECIPE_HELP = ("shipped recipe: affectfuse (default: eri_fusion, the paper's training settings), authors (the "
               "authors' code: eri_authors model, their loss target, EMA timing, patience 10, seed 104) or paper "
               "(the paper's text on the authors' model); see docs/eri.md")


def _table_features(p, table_required=True) -> None:
    p.add_argument("--table", required=table_required,
                   help="dataset table: ABAW5 data_info.csv, a MuSe-2022 folder, or a generic manifest CSV")
    p.add_argument("--features", nargs="+", required=True, metavar="NAME=DIR",
                   help="feature sets, e.g. audio=feats/deepspectrum visual=feats/posterv2_vit")


def _config_options(p, shared="") -> None:
    p.add_argument("--recipe", default="affectfuse", metavar="NAME", help=RECIPE_HELP)
    p.add_argument("--config", help=f"YAML file{shared} applied after --recipe (sections model, data, train)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="config overrides, e.g. train.lr=3e-4 model.modality_set=A+V train.ema=false")


def features_arg(items: list[str]) -> dict[str, Path]:
    from affectfuse.training.run import parse_feature_args

    return parse_feature_args(items)


# -- train ---------------------------------------------------------------------------------------------
def add_train(p) -> None:
    _table_features(p)
    p.add_argument("--out", required=True, help="run folder (config.yaml, metrics.csv, tb/, best.pt, last.pt, ...)")
    _config_options(p)
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out from its last finished epoch")


def run_train(args) -> int:
    """:func:`affectfuse.api.train` ("eri"); resuming, the run's own config.yaml is the base and only --config and
    --set are applied on top (the recipe was applied when the run started)."""
    from affectfuse.api import train

    resuming = args.resume and (Path(args.out) / "config.yaml").is_file()
    res = train("eri", features=features_arg(args.features), table=args.table, out=args.out,
                config=args.config if resuming else [args.recipe, args.config], overrides=args.overrides,
                resume=args.resume)
    probe = res["ridge_probe_val_mean_pearson"]
    print(json.dumps({"run": res["run"], "best_val_mean_pearson": round(res["best_val_mean_pearson"], 6),
                      "ridge_probe_val_mean_pearson": None if probe is None else round(probe, 6),
                      "best_epoch": res["best_epoch"], "epochs": res["epochs"], "finished": res["finished"]}))
    return 0


# -- evaluate ------------------------------------------------------------------------------------------
def add_evaluate(p) -> None:
    p.add_argument("run", nargs="?", metavar="RUN_or_CKPT", help="run folder (uses its best.pt) or a .pt file")
    p.add_argument("--checkpoint", help="the same as RUN_or_CKPT, as the other evaluate commands spell it")
    _table_features(p)
    p.add_argument("--split", default="val", help="split to score (default: val)")
    p.add_argument("--out", help="per-emotion results CSV (default: <run>/eval_<split>.csv)")
    p.add_argument("--predictions", help="also write the predictions as an ERI CSV here")


def run_evaluate(args) -> int:
    from affectfuse.inference.from_features import evaluate_from_features

    if bool(args.run) == bool(args.checkpoint):
        raise ValueError("eri evaluate needs the checkpoint once: RUN_or_CKPT or --checkpoint")
    print(json.dumps(evaluate_from_features(args.run or args.checkpoint, features_arg(args.features), args.table,
                                            args.split, args.out, args.predictions)))
    return 0


# -- predict -------------------------------------------------------------------------------------------
def add_predict(p) -> None:
    p.add_argument("--checkpoint", required=True, help="trained ERI checkpoint (best.pt) or its run folder")
    p.add_argument("--features", nargs="+", required=True, metavar="NAME=DIR",
                   help="feature sets the checkpoint was trained on")
    p.add_argument("--table", help="dataset table; with --split predicts that split, in table order")
    p.add_argument("--split", default="test", help="split of --table to predict (default: test)")
    p.add_argument("--out", required=True, help="output CSV (File_ID,Adoration,...,Surprise)")


def run_predict(args) -> int:
    from affectfuse.inference.from_features import predict_from_features

    print(json.dumps(predict_from_features(args.checkpoint, features_arg(args.features), args.out, args.table,
                                           args.split)))
    return 0


# -- ablate --------------------------------------------------------------------------------------------
def add_ablate(p) -> None:
    from affectfuse.training.ablation import MODALITY_SETS, TRICKS

    _table_features(p)
    p.add_argument("--out", required=True, help="output folder (runs/, ablation.csv, ablation.md, failures.csv)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per configuration (default 3)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--sets", nargs="+", default=list(MODALITY_SETS),
                   help="modality sets (Table 1); feature-set names joined by + work too")
    p.add_argument("--tricks", nargs="*", default=list(TRICKS), choices=list(TRICKS),
                   help="trick ablations of the full model (Table 2)")
    _config_options(p, shared=" shared by every run")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run the runs as Ray tasks (affectfuse.cluster.ray_sweep); no ADDRESS: a local cluster")
    p.add_argument("--cpus-per-run", type=float, default=1.0, help="with --ray: CPUs reserved per run")


def run_ablate(args) -> int:
    from affectfuse.training.ablation import load_sweep_data, plan, run_serial, write_results
    from affectfuse.training.config import resolve_config
    from affectfuse.utils import FailureLog

    out = Path(args.out)
    recipes = [args.recipe, args.config]
    data = load_sweep_data(args.table, features_arg(args.features), resolve_config(recipes, args.overrides))
    failures = FailureLog(out / "failures.csv")
    runs = plan(args.sets, args.tricks, range(args.first_seed, args.first_seed + args.seeds))
    if args.ray is not None:
        from affectfuse.cluster.ray_sweep import ray_runs

        rows = ray_runs(runs, out, recipes, args.overrides, data.train, data.val, data.meta, data.task, failures,
                        address=args.ray or None, cpus_per_run=args.cpus_per_run)
    else:
        rows = run_serial(runs, out, recipes, args.overrides, data, failures)
    sys.stdout.write(write_results(out, rows, args.seeds, data.val.label_names))
    print(json.dumps({"out": str(out), "runs": len(rows), "failed": len(failures)}))
    return 1 if failures else 0


COMMANDS = {
    "train": Sub("train an ERI fusion model on per-video features (recipes: affectfuse, authors, paper; "
                 "resumable run folder)", add_train, run_train),
    "evaluate": Sub("evaluate an ERI run/checkpoint on a split: one JSON line of metrics + a per-emotion "
                    "results CSV", add_evaluate, run_evaluate),
    "predict": Sub("ERI challenge CSV from feature sets and a checkpoint", add_predict, run_predict),
    "ablate": Sub("train modality-set and trick ablations over seeds; write the paper-style tables (markdown)",
                  add_ablate, run_ablate),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_group(parser, "eri", COMMANDS)


run = run_group
