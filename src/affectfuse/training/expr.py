"""Training, prediction and checkpoints of the EXPR frame transformer.

Recipe: windows of ``window`` frames every ``stride`` frames over each training video, focal loss with
per-class alpha from label frequencies, AdamW, gradient clipping, optional EMA of the weights
(``torch.optim.swa_utils``; the EMA copy is what is validated, saved and early-stopped), early stopping
on the validation macro F1 (8 classes, -1 frames excluded). Prediction averages the per-frame
probabilities of overlapping windows.

Checkpoints describe themselves (format ``affectfuse-expr/1``): model and training config, class names,
the feature sets they were trained on (name, dim, extractor), fill policy and frame rate, metrics and
versions; they load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import csv
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from affectfuse.data.affwild2 import ExprVideo
from affectfuse.data.windows import overlap_average, smooth_probabilities, window_starts
from affectfuse.labels import EXPR_CLASSES
from affectfuse.metrics.classification import classification_scores
from affectfuse.models.expr import ExprModelConfig, ExprTransformer
from affectfuse.training.checkpoint import read_checkpoint
from affectfuse.training.checkpoint import save_checkpoint as write_checkpoint  # expr's own save_checkpoint wraps it
from affectfuse.training.losses import FocalLoss, class_weights
from affectfuse.training.step import optimizer_step
from affectfuse.utils import atomic_path, dataclass_from_dict, seed_everything, write_text_atomic

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = "affectfuse-expr/1"


@dataclass
class ExprTrainConfig:
    """Typed training configuration (dataclass defaults -> YAML -> ``--set key=value``)."""

    window: int = 64  # frames per training / prediction window
    stride: int = 32  # frames between training window starts
    predict_stride: int = 16  # frames between prediction window starts (overlaps averaged)
    batch_size: int = 32
    epochs: int = 30
    lr: float = 3e-4
    weight_decay: float = 1e-2
    gamma: float = 2.0  # focal loss focusing parameter, [0, 5]
    class_weights: str = "inverse_sqrt"  # focal alpha: none | inverse | inverse_sqrt | effective
    ema_decay: float = 0.0  # 0 = no EMA; e.g. 0.99
    patience: int = 8  # epochs without validation improvement before stopping
    clip_norm: float = 1.0  # gradient clipping max-norm (0 = off)
    seed: int = 0
    device: str = "cpu"
    model: dict = field(default_factory=dict)  # ExprModelConfig overrides (d_model, n_layers, ...)

    @classmethod
    def from_dict(cls, d: dict) -> "ExprTrainConfig":
        return dataclass_from_dict(cls, d, "EXPR training option(s)")


class _FrameBank:
    """All videos' frames in one (F, D) tensor, so a batch of windows is one gather (no copies per video)."""

    def __init__(self, videos: list[ExprVideo]):
        self.x = torch.from_numpy(np.concatenate([v.features for v in videos]).astype(np.float32))
        self.valid = torch.from_numpy(np.concatenate([v.valid for v in videos]))
        self.y = torch.from_numpy(np.concatenate([v.labels for v in videos]).astype(np.int64))
        lengths = np.array([v.n_frames for v in videos])
        self.offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.lengths = lengths

    def windows(self, length: int, stride: int) -> np.ndarray:
        """(W, 2) rows of (video index, start frame)."""
        rows = [(i, s) for i, n in enumerate(self.lengths) for s in window_starts(int(n), length, stride)]
        return np.asarray(rows, dtype=np.int64)

    def gather(self, rows: np.ndarray, length: int):
        """x (B, L, D), valid (B, L), y (B, L) with -1 at padding, pad (B, L)."""
        local = rows[:, 1:2] + np.arange(length)[None, :]  # (B, L) frame index inside each video
        n = self.lengths[rows[:, 0]][:, None]
        pad = local >= n
        index = torch.from_numpy(self.offsets[rows[:, 0]][:, None] + np.minimum(local, n - 1))
        pad_t = torch.from_numpy(pad)
        y = torch.where(pad_t, torch.full_like(self.y[index], -1), self.y[index])
        return self.x[index], self.valid[index] | pad_t, y, pad_t


