"""One fine-tuning run end to end: data -> face crops -> split -> train -> evaluate -> export.

:func:`prepare_data` is shared with ``scripts/finetune_faces_cv.py`` so that the frozen-features probe
and the fine-tuned network see the very same crops and folds.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from affectfuse.training.finetune import FinetuneConfig, build_classifier, fit, pick_device
from affectfuse.training.finetune_data import CropDataset, ExpressionData, load_expression_dataset, prepare_crops
from affectfuse.utils import FailureLog, seed_everything, write_json_atomic

log = logging.getLogger(__name__)


def make_split(labels: np.ndarray, folds: int, fold: int | None, val_fraction: float, seed: int):
    """(train_idx, val_idx) int64: fold ``fold`` of a stratified ``folds``-fold split, or a stratified holdout."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

    n = len(labels)
    idx = np.arange(n)
    if fold is not None:
        if not 0 <= fold < folds:
            raise ValueError(f"fold must lie in 0..{folds - 1}, got {fold}")
        train, val = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(idx, labels))[fold]
        return train.astype(np.int64), val.astype(np.int64)
    if val_fraction <= 0:
        return idx, idx[:0]
    counts = np.bincount(labels)
    strat = labels if counts[counts > 0].min() >= 2 else None
    train, val = train_test_split(idx, test_size=val_fraction, random_state=seed, stratify=strat)
    return np.sort(train), np.sort(val)


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of about ``n`` items keeping the class proportions (each present class keeps >= 1)."""
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = max(1, int(round(n * len(members) / len(labels))))
        out.append(rng.permutation(members)[:k])
    return np.sort(np.concatenate(out))


@dataclass
class PreparedData:
    """A dataset whose images all have a face crop: ``data.paths[i]`` -> ``files[i]`` (PNG, size x size)."""

    data: ExpressionData
    files: list[Path]
    size: int
    no_face: int
    failed: int
    index: np.ndarray | None = None  # (N,) row of each item in the dataset as read (None: all rows, in order)


def prepare_data(source, classes, size: int, align: str, cache_dir, failures: FailureLog | None,
                 device: str = "cpu", progress: bool = False, template: str | None = None,
                 only: np.ndarray | None = None) -> PreparedData:
    """Read the dataset and make (or find cached) face crops; unreadable images are left out and logged.

    ``only``: (K,) sorted dataset rows to prepare (the others are not aligned at all); ``index`` of the
    result then holds each kept item's row."""
    data = load_expression_dataset(source, classes)
    rows = np.arange(len(data)) if only is None else np.asarray(only, dtype=np.int64)
    report = prepare_crops([data.paths[i] for i in rows], size, align, cache_dir, failures, device=device,
                           progress=progress, template=template)
    keep = np.flatnonzero(report.keep)
    files = [report.files[i] for i in keep]
    log.info("%s: %d of %d images, %d cached crops, %d without a detected face (whole image used), %d left out",
             source, len(rows), len(data), report.cached, report.no_face, report.failed)
    return PreparedData(data.subset(rows[keep]), files, size, report.no_face, report.failed,
                        None if only is None else rows[keep])


def _early_subset(cfg, size: int, template, failures, device: str, progress: bool):
    """``--max-items`` without ``--val-data``: split and subset on the labels first, then align only the
    images used -> (prepared data, train rows, val rows), rows into the prepared data."""
    labels = load_expression_dataset(cfg.data, cfg.classes).labels
    train, val = make_split(labels, cfg.folds, cfg.fold, cfg.val_fraction, cfg.seed)
    if cfg.max_items < len(train):
        train = train[stratified_subset(labels[train], cfg.max_items, cfg.seed)]
    prepared = prepare_data(cfg.data, cfg.classes, size, cfg.align, cfg.crop_cache, failures, device=device,
                            progress=progress, template=template, only=np.union1d(train, val))
    pos = {int(r): i for i, r in enumerate(prepared.index)}
    rows = lambda idx: np.array([pos[int(r)] for r in idx if int(r) in pos], dtype=np.int64)  # noqa: E731
    return prepared, rows(train), rows(val)


def _paths_hash(paths) -> str:
    return hashlib.sha1("\n".join(str(p) for p in paths).encode()).hexdigest()


def _check_resume_config(run: Path, cfg: FinetuneConfig) -> None:
    file = run / "config.json"
    if not file.exists():
        return
    old = json.loads(file.read_text())
    same = ("model", "data", "val_data", "classes", "folds", "fold", "val_fraction", "max_items", "seed", "align")
    diff = {k: (old.get(k), getattr(cfg, k)) for k in same if old.get(k) != getattr(cfg, k)}
    if diff:
        raise ValueError(f"{file}: cannot resume with a different setup: " +
                         ", ".join(f"{k} was {a!r}, now {b!r}" for k, (a, b) in diff.items()))


