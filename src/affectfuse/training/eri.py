"""The paper's ERI training recipe (SPEC Part A) as one resumable loop.

loss = alpha * MSE(intensity, y) + beta * CE(logits, emotions whose label is the row max (= 1))
Adam(lr 1e-4, weight decay 1e-3), StepLR(30, x0.5), clip grad norm 0.1, EMA 0.99 of the weights
(torch.optim.swa_utils); the EMA copy is validated, checkpointed and early-stopped (patience 15).
The shipped recipes (``training/recipes``) switch the details to the authors' code or the paper's text.

Run folder written by :func:`fit` (when ``run_dir`` is given)::

    metrics.csv           one row per epoch (losses, lr, val mean Pearson and per-emotion r)
    tb/                   the same scalars for TensorBoard
    best.pt               best validated (EMA) weights, self-describing (see training.checkpoint)
    last.pt               last finished epoch with optimizer/scheduler/EMA/RNG states (for --resume)
    val_predictions.csv   validation predictions of best.pt (ERI CSV)
    result.json           best metric, epoch, whether the run finished
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from affectfuse.data.sequences import SequenceData, input_norm_stats
from affectfuse.models.eri import ERIArchitecture, create_eri_model, eri_model_args_class, parse_modality_set
from affectfuse.models.input_norm import StandardizedInputs, unwrap
from affectfuse.data.tasks import TaskSpec, task_from_labels
from affectfuse.training.checkpoint import checkpoint_payload, model_from_checkpoint, read_checkpoint
from affectfuse.training.config import RunConfig
from affectfuse.training.engine import STATE_KEYS as ENGINE_STATE_KEYS
from affectfuse.training.engine import Engine, EngineConfig, Validation, early_stopping_update  # noqa: F401
from affectfuse.training.precision import autocast, keep_heads_in_fp32, resolve_precision
from affectfuse.training.probes import init_pooled_skip, pooled_ridge, ridge_probe
from affectfuse.utils import write_json_atomic

log = logging.getLogger(__name__)


def class_targets(labels: torch.Tensor, kind: str = "row_max") -> torch.Tensor:
    """(B, K) intensities -> (B, K) cross-entropy targets.

    ``row_max``: a distribution, uniform over the emotions at the row max (Hume-Reaction rows are
    normalised by their max, so these are the emotions whose label is 1). ``multi_hot``: the authors'
    ``(y == 1)``, not normalised (two emotions at 1 weigh twice; a row without a 1 weighs nothing).
    """
    if kind == "multi_hot":
        return (labels == 1).to(labels.dtype)
    if kind != "row_max":
        raise ValueError(f"unknown class target {kind!r}; valid: row_max, multi_hot")
    top = labels >= labels.max(dim=1, keepdim=True).values - 1e-6
    top = top.to(labels.dtype)
    return top / top.sum(dim=1, keepdim=True)


def eri_loss(out: dict, labels: torch.Tensor, cfg) -> tuple[torch.Tensor, float, float]:
    """alpha * MSE + beta * CE; returns (loss, mse, ce) with ce = 0 when the class loss is off."""
    mse = F.mse_loss(out["intensity"].float(), labels)
    loss = cfg.alpha * mse
    ce_value = 0.0
    if cfg.class_loss and cfg.beta > 0:
        ce = F.cross_entropy(out["logits"].float(), class_targets(labels, cfg.class_target))
        loss = loss + cfg.beta * ce
        ce_value = float(ce.detach())
    return loss, float(mse.detach()), ce_value


@torch.no_grad()
def predict(model: torch.nn.Module, data: SequenceData, batch_size: int = 256) -> np.ndarray:
    """(N, K) intensities in [0, 1] for every video of ``data``, in order (eval mode)."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(data), batch_size):
        feats, masks, _ = data.batch(torch.arange(start, min(start + batch_size, len(data))))
        out.append(model(feats, masks)["intensity"].float())
    model.train(was_training)
    return torch.cat(out).numpy()


