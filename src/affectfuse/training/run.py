"""From files to a trained run: table + feature sets + config -> run folder (used by the CLI).

Also the shared steps of ``evaluate`` and ``predict``: open feature sets given as ``name=DIR``, read a
checkpoint's inputs the way it was trained, and score predictions per emotion.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from affectfuse.data.sequences import SequenceData, load_sequences, load_unlabelled
from affectfuse.data.store import FeatureSet
from affectfuse.training.config import RunConfig, save_config

log = logging.getLogger(__name__)


def parse_feature_args(items: list[str]) -> dict[str, Path]:
    """``["audio=DIR", "visual=DIR"]`` -> {"audio": DIR, ...}; a bare DIR is named by its folder."""
    out: dict[str, Path] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).name, item
        name = name.strip()
        if not name or name in out:
            raise ValueError(f"--features {item!r}: empty or repeated feature-set name")
        out[name] = Path(path)
    if not out:
        raise ValueError("give at least one feature set: --features audio=DIR visual=DIR")
    return out


def open_feature_sets(paths: dict[str, Path]) -> dict[str, FeatureSet]:
    return {name: FeatureSet.open(path) for name, path in paths.items()}


def feature_meta(sets: dict[str, FeatureSet]) -> dict[str, dict]:
    out = {}
    for name, fs in sets.items():
        d = fs.meta.to_dict()
        d["path"] = str(fs.path)
        out[name] = d
    return out


def task_dict(table) -> dict:
    """The table's task spec as a plain dict (stored in checkpoints)."""
    from affectfuse.data.tasks import task_for_table

    return task_for_table(table).to_dict()


def _labelled(data: SequenceData) -> SequenceData:
    if data.labels is not None and bool(np.isnan(data.labels.numpy()).all()):
        data.labels = None
    return data


def load_split(table, sets: dict[str, FeatureSet], split: str, seq_len: int, mode: str) -> SequenceData:
    return _labelled(load_sequences(table, sets, seq_len, mode, split=split))


def check_resume_file(path: Path) -> None:
    """Read ``last.pt`` with the shared checkpoint reader: a corrupt, foreign or truncated file is one error
    naming it (``fit`` would otherwise fail inside ``torch.load`` without the file's name)."""
    from affectfuse.training.checkpoint import FORMAT, read_checkpoint

    ckpt = read_checkpoint(path, FORMAT, "ERI resume checkpoint (last.pt)")
    if not isinstance(ckpt.get("training"), dict):
        raise ValueError(f"{path}: not a resume checkpoint (no 'training' state); delete it or choose another --out")


def train_run(table_path: str | Path, feature_paths: dict[str, Path], out: str | Path, cfg: RunConfig,
              resume: bool = False):
    """Train on ``table_path``'s train split, validate on its val split, write the run folder."""
    from affectfuse.data.layouts import load_table
    from affectfuse.training.eri import fit

    out = Path(out)
    if (out / "last.pt").is_file() and not resume:
        raise ValueError(f"{out}: a run exists here already; add --resume to continue it or choose another --out")
    if resume and (out / "last.pt").is_file():
        check_resume_file(out / "last.pt")
    table = load_table(table_path)
    if table.task != "regression":
        raise ValueError(f"{table_path}: ERI training needs intensity labels, the table is {table.task}")
    sets = open_feature_sets(feature_paths)
    train = load_split(table, sets, cfg.data.train_split, cfg.data.seq_len, cfg.data.sequence_mode)
    val = load_split(table, sets, cfg.data.val_split, cfg.data.seq_len, cfg.data.sequence_mode)
    for name, part in (("train", train), ("val", val)):
        if part.labels is None or bool(np.isnan(part.labels.numpy()).any()):
            raise ValueError(f"{table_path}: the {name} split has videos without labels")
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    log.info("training on %d videos, validating on %d (%s)", len(train), len(val), ", ".join(sets))
    return fit(cfg, train, val, out, feature_meta(sets), task_dict(table), resume=resume)


def inputs_for_checkpoint(ckpt: dict, sets: dict[str, FeatureSet]) -> dict[str, FeatureSet]:
    """The feature sets a checkpoint needs, checked against what it was trained on."""
    from affectfuse.weights import check_same_weights

    want = ckpt["feature_sets"]
    missing = [k for k in want if k not in sets]
    if missing:
        raise ValueError(f"{ckpt.get('path', 'checkpoint')} was trained on feature sets {list(want)}; "
                         f"missing {missing} (give them as --features NAME=DIR)")
    for k, meta in want.items():
        if int(meta["dim"]) != sets[k].meta.dim:
            raise ValueError(f"feature set {k!r} ({sets[k].path}) has dim {sets[k].meta.dim}; "
                             f"the checkpoint was trained on dim {meta['dim']}")
        check_same_weights(meta, sets[k].meta.to_dict(), f"{ckpt.get('path', 'the checkpoint')} (feature set {k!r})",
                           f"feature set {k!r} ({sets[k].path})")
    return {k: sets[k] for k in want}


def checkpoint_data(ckpt: dict, sets: dict[str, FeatureSet], table=None, split: str | None = None) -> SequenceData:
    """Inputs for a checkpoint: a table split, or every video present in all its feature sets."""
    sets = inputs_for_checkpoint(ckpt, sets)
    steps, mode = int(ckpt["data"]["seq_len"]), ckpt["data"]["sequence_mode"]
    if table is not None:
        return _labelled(load_sequences(table, sets, steps, mode, split=split))
    return load_unlabelled(sets, ckpt["label_names"], steps, mode)


def per_emotion_results(y: np.ndarray, pred: np.ndarray, label_names) -> tuple[dict, list[dict]]:
    """Metrics (mean Pearson, per-emotion r, MSE) and one results row per emotion."""
    from affectfuse.metrics.regression import eri_metrics

    m = eri_metrics(y, pred, list(label_names))
    rows = []
    for i, name in enumerate(label_names):
        rows.append({"emotion": name, "pearson": float(m["pearson"][name]),
                     "mse": float(np.mean((pred[:, i] - y[:, i]) ** 2)),
                     "mean_true": float(y[:, i].mean()), "mean_pred": float(pred[:, i].mean())})
    metrics = {"mean_pearson": float(m["mean_pearson"]), "mse": float(np.mean((pred - y) ** 2)),
               "pearson": {k: float(v) for k, v in m["pearson"].items()}, "n_videos": int(len(y))}
    return metrics, rows
