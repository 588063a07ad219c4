"""One training engine for every task: ERI (per video), EXPR (per frame), items and fine-tuning.

The engine owns what every loop shares: the epoch loop, the optimizer step (gradient clipping, EMA,
micro-batches through :meth:`Engine.step` after the task's own backward passes), the learning-rate
schedule (per epoch or per step), early stopping (:func:`early_stopping_update`, direction from the task
spec's metric), best-checkpoint selection and writing, the history writer (``metrics.csv``, TensorBoard)
and ``last.pt``, from which ``resume`` goes on bit-identically (weights, EMA, optimizer, scheduler, torch's
global RNG and the shuffling generator, early-stopping counters, history).

A task is an object with three methods (see :class:`EngineTask`)::

    train_epoch(engine, epoch) -> dict      backward its batches, call engine.step() after each; train losses
    validate(model) -> Validation | None    the validated model's score and row entries (None: no validation)
    best_payload(model, epoch, row) -> dict the checkpoint of a new best (None: keep it in memory only)

and, optionally, ``on_best(epoch, row, extra)`` (e.g. write validation predictions).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from affectfuse.training.checkpoint import write_checkpoint, write_history
from affectfuse.training.step import apply_gradients

log = logging.getLogger(__name__)

STATE_KEYS = ("epoch", "best", "best_epoch", "bad", "history", "finished", "es_best")


def new_state(mode: str = "max") -> dict:
    """Early-stopping and progress counters of a run that has not trained yet."""
    worst = -float("inf") if mode == "max" else float("inf")
    return {"epoch": 0, "best": worst, "best_epoch": 0, "bad": 0, "history": [], "finished": False,
            "es_best": worst}


def early_stopping_update(state: dict, score: float, patience: int, min_delta: float, mode: str = "max") -> bool:
    """Update ``state`` after an epoch's validation ``score``; True when it is a new best (save it).

    A new best is any finite improvement (larger with ``mode="max"``, smaller with ``"min"``); the patience
    counter resets only when ``score`` beats the best counted score (``es_best``) by more than ``min_delta``
    (Lightning's EarlyStopping); ``finished`` is set after ``patience`` epochs without that (0 = never).
    """
    if mode not in ("max", "min"):
        raise ValueError(f"early-stopping mode must be 'max' or 'min', got {mode!r}")
    sign = 1.0 if mode == "max" else -1.0
    finite = bool(np.isfinite(score))
    improved = finite and sign * score > sign * state["best"]
    if improved:
        state.update(best=score, best_epoch=state["epoch"])
    if finite and sign * score > sign * state["es_best"] + min_delta:
        state.update(es_best=score, bad=0)
    else:
        state["bad"] += 1
        if patience > 0 and state["bad"] >= patience:
            state["finished"] = True
    return improved


@dataclass
class Validation:
    """One validation pass: ``score`` (the task's metric), ``row`` (history columns), ``extra`` (anything
    the task wants back at a new best, e.g. predictions or the full scores)."""

    score: float
    row: dict
    extra: Any = None


class EngineTask(Protocol):
    def train_epoch(self, engine: "Engine", epoch: int) -> dict: ...

    def validate(self, model: torch.nn.Module) -> Validation | None: ...

    def best_payload(self, model: torch.nn.Module, epoch: int, row: dict) -> dict | None: ...


@dataclass
class EngineConfig:
    """How the engine runs a task. ``mode``: direction of the metric (the task spec's); ``select``: keep
    the ``best`` validated epoch or the ``last`` one; ``stop_after``: end this invocation after that many
    epochs (0 = no limit); ``stop_at``: end at that epoch number (resumable, 0 = no limit);
    ``scheduler_per``: ``epoch`` or ``step``; ``best_in_last``: also store the best weights in ``last.pt``
    (for tasks that rebuild the model from them after a resume rather than from ``best.pt``)."""

    max_epochs: int
    patience: int = 0
    min_delta: float = 0.0
    mode: str = "max"
    select: str = "best"
    clip_norm: float = 0.0
    ema_before_step: bool = False
    stop_after: int = 0
    stop_at: int = 0
    scheduler_per: str = "epoch"
    best_in_last: bool = False
    progress: bool = False
    log_epochs: bool = False
    tensorboard: bool = False
    history_name: str = "metrics.csv"
    last_name: str = "last.pt"
    best_name: str = "best.pt"
    meta: dict = field(default_factory=dict)  # schema fields stored in last.pt (see training.checkpoint)


class Engine:
    """Runs a task's epochs with one model, optimizer, optional scheduler, EMA copy and shuffling generator."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: EngineConfig,
                 scheduler=None, ema=None, generator: torch.Generator | None = None,
                 run_dir: str | Path | None = None):
        if config.select not in ("best", "last"):
            raise ValueError(f"select must be best or last, got {config.select!r}")
        self.model, self.optimizer, self.config = model, optimizer, config
        self.scheduler, self.ema, self.generator = scheduler, ema, generator
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.state = new_state(config.mode)
        self.best_state: dict | None = None
        self.best_extra: Any = None

    @property
    def eval_model(self) -> torch.nn.Module:
        """The copy that is validated, saved and early-stopped: the EMA weights when EMA is on."""
        return self.ema.module if self.ema is not None else self.model

    def step(self) -> None:
        """Clip the accumulated gradients, step the optimizer, update the EMA copy (and a per-step schedule)."""
        apply_gradients(self.model, self.optimizer, self.config.clip_norm, self.ema, self.config.ema_before_step)
        if self.scheduler is not None and self.config.scheduler_per == "step":
            self.scheduler.step()

    def backward_step(self, loss: torch.Tensor) -> None:
        """Zero the gradients, backward ``loss`` and :meth:`step`."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.step()

    def start_from(self, validation: Validation) -> None:
        """Count the untrained model (epoch 0) as the best so far (a head started at a probe's solution)."""
        self.state.update(best=validation.score, es_best=validation.score, best_epoch=0)
        self.best_state = _clone(self.eval_model)
        self.best_extra = validation.extra

    # -- resume ---------------------------------------------------------------------------------------
    def training_state(self) -> dict:
        """Everything needed to go on after the last finished epoch (``weights_only``-loadable)."""
        out = {"model": self.model.state_dict(), "ema": self.ema.state_dict() if self.ema is not None else {},
               "optimizer": self.optimizer.state_dict(),
               "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
               "rng_torch": torch.get_rng_state(),
               "rng_generator": self.generator.get_state() if self.generator is not None else None,
               **{k: self.state[k] for k in STATE_KEYS}}
        if self.config.best_in_last:
            out["best_state"] = self.best_state
            out["best_extra"] = self.best_extra
        return out

    def load_training_state(self, saved: dict) -> None:
        """Restore :meth:`training_state` (``last.pt``'s ``training`` entry)."""
        self.model.load_state_dict(saved["model"])
        if self.ema is not None and saved.get("ema"):
            self.ema.load_state_dict(saved["ema"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.scheduler is not None and saved.get("scheduler"):
            self.scheduler.load_state_dict(saved["scheduler"])
        if saved.get("rng_torch") is not None:  # old fine-tuning files: it re-seeds every epoch
            torch.set_rng_state(saved["rng_torch"])
        if self.generator is not None and saved.get("rng_generator") is not None:
            self.generator.set_state(saved["rng_generator"])
        self.state.update({k: saved[k] for k in STATE_KEYS if k in saved})
        self.state["history"] = list(self.state["history"])
        if "es_best" not in saved:  # saved before min_delta existed: the two bests were one
            self.state["es_best"] = self.state["best"]
        self.best_state, self.best_extra = saved.get("best_state"), saved.get("best_extra")

    def resume(self, kind: str) -> bool:
        """Load ``run_dir/last.pt`` (a checkpoint of ``kind``) when it exists; True when it did."""
        from affectfuse.training.checkpoint import read_checkpoint

        path = self.run_dir / self.config.last_name if self.run_dir is not None else None
        if path is None or not path.is_file():
            return False
        saved = read_checkpoint(path, kind, f"{kind} resume checkpoint ({path.name})", role="last")
        self.load_training_state(saved["training"])
        log.info("resuming %s after epoch %d (best %.4f at epoch %d)", self.run_dir, self.state["epoch"],
                 self.state["best"], self.state["best_epoch"])
        return True

    # -- the loop -------------------------------------------------------------------------------------
    def run(self, task: EngineTask) -> dict:
        """Train until ``max_epochs``, early stopping or a stop limit; returns the state (``history``,
        ``best``, ``best_epoch``, ``epoch``, ``finished``)."""
        cfg, state = self.config, self.state
        writer = self._tensorboard()
        bar = _progress_bar(cfg, state["epoch"])
        ran = 0
        while not state["finished"] and state["epoch"] < cfg.max_epochs:
            if (cfg.stop_after and ran >= cfg.stop_after) or (cfg.stop_at and state["epoch"] >= cfg.stop_at):
                break
            row = self._epoch(task, state["epoch"] + 1)
            self._write(row, writer)
            ran += 1
            bar.update(1)
            bar.set_postfix(loss=f"{row.get('train_loss', float('nan')):.4f}", best=f"{state['best']:.4f}")
        bar.close()
        if writer is not None:
            writer.close()
        return state

    def _epoch(self, task: EngineTask, epoch: int) -> dict:
        cfg, state = self.config, self.state
        t0 = time.perf_counter()
        self.model.train()
        row = {"epoch": epoch, **task.train_epoch(self, epoch)}
        if self.scheduler is not None and cfg.scheduler_per == "epoch":
            self.scheduler.step()
        val = task.validate(self.eval_model)
        if val is not None:
            row.update(val.row)
        row["seconds"] = time.perf_counter() - t0
        state["history"].append(row)
        state["epoch"] = epoch
        if val is None or cfg.select == "last":
            score = val.score if val is not None else float("nan")
            state.update(best=score, best_epoch=epoch)
            improved = True
        else:
            improved = early_stopping_update(state, val.score, cfg.patience, cfg.min_delta, cfg.mode)
        if improved:
            self.best_state, self.best_extra = _clone(self.eval_model), (val.extra if val is not None else None)
            payload = task.best_payload(self.eval_model, epoch, row)
            if self.run_dir is not None and payload is not None:
                write_checkpoint(payload, self.run_dir / cfg.best_name)
            if hasattr(task, "on_best"):
                task.on_best(epoch, row, self.best_extra)
        if epoch >= cfg.max_epochs:
            state["finished"] = True
        if cfg.log_epochs:
            log.info("epoch %d: %s", epoch, {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
        return row

    def _write(self, row: dict, writer) -> None:
        """History file, TensorBoard scalars and ``last.pt`` after an epoch."""
        if self.run_dir is None:
            return
        write_history(self.run_dir / self.config.history_name, self.state["history"])
        if writer is not None:
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)):
                    writer.add_scalar(k, v, row["epoch"])
            writer.flush()
        write_checkpoint({**self.config.meta, "role": "last", "training": self.training_state()},
                         self.run_dir / self.config.last_name)

    def _tensorboard(self):
        if self.run_dir is None or not self.config.tensorboard:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.run_dir / "tb"), purge_step=self.state["epoch"] + 1)

    def best_model_state(self) -> dict | None:
        """The weights of the selected epoch (in memory, or from ``last.pt`` after a resume)."""
        return self.best_state


def _clone(model: torch.nn.Module) -> dict:
    from affectfuse.models.input_norm import unwrap

    return {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()}


def _progress_bar(cfg: EngineConfig, done: int):
    from tqdm.auto import tqdm

    return tqdm(total=cfg.max_epochs, initial=done, desc="train", unit="epoch", disable=not cfg.progress,
                leave=False)