def config_from_dict(values: dict, source: str = "fine-tuning settings") -> FinetuneConfig:
    """FinetuneConfig from a dict, with the shared resolver's names and type checks (``source`` names it)."""
    return FinetuneConfig.from_dict(values, source)


def run_finetune(cfg: FinetuneConfig, out: str | Path, resume: bool = False, progress: bool = False,
                 prepared: PreparedData | None = None) -> dict:
    """Fine-tune ``cfg.model`` into run folder ``out``; returns the summary also written to ``summary.json``.

    ``prepared`` (from :func:`prepare_data`) skips reading the dataset again (cross-validation).
    """
    from affectfuse.features.registry import create_extractor
    from affectfuse.training.finetune_export import export_finetuned

    run = Path(out)
    if resume:
        _check_resume_config(run, cfg)
    elif (run / "checkpoint.pt").exists():
        raise ValueError(f"{run}: holds a fine-tuning run already; pass --resume to go on or choose another --out")
    run.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run / "config.json", asdict(cfg))
    seed_everything(cfg.seed)
    failures = FailureLog(run / "failures.csv")
    extractor = create_extractor(cfg.model, weights=cfg.weights, random_weights=cfg.random_weights, device="cpu")
    size, template = extractor.input.size, extractor.input  # its FacePlan: crops cut as extract/predict cut them
    device = pick_device(cfg.device)
    early = prepared is None and bool(cfg.max_items) and not cfg.val_data
    if early:  # align only the images a --max-items run uses
        prepared, train_idx, val_idx = _early_subset(cfg, size, template, failures, str(device), progress)
    elif prepared is None:
        prepared = prepare_data(cfg.data, cfg.classes, size, cfg.align, cfg.crop_cache, failures,
                                device=str(device), progress=progress, template=template)
    data, classes = prepared.data, prepared.data.classes
    if early:
        val_files, val_labels = [prepared.files[i] for i in val_idx], data.labels[val_idx]
    elif cfg.val_data:
        val_prep = prepare_data(cfg.val_data, classes, size, cfg.align, cfg.crop_cache, failures, str(device),
                                progress, template)
        train_idx, val_files, val_labels = np.arange(len(data)), val_prep.files, val_prep.data.labels
    else:
        train_idx, val_idx = make_split(data.labels, cfg.folds, cfg.fold, cfg.val_fraction, cfg.seed)
        val_files, val_labels = [prepared.files[i] for i in val_idx], data.labels[val_idx]
    if cfg.max_items and cfg.max_items < len(train_idx) and not early:
        train_idx = train_idx[stratified_subset(data.labels[train_idx], cfg.max_items, cfg.seed)]
    split = {"dataset": str(cfg.data), "n": len(data), "paths_sha1": _paths_hash(data.paths),
             "classes": list(classes), "train": train_idx.tolist(),
             "val": None if cfg.val_data else val_idx.tolist(), "val_data": cfg.val_data}
    split_file = run / "split.json"
    if resume and split_file.exists():
        old = json.loads(split_file.read_text())
        if old["paths_sha1"] != split["paths_sha1"] or old["train"] != split["train"]:
            raise ValueError(f"{split_file}: the dataset or split changed since the run started; cannot resume")
    write_json_atomic(split_file, split)

    preload = cfg.preload if cfg.preload is not None else len(data) * 3 * size * size < 1.5e9
    train_set = CropDataset([prepared.files[i] for i in train_idx], data.labels[train_idx], size, True, preload)
    val_set = CropDataset(val_files, val_labels, size, False, preload)
    model = build_classifier(extractor, classes)
    result = fit(model, train_set, val_set, cfg, run, resume=resume, progress=progress)
    info = {"data": str(cfg.data), "val_data": cfg.val_data, "fold": cfg.fold, "folds": cfg.folds,
            "train_counts": {c: int(k) for c, k in zip(classes, np.bincount(train_set.labels, minlength=len(classes)))},
            "best_epoch": result["best_epoch"], "epochs": cfg.epochs,
            "metrics": None if result["best"] is None else
            {k: result["best"][k] for k in ("accuracy", "macro_f1", "uar", "n", "per_class")}}
    pt = export_finetuned(model.cpu(), extractor, run / "export", info)
    summary = {"run": str(run), "export": str(pt), "classes": list(classes), "n_train": len(train_set),
               "n_val": len(val_set), "no_face": prepared.no_face, "failed": len(failures), **{
                   k: info[k] for k in ("best_epoch", "metrics")}}
    write_json_atomic(run / "summary.json", summary)
    return summary
