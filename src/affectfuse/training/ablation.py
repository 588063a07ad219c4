"""ERI ablations: the paper's Tables 1 (modality sets) and 2 (training tricks) over several seeds.

Runs (each a normal run folder under ``<out>/runs/<name>_seed<k>``):
    Table 1: model.modality_set = A, V, A+V, A+V+AV
    Table 2: A+V+AV without the class loss (train.class_loss=false), without EMA (train.ema=false),
             without L2 (train.weight_decay=0)
:func:`write_results` writes ``<out>/ablation.csv`` (one row per run) and ``<out>/ablation.md`` (mean ± std over
seeds, next to the paper's Hume-Reaction validation numbers). Every run keeps ``val_predictions.csv`` for
``affectfuse ensemble``. :func:`run_one` skips a finished run and resumes an interrupted one, so the serial loop
(:func:`run_serial`) and the Ray sweep (:mod:`affectfuse.cluster.ray_sweep`) share every run's semantics.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import statistics
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MODALITY_SETS = ("A", "V", "A+V", "A+V+AV")
TRICKS = {"no_class_loss": ("w/o class loss", ["train.class_loss=false"]),
          "no_ema": ("w/o EMA", ["train.ema=false"]),
          "no_l2": ("w/o L2", ["train.weight_decay=0"])}
PAPER_TABLE1 = {"A": 0.2299, "V": 0.3924, "A+V": 0.4377, "A+V+AV": 0.4394}
PAPER_TABLE2 = {"full": 0.4394, "no_class_loss": 0.4306, "no_ema": 0.4281, "no_l2": 0.4165}


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
    if not values:
        return "—"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.4f}"


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
        return " | ".join(f"{statistics.fmean([g['r_' + e] for g in group]):.3f}" for e in label_names)

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


@dataclass
class SweepData:
    """What every run of a sweep shares: the train and val splits (``SequenceData``), the feature sets'
    description (``meta``) and the task description (``task``) stored in each checkpoint."""

    train: object
    val: object
    meta: dict
    task: dict


def load_sweep_data(table_path, features: dict[str, str], base) -> SweepData:
    """Load the train and val splits of ``table_path`` once for every run (``features``: name -> folder;
    ``base``: the resolved :class:`~affectfuse.training.config.RunConfig` shared by the runs)."""
    from affectfuse.data.layouts import load_table
    from affectfuse.training.run import feature_meta, load_split, open_feature_sets, task_dict

    table = load_table(table_path)
    sets = open_feature_sets(features)
    d = base.data
    train = load_split(table, sets, d.train_split, d.seq_len, d.sequence_mode)
    val = load_split(table, sets, d.val_split, d.seq_len, d.sequence_mode)
    return SweepData(train, val, feature_meta(sets), task_dict(table))


def run_serial(runs: list[dict], out, recipe, overrides: list[str], data: SweepData,
               failures) -> list[dict]:
    """Every planned run in this process, one after the other; a run that raises is recorded in ``failures``
    and the others go on (``failures``: a :class:`~affectfuse.utils.FailureLog`). Returns the ``ablation.csv`` rows of the runs that finished, in plan order."""
    rows = []
    for i, r in enumerate(runs, 1):
        log.info("[%d/%d] %s", i, len(runs), r["name"])
        try:
            rows.append(run_one(r, out, recipe, overrides, data.train, data.val, data.meta, data.task))
        except Exception as exc:  # one bad run never stops the others
            log.error("%s failed: %s", r["name"], exc)
            failures.add(r["name"], exc)
    return rows


def run_one(r: dict, out, recipe, overrides, train, val, meta: dict, task: dict) -> dict:
    """Train (or resume, or skip when finished) one planned run ``r``; returns its ``ablation.csv`` row."""
    from affectfuse.training.config import resolve_config, save_config
    from affectfuse.training.eri import fit  # torch: imported when a run trains, not for the table constants
    from affectfuse.training.run import check_resume_file

    run_dir = Path(out) / "runs" / r["name"]
    done = run_dir / "result.json"
    info = json.loads(done.read_text()) if done.is_file() else {}
    if not info.get("finished"):
        cfg = resolve_config(None, r["overrides"], base=resolve_config(recipe, overrides))
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        if (run_dir / "last.pt").is_file():
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


def write_results(out, rows: list[dict], n_seeds: int, label_names) -> str:
    """Write ``ablation.csv`` (one row per run) and ``ablation.md`` (:func:`markdown`); returns the markdown
    ("" and nothing written when no run finished)."""
    from affectfuse.utils import write_text_atomic

    if not rows:
        return ""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    text = markdown(rows, n_seeds, label_names)
    write_text_atomic(Path(out) / "ablation.csv", buf.getvalue())
    write_text_atomic(Path(out) / "ablation.md", text)
    return text
