"""``affectfuse train``: train the ERI fusion model with the paper's recipe."""

from __future__ import annotations

HELP = "train an ERI fusion model on per-video features (recipes: affectfuse, authors, paper; resumable run folder)"


def add_arguments(p) -> None:
    p.add_argument("--table", required=True,
                   help="dataset table: ABAW5 data_info.csv, a MuSe-2022 folder, or a generic manifest CSV")
    p.add_argument("--features", nargs="+", required=True, metavar="NAME=DIR",
                   help="feature sets, e.g. audio=feats/deepspectrum visual=feats/posterv2_vit")
    p.add_argument("--out", required=True, help="run folder (config.yaml, metrics.csv, tb/, best.pt, last.pt, ...)")
    p.add_argument("--recipe", default="affectfuse", metavar="NAME",
                   help="shipped recipe: affectfuse (default: eri_fusion, the paper's training settings), authors "
                        "(the authors' code: eri_authors model, their loss target, EMA timing, patience 10, seed 104) "
                        "or paper (the paper's text on the authors' model); see docs/eri.md")
    p.add_argument("--config", help="YAML file applied after --recipe (sections model, data, train)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="config overrides, e.g. train.lr=3e-4 model.modality_set=A+V train.ema=false")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out from its last finished epoch")


def run(args) -> int:
    import json
    from pathlib import Path

    from affectfuse.training.config import load_config, resolve_config
    from affectfuse.training.run import parse_feature_args, train_run

    out = Path(args.out)
    if args.resume and (out / "config.yaml").is_file():
        cfg = load_config(out / "config.yaml")        # the interrupted run's own config
        if args.config or args.overrides:
            cfg = resolve_config(args.config, args.overrides, base=cfg)
    else:
        cfg = resolve_config([args.recipe, args.config], args.overrides)
    result = train_run(args.table, parse_feature_args(args.features), out, cfg, resume=args.resume)
    probe = (result.probe or {}).get("val_mean_pearson")
    print(json.dumps({"run": str(out), "best_val_mean_pearson": round(result.best_metric, 6),
                      "ridge_probe_val_mean_pearson": None if probe is None else round(probe, 6),
                      "best_epoch": result.best_epoch, "epochs": result.epochs, "finished": result.finished}))
    return 0
