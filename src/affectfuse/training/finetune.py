"""Fine-tune a face extractor's network on a face-expression image dataset (the paper's AffectNet-7 step).

A run folder ``RUN`` holds::

    config.json        resolved FinetuneConfig
    split.json         train / validation indices (fold k of K, or a held-out fraction), dataset hash
    checkpoint.pt      last epoch: model, optimizer, scheduler, history (atomic; ``resume=True`` goes on)
    best.pt            the model of the epoch with the best validation macro F1 (the checkpoint schema of
                       :mod:`affectfuse.training.checkpoint`, kind ``finetune``)
    history.csv        per epoch: train loss, validation accuracy / macro F1 / UAR, learning rate, seconds
    metrics.json       validation scores of the best epoch (accuracy, macro F1, UAR, per class, confusion)
    failures.csv       images left out (unreadable), when any
    export/<name>.pt   the extractor's state dict in its own naming (see :mod:`finetune_export`)

The network is the extractor's own ``nn.Module`` (``extractor.model``); the embedding is ``model.embed(x)``
when it has one, else ``model(x)``; a fresh linear head over the embedding gives the fine-tuned classes,
initialised from the extractor's own head where class names match (face-api ``happy`` = ``Happiness`` ...).
Inputs are uint8 crops, normalised inside :class:`ExpressionClassifier` exactly as the extractor does.
Training (the shared :mod:`affectfuse.training.engine`): AdamW (head lr x ``head_lr_mult``), linear warm-up
then cosine decay (stepped per batch), gradient clipping (``clip_norm``), class-weighted cross-entropy or
focal loss or a class-balanced sampler. Precision: training steps run the network under
bf16 autocast on CUDA (``amp``; fp32 on CPU); the head, the loss, validation and the probe's embeddings are
always float32 (the precision policy of :mod:`affectfuse.features.face_common`).
Every epoch draws its shuffling and augmentation from ``seed`` and the epoch number, so a resumed run
gives the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch

from affectfuse.data.tasks import task_from_labels
from affectfuse.training.checkpoint import SCHEMA, VERSION, checkpoint_payload, read_checkpoint
from affectfuse.training.engine import Engine, EngineConfig, Validation
from affectfuse.training.finetune_model import (HEAD_ATTRS, ExpressionClassifier, FinetuneConfig,  # noqa: F401
                                                apply_freeze, autocast, build_classifier, evaluate,
                                                extractor_classes, find_head, make_loader, make_loss,
                                                make_optimizer, pick_device, predict_logits)
from affectfuse.utils import write_json_atomic

log = logging.getLogger(__name__)
KIND = "finetune"


def load_checkpoint(path: Path) -> dict:
    """A fine-tuning checkpoint (``best.pt`` or the resume state ``checkpoint.pt``), old format included."""
    return read_checkpoint(path, KIND, "fine-tuning checkpoint")


class FinetuneTask:
    """The engine's entry for per-item image classification: an epoch of augmented batches (bf16 autocast
    on CUDA, the loss in float32), validation macro F1, ``best.pt`` and ``metrics.json``."""

    def __init__(self, train_set, val_set, cfg: FinetuneConfig, device, loss_fn, run: Path, progress: bool):
        self.train_set, self.val_set, self.cfg, self.device = train_set, val_set, cfg, device
        self.loss_fn, self.run, self.progress = loss_fn, run, progress

    def train_epoch(self, engine: Engine, epoch: int) -> dict:
        cfg, device = self.cfg, self.device
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # augmentation draws
        loader = make_loader(self.train_set, cfg, epoch, train=True, labels=self.train_set.labels)
        if self.progress:
            from tqdm import tqdm

            loader = tqdm(loader, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False)
        total, n = 0.0, 0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device)
            with autocast(device, cfg.amp):
                logits = engine.model(x)
            loss = self.loss_fn(logits.float(), y)
            engine.backward_step(loss)
            total += float(loss.detach()) * len(y)
            n += len(y)
        return {"train_loss": round(total / max(n, 1), 6), "lr": engine.scheduler.get_last_lr()[0]}

    def validate(self, model: ExpressionClassifier) -> Validation | None:
        if not len(self.val_set):
            return None
        scores = evaluate(model, self.val_set, self.cfg, self.device)
        row = {f"val_{k}": round(scores[k], 6) for k in ("accuracy", "macro_f1", "uar")}
        return Validation(scores["macro_f1"], row, scores)

    def best_payload(self, model: ExpressionClassifier, epoch: int, row: dict) -> dict:
        classes = list(model.classes)
        task = task_from_labels(KIND, "item", "classification", classes).to_dict()
        return checkpoint_payload(KIND, model_name=self.cfg.model, model_args={"classes": classes},
                                  state_dict=model.state_dict(), task=task, train_config=asdict(self.cfg),
                                  epoch=epoch, metrics=row)

    def on_best(self, epoch: int, row: dict, scores: dict | None) -> None:
        if scores:
            write_json_atomic(self.run / "metrics.json", {"epoch": epoch, "split": "validation", **scores})


def fit(model: ExpressionClassifier, train_set, val_set, cfg: FinetuneConfig, run: Path, resume: bool = False,
        progress: bool = False) -> dict:
    """Train ``model`` in place for ``cfg.epochs`` epochs, checkpointing every epoch into ``run``.

    Returns ``{"best_epoch", "best": scores, "history"}``; ``model`` ends holding the best weights
    (the last ones when there is no validation set).
    """
    cfg.validate()
    device = pick_device(cfg.device)
    model.to(device)
    apply_freeze(model, cfg.freeze)
    loss_fn = make_loss(cfg, train_set.labels, len(model.classes), device)
    steps = len(make_loader(train_set, cfg, 0, train=True, labels=train_set.labels))
    opt, sched = make_optimizer(model, cfg, steps)
    meta = {"format": SCHEMA, "version": VERSION, "kind": KIND, "train_config": asdict(cfg)}
    engine = Engine(model, opt, EngineConfig(
        max_epochs=cfg.epochs, select=cfg.select, clip_norm=cfg.clip_norm, stop_at=cfg.stop_after,
        scheduler_per="step", log_epochs=True, history_name="history.csv", last_name="checkpoint.pt", meta=meta),
        scheduler=sched, run_dir=run)
    resumed = resume and engine.resume(KIND)
    if not resumed and cfg.head_init == "probe":
        from affectfuse.training.finetune_probe import probe_head

        probe_head(model, train_set, cfg, device)
    task = FinetuneTask(train_set, val_set, cfg, device, loss_fn, run, progress)
    state = engine.run(task)
    best_path = run / "best.pt"
    if best_path.exists():
        model.load_state_dict(load_checkpoint(best_path)["state_dict"])
    best = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else None
    return {"best_epoch": state["best_epoch"], "best": best, "history": state["history"]}