@torch.no_grad()
def predict_videos(model: ExprTransformer, videos: list[ExprVideo], window: int, stride: int,
                   batch_size: int = 64, device: str = "cpu",
                   smoothing: tuple[str, int] = ("none", 1)) -> dict[str, np.ndarray]:
    """id -> per-frame class probabilities (N, C) of each video, overlapping windows averaged, then
    optionally smoothed (``(method, window)``, see :func:`smooth_probabilities`). Windows of all videos
    share batches, so many short videos (or single images) cost one forward pass per batch."""
    if not videos:
        return {}
    model.eval()
    bank = _FrameBank(videos)
    rows = bank.windows(window, stride)
    outputs = []
    for b in range(0, len(rows), batch_size):
        x, valid, _, pad = bank.gather(rows[b:b + batch_size], window)
        logits = model(x.to(device), valid.to(device), pad.to(device))
        outputs.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
    probs = np.concatenate(outputs)
    out = {}
    for i, v in enumerate(videos):
        mine = rows[:, 0] == i
        out[v.id] = smooth_probabilities(overlap_average(probs[mine], rows[mine, 1], v.n_frames), *smoothing)
    return out


def predict_video(model: ExprTransformer, video: ExprVideo, window: int, stride: int,
                  batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """Per-frame class probabilities (N, C) of one video, overlapping windows averaged."""
    return predict_videos(model, [video], window, stride, batch_size, device)[video.id]


def evaluate_probabilities(videos: list[ExprVideo], probs: dict[str, np.ndarray], class_names=EXPR_CLASSES) -> dict:
    """Frame-level scores (macro F1 over all classes, -1 frames excluded) of predictions on labelled videos."""
    y_true = np.concatenate([v.labels for v in videos])
    y_pred = np.concatenate([probs[v.id].argmax(axis=1) for v in videos])
    return classification_scores(y_true, y_pred, len(class_names), class_names)


def _plain(obj):
    """numpy scalars/arrays -> python types, so checkpoints load with weights_only=True."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def save_checkpoint(path, model: ExprTransformer, train_config: ExprTrainConfig, info: dict) -> Path:
    """Write a self-describing checkpoint atomically. ``info``: class_names, feature_sets, fill, fps, ..."""
    from affectfuse import __version__

    payload = {"format": CHECKPOINT_FORMAT, "model_config": model.config.to_dict(),
               "train_config": _plain(asdict(train_config)), "info": _plain(info),
               "versions": {"affectfuse": __version__, "torch": str(torch.__version__)},
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    return write_checkpoint(payload, path)


def load_checkpoint(path, device: str = "cpu") -> tuple[ExprTransformer, dict]:
    """Rebuild the model from a checkpoint file alone; returns (model in eval mode, checkpoint dict)."""
    ckpt = read_checkpoint(path, CHECKPOINT_FORMAT, "EXPR checkpoint", map_location=device)
    model = ExprTransformer(ExprModelConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), ckpt


@dataclass
class ExprRun:
    model: ExprTransformer  # the validated copy (EMA weights when EMA is on)
    history: list[dict]
    best: dict  # validation scores of the best epoch
    best_epoch: int


def train_expr(train: list[ExprVideo], val: list[ExprVideo], config: ExprTrainConfig,
               run_dir: str | Path | None = None, info: dict | None = None,
               class_names=EXPR_CLASSES, progress: bool = False, resume: bool = False) -> ExprRun:
    """Train on ``train`` windows, early-stop on ``val`` macro F1; write ``run_dir`` when given.

    ``run_dir`` gets ``config.yaml`` (resolved), ``metrics.csv`` (one row per epoch), ``best.pt`` and
    ``last.pt`` (after every epoch: weights, optimizer, EMA, random states, history). ``resume=True``
    goes on from ``last.pt`` with the same config and gives the same weights and history as an
    uninterrupted run; a finished run is not trained again. Without ``resume`` an existing run is an error.
    """
    if not train or not val:
        raise ValueError("training needs at least one training and one validation video")
    seed_everything(config.seed)
    n_classes = len(class_names)
    dims = {v.features.shape[1] for v in train + val}
    if len(dims) != 1:
        raise ValueError(f"videos have different feature dims {sorted(dims)}")
    audio_dim = int((info or {}).get("audio_dim", 0))
    model_cfg = ExprModelConfig.from_dict({**config.model, "face_dim": dims.pop() - audio_dim,
                                           "audio_dim": audio_dim, "n_classes": n_classes})
    model = ExprTransformer(model_cfg).to(config.device)
    bank = _FrameBank(train)
    alpha = class_weights(bank.y.numpy(), n_classes, config.class_weights)
    criterion = FocalLoss(config.gamma, torch.from_numpy(alpha)).to(config.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    ema = None
    if config.ema_decay > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
    info = {**(info or {}), "class_names": list(class_names), "class_weights": alpha.tolist()}
    rows = bank.windows(config.window, config.stride)
    generator = torch.Generator().manual_seed(config.seed)
    state = {"epoch": 0, "history": [], "best": None, "best_epoch": -1, "best_state": None, "finished": False}
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None:
        import yaml

        config_text = yaml.safe_dump(_plain(asdict(config)), sort_keys=False)
        last = run_dir / "last.pt"
        if last.is_file() and not resume:
            raise ValueError(f"{run_dir}: an EXPR run exists here already; pass --resume to go on or choose "
                             "another --out")
        if resume and last.is_file():
            old = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else None
            if old != config_text:
                raise ValueError(f"{run_dir / 'config.yaml'}: the training config differs from this one; "
                                 "resume with the same config or choose another --out")
            _load_last(last, model, optimizer, ema, generator, state)
            log.info("%s: resuming after epoch %d (best macro F1 %.4f at epoch %d)", run_dir, state["epoch"],
                     state["best"]["macro_f1"] if state["best"] else float("nan"), state["best_epoch"])
        write_text_atomic(run_dir / "config.yaml", config_text)
    history, best, best_epoch, best_state = (state[k] for k in ("history", "best", "best_epoch", "best_state"))
    first = state["epoch"] + 1 if not state["finished"] else config.epochs + 1
    for epoch in range(first, config.epochs + 1):
        model.train()
        start, losses = time.perf_counter(), []
        for b in torch.randperm(len(rows), generator=generator).split(config.batch_size):
            x, valid, y, pad = bank.gather(rows[b.numpy()], config.window)
            logits = model(x.to(config.device), valid.to(config.device), pad.to(config.device))
            loss = criterion(logits, y.to(config.device))
            optimizer_step(model, loss, optimizer, config.clip_norm, ema)
            losses.append(loss.item())
        scored = ema.module if ema is not None else model
        probs = predict_videos(scored, val, config.window, config.predict_stride, device=config.device)
        scores = evaluate_probabilities(val, probs, class_names)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_macro_f1": scores["macro_f1"],
               "val_uar": scores["uar"], "val_accuracy": scores["accuracy"],
               "seconds": time.perf_counter() - start}
        history.append(row)
        if progress:
            log.info("epoch %d loss %.4f val macro F1 %.4f", epoch, row["train_loss"], row["val_macro_f1"])
        if best is None or scores["macro_f1"] > best["macro_f1"]:
            best, best_epoch = scores, epoch
            best_state = {k: v.detach().clone() for k, v in scored.state_dict().items()}
            if run_dir is not None:
                summary = {k: scores[k] for k in ("macro_f1", "uar", "accuracy")}
                save_checkpoint(run_dir / "best.pt", scored, config, {**info, "epoch": epoch, "val": summary})
        stop = epoch - best_epoch >= config.patience or epoch == config.epochs
        if run_dir is not None:
            _write_history(run_dir / "metrics.csv", history)
            _save_last(run_dir / "last.pt", epoch, stop, model, optimizer, ema, generator, history, best,
                       best_epoch, best_state)
        if stop:
            break
    if best_state is None:
        raise ValueError(f"{run_dir}: the run holds no trained epoch (config epochs={config.epochs})")
    final = ExprTransformer(model_cfg)
    final.load_state_dict(best_state)
    return ExprRun(final.to(config.device).eval(), history, best, best_epoch)


def _save_last(path: Path, epoch: int, finished: bool, model, optimizer, ema, generator, history, best,
               best_epoch: int, best_state) -> None:
    """Everything needed to go on after ``epoch`` (``weights_only``-loadable)."""
    payload = {"format": CHECKPOINT_FORMAT + "-last", "epoch": epoch, "finished": finished,
               "model": model.state_dict(), "optimizer": optimizer.state_dict(),
               "ema": ema.state_dict() if ema is not None else None,
               "rng_torch": torch.get_rng_state(), "rng_generator": generator.get_state(),
               "history": _plain(history), "best": _plain(best), "best_epoch": best_epoch, "best_state": best_state}
    write_checkpoint(payload, path)


def _load_last(path: Path, model, optimizer, ema, generator, state: dict) -> None:
    saved = read_checkpoint(path, CHECKPOINT_FORMAT + "-last", "EXPR resume checkpoint")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if ema is not None and saved["ema"] is not None:
        ema.load_state_dict(saved["ema"])
    torch.set_rng_state(saved["rng_torch"])
    generator.set_state(saved["rng_generator"])
    state.update(epoch=saved["epoch"], finished=saved["finished"], history=list(saved["history"]),
                 best=saved["best"], best_epoch=saved["best_epoch"], best_state=saved["best_state"])


def _write_history(path: Path, history: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


# -- the generic path: labelled items (images, clips) -----------------------------------------------
def item_probabilities(frame_probs: dict[str, np.ndarray], items: list[ExprVideo]) -> np.ndarray:
    """(I, C) item probabilities: the mean of each item's frame probabilities over its face frames
    (over all its frames when it has none)."""
    out = []
    for item in items:
        p = frame_probs[item.id]
        out.append(p[item.valid].mean(axis=0) if item.valid.any() else p.mean(axis=0))
    return np.asarray(out, dtype=np.float32)


def pooled_features(items: list[ExprVideo]) -> np.ndarray:
    """(I, D) mean feature row of each item over its face frames (zeros when it has none)."""
    return np.stack([it.features[it.valid].mean(axis=0) if it.valid.any() else np.zeros(it.features.shape[1],
                     np.float32) for it in items])


def _fit_predict_logreg(train: list[ExprVideo], test: list[ExprVideo], n_classes: int, seed: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.array([it.labels[0] for it in train])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, class_weight="balanced",
                                                             C=0.5, random_state=seed))
    clf.fit(pooled_features(train), y)
    probs = np.zeros((len(test), n_classes), np.float32)
    probs[:, clf.classes_] = clf.predict_proba(pooled_features(test))
    return probs


def _fit_predict_transformer(train, test, config: ExprTrainConfig, class_names, groups, seed) -> np.ndarray:
    from dataclasses import replace

    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    y = np.array([it.labels[0] for it in train])
    index = np.arange(len(train))
    if groups is not None:  # inner validation split (early stopping) by group, never by item
        fit_idx, val_idx = next(GroupShuffleSplit(1, test_size=0.15, random_state=seed).split(index, y, groups))
    else:
        strat = y if np.bincount(y).min(initial=2) >= 2 else None
        fit_idx, val_idx = train_test_split(index, test_size=0.15, random_state=seed, stratify=strat)
    longest = max(it.n_frames for it in train + test)
    window = min(config.window, longest)
    cfg = replace(config, window=window, stride=max(1, min(config.stride, window)),
                  predict_stride=max(1, min(config.predict_stride, window)), seed=seed)
    run = train_expr([train[i] for i in fit_idx], [train[i] for i in val_idx], cfg, class_names=class_names)
    frame_probs = predict_videos(run.model, test, cfg.window, cfg.predict_stride, device=cfg.device)
    return item_probabilities(frame_probs, test)


def cross_validate_items(items: list[ExprVideo], class_names, folds: int = 5, groups=None,
                         classifier: str = "transformer", config: ExprTrainConfig | None = None,
                         seed: int = 0) -> dict:
    """k-fold probe of labelled items: stratified (``StratifiedKFold``) or grouped by subject/speaker
    (``StratifiedGroupKFold``). ``classifier``: ``"transformer"`` (the EXPR frame model with focal loss,
    early-stopped on 15 % of each training fold) or ``"logreg"`` (linear probe on mean-pooled features).

    Returns {"scores": pooled out-of-fold scores, "folds": per-fold scores, "probabilities": (I, C)}.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    from affectfuse.metrics.classification import classification_scores

    if classifier not in ("transformer", "logreg"):
        raise ValueError(f"unknown classifier {classifier!r}; valid: transformer, logreg")
    y = np.array([it.labels[0] for it in items])
    if (y < 0).any():
        raise ValueError(f"{int((y < 0).sum())} item(s) without a label; a probe needs labelled items")
    config = config or ExprTrainConfig()
    if groups is not None:
        groups = np.asarray(groups)
        splits = StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(y, y, groups)
    else:
        splits = StratifiedKFold(folds, shuffle=True, random_state=seed).split(y, y)
    probs = np.zeros((len(items), len(class_names)), np.float32)
    fold_scores = []
    start = time.perf_counter()
    for k, (tr, te) in enumerate(splits):
        train, test = [items[i] for i in tr], [items[i] for i in te]
        if classifier == "logreg":
            p = _fit_predict_logreg(train, test, len(class_names), seed + k)
        else:
            p = _fit_predict_transformer(train, test, config, class_names,
                                         None if groups is None else groups[tr], seed + k)
        probs[te] = p
        fold_scores.append(classification_scores(y[te], p.argmax(1), len(class_names), class_names))
        spent = time.perf_counter() - start
        print(f"probe {classifier}: fold {k + 1}/{folds} macro F1 {fold_scores[-1]['macro_f1']:.4f}, "
              f"{spent:.0f} s elapsed, ETA {spent / (k + 1) * (folds - k - 1):.0f} s", file=sys.stderr, flush=True)
    scores = classification_scores(y, probs.argmax(1), len(class_names), class_names)
    return {"scores": scores, "folds": fold_scores, "probabilities": probs}
