"""``affectfuse ablate``: the paper's Tables 1 (modality sets) and 2 (tricks) over several seeds.

Runs (each a normal run folder under ``<out>/runs/<name>_seed<k>``):
    Table 1: model.modality_set = A, V, A+V, A+V+AV
    Table 2: A+V+AV without the class loss (train.class_loss=false), without EMA (train.ema=false),
             without L2 (train.weight_decay=0)
Writes ``<out>/ablation.csv`` (one row per run) and ``<out>/ablation.md`` (mean ± std over seeds, next
to the paper's Hume-Reaction validation numbers). Every run keeps ``val_predictions.csv`` for
``affectfuse ensemble``. Finished runs are skipped when the command is run again; interrupted ones resume;
a failing run is recorded in ``<out>/failures.csv`` and the others go on.
"""

from __future__ import annotations

HELP = "train modality-set and trick ablations over seeds; write the paper-style tables (markdown)"

MODALITY_SETS = ("A", "V", "A+V", "A+V+AV")
TRICKS = {"no_class_loss": ("w/o class loss", ["train.class_loss=false"]),
          "no_ema": ("w/o EMA", ["train.ema=false"]),
          "no_l2": ("w/o L2", ["train.weight_decay=0"])}
PAPER_TABLE1 = {"A": 0.2299, "V": 0.3924, "A+V": 0.4377, "A+V+AV": 0.4394}
PAPER_TABLE2 = {"full": 0.4394, "no_class_loss": 0.4306, "no_ema": 0.4281, "no_l2": 0.4165}


def add_arguments(p) -> None:
    p.add_argument("--table", required=True, help="dataset table (data_info.csv, MuSe folder, manifest)")
    p.add_argument("--features", nargs="+", required=True, metavar="NAME=DIR",
                   help="feature sets; A/V in modality sets mean the ones named audio/visual")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seeds", type=int, default=3, help="seeds per configuration (default 3)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--sets", nargs="+", default=list(MODALITY_SETS), help="modality sets (Table 1)")
    p.add_argument("--tricks", nargs="*", default=list(TRICKS), choices=list(TRICKS),
                   help="trick ablations of the full model (Table 2)")
    p.add_argument("--recipe", default="affectfuse", metavar="NAME",
                   help="shipped recipe shared by every run: affectfuse (default), authors or paper (docs/eri.md)")
    p.add_argument("--config", help="YAML file shared by every run, applied after --recipe")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="config overrides shared by every run")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run the runs as Ray tasks (affectfuse.cluster.ray_sweep); no ADDRESS: a local cluster")
    p.add_argument("--cpus-per-run", type=float, default=1.0, help="with --ray: CPUs reserved per run")


def plan(sets, tricks, seeds: range) -> list[dict]:
    """Every run: name, table, row key, seed and its config overrides."""
    runs = []
    for seed in seeds:
        for s in sets:
            runs.append({"name": f"set-{s.replace('+', '_')}_seed{seed}", "table": 1, "row": s, "seed": seed,
                         "overrides": [f"model.modality_set={s}", f"train.seed={seed}"]})
        for t in tricks:
            runs.append({"name": f"{t}_seed{seed}", "table": 2, "row": t, "seed": seed,
                         "overrides": ["model.modality_set=A+V+AV", f"train.seed={seed}", *TRICKS[t][1]]})
    return runs


def _mean_std(values: list[float]) -> str:
    import numpy as np

    if not values:
        return "—"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.4f}"


def markdown(rows: list[dict], n_seeds: int, label_names) -> str:
    """Tables 1 and 2 (val mean Pearson, mean ± sample std over seeds) from per-run rows."""
    by = {}
    for r in rows:
        by.setdefault((r["table"], r["row"]), []).append(r)
    lines = [f"Validation mean Pearson, mean ± std over {n_seeds} seed(s); per-emotion r averaged over seeds; "
             "ridge probe: the run's built-in baseline (ridge on per-video mean and std of the same features).", "",
             "**Table 1 — modality sets**", "",
             "| Modality | val mean Pearson | ridge probe | " + " | ".join(label_names) + " | paper (Hume-Reaction val) |",
             "|---|---|---|" + "---|" * len(label_names) + "---|"]

    def emotions(group):
        import numpy as np

        return " | ".join(f"{np.mean([g['r_' + e] for g in group]):.3f}" for e in label_names)

    for (table, key), group in by.items():
        if table == 1:
            lines.append(f"| {key} | {_mean_std([g['best_val_mean_pearson'] for g in group])} "
                         f"| {_mean_std([g['probe_val_mean_pearson'] for g in group])} | {emotions(group)} "
                         f"| {PAPER_TABLE1.get(key, '—')} |")
    lines += ["", "**Table 2 — training tricks (A+V+AV)**", "", "| Method | val mean Pearson | paper |", "|---|---|---|"]
    full = by.get((1, "A+V+AV"))
    if full:
        lines.append(f"| full recipe | {_mean_std([g['best_val_mean_pearson'] for g in full])} | {PAPER_TABLE2['full']} |")
    for (table, key), group in by.items():
        if table == 2:
            lines.append(f"| {TRICKS[key][0]} | {_mean_std([g['best_val_mean_pearson'] for g in group])} "
                         f"| {PAPER_TABLE2[key]} |")
    return "\n".join(lines) + "\n"