def eval_batch(tc) -> int:
    """Videos per forward pass when predicting in training (validation): the micro-batch, else the batch.
    Activations of a whole 256-video batch in fp32 were the peak of a paper-dims run's memory (0.4 GB);
    the micro-batch's are a quarter of that, and the predictions are the same (to float rounding)."""
    return tc.micro_batch if tc.micro_batch > 0 else tc.batch_size


def model_args(cfg: RunConfig, dims: dict[str, int], num_outputs: int) -> ERIArchitecture:
    """The model's argument dataclass from the config and the data (modality set -> input dims,
    interaction; ``data.seq_len`` for models whose length is fixed)."""
    mods, interaction = parse_modality_set(cfg.model.modality_set, list(dims))
    args_class = eri_model_args_class(cfg.model.name)
    kwargs = {f.name: getattr(cfg.model, f.name) for f in dataclasses.fields(ERIArchitecture)}
    own_fields = {f.name for f in dataclasses.fields(args_class)}
    if "seq_len" in own_fields:
        kwargs["seq_len"] = cfg.data.seq_len
    if "pooled_skip" in own_fields:
        kwargs["pooled_skip"] = cfg.model.pooled_skip
    return args_class(**kwargs, input_dims={k: dims[k] for k in mods}, num_outputs=num_outputs,
                      interaction=interaction)


def backward_batch(model: torch.nn.Module, data: SequenceData, index: torch.Tensor, tc,
                   precision: str = "fp32") -> np.ndarray:
    """Backward one batch's loss in parts of ``tc.micro_batch`` videos (0 = whole), each weighted by its
    share, so the gradients are the whole batch's while activations are held for one part at a time.
    The forward runs under ``precision``'s autocast (:mod:`affectfuse.training.precision`), the loss in
    fp32. Returns the batch's [loss, mse, ce] summed over videos."""
    sums = np.zeros(3)
    part = tc.micro_batch if tc.micro_batch > 0 else len(index)
    for start in range(0, len(index), part):
        feats, masks, labels = data.batch(index[start:start + part])
        with autocast(precision):
            out = model(feats, masks)
        loss, mse, ce = eri_loss(out, labels, tc)
        (loss * (len(labels) / len(index))).backward()
        sums += np.array([float(loss.detach()), mse, ce]) * len(labels)
    return sums


STATE_KEYS = ENGINE_STATE_KEYS


@dataclass
class FitResult:
    best_metric: float
    best_epoch: int
    epochs: int
    finished: bool
    val_predictions: np.ndarray | None
    history: list[dict]
    checkpoint: dict
    probe: dict | None = None
    precision: str = "fp32"


def _val_metrics(pred: np.ndarray, data: SequenceData) -> dict:
    from affectfuse.metrics.regression import eri_metrics

    y = data.labels.numpy()
    m = eri_metrics(y, pred, data.label_names)
    out = {"val_mse": float(np.mean((pred - y) ** 2)), "val_mean_pearson": float(m["mean_pearson"])}
    out.update({f"r_{k}": float(v) for k, v in m["pearson"].items()})
    return out


class ERITask:
    """The engine's entry for per-video regression (ERI): shuffled batches backwarded in micro-batches,
    the metric the task spec names (mean Pearson) on validation, ``best.pt`` and ``val_predictions.csv``."""

    # Optimizer steps per epoch at most (None = every batch): set by benchmarks that measure the first steps of
    # a large run (memory, step time) without waiting for a whole epoch; never by a recipe.
    max_steps: int | None = None

    def __init__(self, train: SequenceData, val: SequenceData, tc, spec: TaskSpec, meta: dict, run_dir,
                 precision: str = "fp32"):
        self.train, self.val, self.tc, self.spec, self.meta, self.run_dir = train, val, tc, spec, meta, run_dir
        self.precision = precision
        self.best: dict | None = None
        self.best_pred: np.ndarray | None = None

    def train_epoch(self, engine: Engine, epoch: int) -> dict:
        n, tc = len(self.train), self.tc
        sums = np.zeros(3)
        perm = torch.randperm(n, generator=engine.generator)
        if self.max_steps is not None:
            perm = perm[:self.max_steps * tc.batch_size]
        for start in range(0, len(perm), tc.batch_size):
            engine.optimizer.zero_grad(set_to_none=True)
            sums += backward_batch(engine.model, self.train, perm[start:start + tc.batch_size], tc, self.precision)
            engine.step()
        n = max(len(perm), 1)
        lr = engine.optimizer.param_groups[0]["lr"]  # the epoch's rate (the schedule steps after it)
        return {"lr": float(lr), "train_loss": float(sums[0] / n), "train_mse": float(sums[1] / n),
                "train_ce": float(sums[2] / n)}

    def validate(self, model: torch.nn.Module) -> Validation:
        pred = predict(model, self.val, eval_batch(self.tc))
        row = _val_metrics(pred, self.val)
        return Validation(row[f"val_{self.spec.metric}"], row, pred)

    def best_payload(self, model: torch.nn.Module, epoch: int, row: dict) -> dict:
        state = {k: v.clone() for k, v in unwrap(model).state_dict().items()}
        self.best = {**self.meta, "state_dict": state, "epoch": epoch, "metrics": row}
        return self.best

    def on_best(self, epoch: int, row: dict, pred: np.ndarray) -> None:
        self.best_pred = pred
        if self.run_dir is not None:
            _write_val_predictions(self.run_dir / "val_predictions.csv", self.val, pred, epoch)


def _meta(cfg: RunConfig, args, norm, probe, spec: TaskSpec, train: SequenceData, feature_meta,
          precision: str = "fp32") -> dict:
    """The schema's fields of an ERI checkpoint (see training.checkpoint), weights left out."""
    config = cfg.to_dict()
    meta = checkpoint_payload(
        "eri", model_name=cfg.model.name, model_args=args.to_dict(), state_dict={}, task=spec.to_dict(),
        train_config=config, input_norm=norm,
        feature_sets={k: (feature_meta or {}).get(k, {"name": k, "dim": d}) for k, d in args.input_dims.items()},
        data={"seq_len": cfg.data.seq_len, "sequence_mode": cfg.data.sequence_mode}, config=config,
        info={"precision": precision},
        **({"probe": probe} if probe else {}))
    meta["label_names"] = list(train.label_names)
    for key in ("state_dict", "epoch", "metrics"):
        meta.pop(key)
    return meta