def run(args) -> int:
    import json
    import logging
    from pathlib import Path

    from affectfuse.data.layouts import load_table
    from affectfuse.training.config import resolve_config
    from affectfuse.training.run import feature_meta, load_split, open_feature_sets, parse_feature_args, task_dict
    from affectfuse.utils import FailureLog

    log = logging.getLogger("affectfuse.ablate")
    out = Path(args.out)
    recipes = [args.recipe, args.config]
    base = resolve_config(recipes, args.overrides)
    table = load_table(args.table)
    sets = open_feature_sets(parse_feature_args(args.features))
    train = load_split(table, sets, base.data.train_split, base.data.seq_len, base.data.sequence_mode)
    val = load_split(table, sets, base.data.val_split, base.data.seq_len, base.data.sequence_mode)
    meta, task = feature_meta(sets), task_dict(table)
    failures = FailureLog(out / "failures.csv")
    runs = plan(args.sets, args.tricks, range(args.first_seed, args.first_seed + args.seeds))
    if args.ray is not None:
        from affectfuse.cluster.ray_sweep import ray_runs

        rows = ray_runs(runs, out, recipes, args.overrides, train, val, meta, task, failures,
                        address=args.ray or None, cpus_per_run=args.cpus_per_run)
    else:
        rows = []
        for i, r in enumerate(runs, 1):
            log.info("[%d/%d] %s", i, len(runs), r["name"])
            try:
                rows.append(run_one(r, out, recipes, args.overrides, train, val, meta, task))
            except Exception as exc:  # one bad run never stops the others
                log.error("%s failed: %s", r["name"], exc)
                failures.add(r["name"], exc)
    write_results(out, rows, args.seeds, val.label_names)
    print(json.dumps({"out": str(out), "runs": len(rows), "failed": len(failures)}))
    return 1 if failures else 0


def run_one(r: dict, out, recipe, overrides, train, val, meta: dict, task: dict) -> dict:
    """Train (or resume, or skip when finished) one planned run ``r``; returns its ``ablation.csv`` row."""
    import json
    from pathlib import Path

    from affectfuse.training.config import resolve_config, save_config
    from affectfuse.training.eri import fit

    run_dir = Path(out) / "runs" / r["name"]
    done = run_dir / "result.json"
    info = json.loads(done.read_text()) if done.is_file() else {}
    if not info.get("finished"):
        cfg = resolve_config(None, r["overrides"], base=resolve_config(recipe, overrides))
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        if (run_dir / "last.pt").is_file():
            from affectfuse.training.run import check_resume_file

            check_resume_file(run_dir / "last.pt")
        fit(cfg, train, val, run_dir, meta, task, resume=True)
        info = json.loads(done.read_text())
    best = info["best_metrics"] or {}
    probe = (info.get("probe") or {}).get("val_mean_pearson", float("nan"))
    return {"name": r["name"], "table": r["table"], "row": r["row"], "seed": r["seed"],
            "best_val_mean_pearson": info["best_val_mean_pearson"], "probe_val_mean_pearson": probe,
            "best_epoch": info["best_epoch"],
            "epochs": info["epochs"], **{f"r_{e}": best.get(f"r_{e}", float("nan")) for e in val.label_names},
            "predictions": str(run_dir / "val_predictions.csv")}


def write_results(out, rows: list[dict], n_seeds: int, label_names) -> None:
    """``ablation.csv`` (one row per run) and ``ablation.md`` (:func:`markdown`); prints the tables."""
    import csv
    import io
    from pathlib import Path

    from affectfuse.utils import write_text_atomic

    if rows:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        write_text_atomic(Path(out) / "ablation.csv", buf.getvalue())
        write_text_atomic(Path(out) / "ablation.md", markdown(rows, n_seeds, label_names))
        print((Path(out) / "ablation.md").read_text(), end="")