def fit(cfg: RunConfig, train: SequenceData, val: SequenceData, run_dir: str | Path | None = None,
        feature_meta: dict | None = None, task: dict | None = None, resume: bool = False) -> FitResult:
    """Train the ERI model with the recipe in ``cfg.train``; see the module doc for the run folder."""
    from affectfuse.utils import seed_everything

    tc = cfg.train
    if train.labels is None or val.labels is None:
        raise ValueError("training and validation data need labels")
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    run_dir = Path(run_dir) if run_dir is not None else None
    seed_everything(tc.seed)
    args = model_args(cfg, train.dims(), train.labels.shape[1])
    norm = input_norm(cfg, args, train)
    modalities = list(args.input_dims)
    # one ridge fit serves the probe and the probe-started path (the model's skip), when either is used
    ridge = pooled_ridge(train, modalities, norm) if tc.probe or getattr(args, "pooled_skip", False) else None
    model, norm = build_model(cfg, args, train, norm, ridge)
    precision = resolve_precision(tc.precision)
    if precision == "bf16":
        keep_heads_in_fp32(model)
    probe = ridge_probe(train, val, modalities, norm, ridge) if tc.probe else None
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema_decay), use_buffers=True) if tc.ema else None
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, tc.step_size, tc.gamma) if tc.step_size > 0 else None
    spec = TaskSpec.from_dict(task) if task else task_from_labels("eri", "video", "regression", train.label_names)
    meta = _meta(cfg, args, norm, probe, spec, train, feature_meta, precision)
    engine = Engine(model, optimizer, EngineConfig(
        max_epochs=tc.max_epochs, patience=tc.patience, min_delta=tc.min_delta, mode=spec.mode,
        clip_norm=tc.clip_norm, ema_before_step=tc.ema_timing == "before_step", stop_after=tc.stop_after,
        progress=tc.progress, tensorboard=tc.tensorboard, meta=meta),
        scheduler=scheduler, ema=ema, generator=torch.Generator().manual_seed(tc.seed), run_dir=run_dir)
    if resume:
        engine.resume("eri")
    job = ERITask(train, val, tc, spec, meta, run_dir, precision)
    state = engine.run(job)
    best_payload, val_pred_best = job.best, job.best_pred
    if best_payload is None and run_dir is not None and (run_dir / "best.pt").is_file():
        best_payload = read_checkpoint(run_dir / "best.pt", "eri", "ERI checkpoint")
    if val_pred_best is None and best_payload is not None:
        val_pred_best = predict(model_from_checkpoint(best_payload), val, eval_batch(tc))
    result = FitResult(state["best"], state["best_epoch"], state["epoch"], state["finished"], val_pred_best,
                       state["history"], best_payload or {}, probe, precision)
    beats = _report_probe(state["best"], probe)
    if run_dir is not None:
        write_json_atomic(run_dir / "result.json", {
            "best_val_mean_pearson": state["best"], "best_epoch": state["best_epoch"], "epochs": state["epoch"],
            "finished": state["finished"], "label_names": list(train.label_names),
            "best_metrics": (best_payload or {}).get("metrics"), "probe": probe, "beats_probe": beats,
            "precision": precision})
    return result


def input_norm(cfg: RunConfig, args, train: SequenceData) -> dict | None:
    """The training split's per-modality input statistics when ``data.standardize`` (else ``None``)."""
    if not cfg.data.standardize:
        return None
    return {k: v for k, v in input_norm_stats(train).items() if k in args.input_dims}


_UNSET = object()


def build_model(cfg: RunConfig, args, train: SequenceData, norm=_UNSET, ridge: dict | None = None):
    """The registered model, behind :class:`StandardizedInputs` with the training split's statistics when
    ``data.standardize`` (``norm``: :func:`input_norm`, computed when not given); a model with a pooled skip
    starts at the ridge probe (``ridge``: :func:`pooled_ridge` with that ``norm``, fitted when not given).
    Returns (model, statistics or None)."""
    model = create_eri_model(cfg.model.name, args)
    norm = input_norm(cfg, args, train) if norm is _UNSET else norm
    if getattr(model, "skip", None) is not None:
        init_pooled_skip(model, train, list(args.input_dims), norm, ridge)
    return (StandardizedInputs(model, norm) if norm else model), norm


def _report_probe(best: float, probe: dict | None) -> bool | None:
    """Whether the model's best validation score beats the probe's; a warning when it does not."""
    if probe is None:
        return None
    beats = bool(best > probe["val_mean_pearson"])
    if not beats:
        log.warning("the model (val mean Pearson %.4f) does not beat the ridge probe on pooled features (%.4f): "
                    "check the recipe, or use the probe", best, probe["val_mean_pearson"])
    return beats


def _write_val_predictions(path: Path, val: SequenceData, pred: np.ndarray, epoch: int) -> None:
    from affectfuse.outputs.eri_csv import write_eri_predictions

    write_eri_predictions(path, val.file_ids, pred, label_names=tuple(val.label_names),
                          provenance={"split": "val", "epoch": epoch, "source": "best.pt (EMA weights)"})
