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

import csv
import dataclasses
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from affectfuse.data.sequences import SequenceData, input_norm_stats
from affectfuse.models.eri import ERIArchitecture, create_eri_model, eri_model_args_class, parse_modality_set
from affectfuse.models.input_norm import StandardizedInputs, unwrap
from affectfuse.training.checkpoint import FORMAT, read_checkpoint, save_checkpoint, versions
from affectfuse.training.config import RunConfig
from affectfuse.training.probes import init_pooled_skip, ridge_probe
from affectfuse.training.step import apply_gradients
from affectfuse.utils import write_json_atomic, write_text_atomic

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


def backward_batch(model: torch.nn.Module, data: SequenceData, index: torch.Tensor, tc) -> np.ndarray:
    """Backward one batch's loss in parts of ``tc.micro_batch`` videos (0 = whole), each weighted by its
    share, so the gradients are the whole batch's while activations are held for one part at a time.
    Returns the batch's [loss, mse, ce] summed over videos."""
    sums = np.zeros(3)
    part = tc.micro_batch if tc.micro_batch > 0 else len(index)
    for start in range(0, len(index), part):
        feats, masks, labels = data.batch(index[start:start + part])
        loss, mse, ce = eri_loss(model(feats, masks), labels, tc)
        (loss * (len(labels) / len(index))).backward()
        sums += np.array([float(loss.detach()), mse, ce]) * len(labels)
    return sums


def early_stopping_update(state: dict, score: float, patience: int, min_delta: float) -> bool:
    """Update ``state`` after an epoch's validation ``score``; True when it is a new best (save it).

    A new best is any finite improvement; the patience counter resets only when ``score`` beats the
    best counted score (``es_best``) by more than ``min_delta`` (Lightning's EarlyStopping with
    ``mode="max"``); ``finished`` is set after ``patience`` epochs without that (0 = never).
    """
    finite = bool(np.isfinite(score))
    improved = finite and score > state["best"]
    if improved:
        state.update(best=score, best_epoch=state["epoch"])
    if finite and score > state["es_best"] + min_delta:
        state.update(es_best=score, bad=0)
    else:
        state["bad"] += 1
        if patience > 0 and state["bad"] >= patience:
            state["finished"] = True
    return improved


STATE_KEYS = ("epoch", "best", "best_epoch", "bad", "history", "finished", "es_best")


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


def _val_metrics(pred: np.ndarray, data: SequenceData) -> dict:
    from affectfuse.metrics.regression import eri_metrics

    y = data.labels.numpy()
    m = eri_metrics(y, pred, data.label_names)
    out = {"val_mse": float(np.mean((pred - y) ** 2)), "val_mean_pearson": float(m["mean_pearson"])}
    out.update({f"r_{k}": float(v) for k, v in m["pearson"].items()})
    return out


def _write_history(history: list[dict], path: Path) -> None:
    buf = io.StringIO()
    keys = list(history[0]) if history else []
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    write_text_atomic(path, buf.getvalue())


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
    model, norm = build_model(cfg, args, train)
    probe = ridge_probe(train, val, list(args.input_dims)) if tc.probe else None
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema_decay), use_buffers=True) if tc.ema else None
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, tc.step_size, tc.gamma) if tc.step_size > 0 else None
    gen = torch.Generator().manual_seed(tc.seed)
    state = {"epoch": 0, "best": -float("inf"), "best_epoch": 0, "bad": 0, "history": [], "finished": False,
             "es_best": -float("inf")}
    best_payload: dict | None = None
    val_pred_best = None
    last_path = run_dir / "last.pt" if run_dir else None
    if resume and last_path is not None and last_path.is_file():
        saved = read_checkpoint(last_path, FORMAT, "ERI resume checkpoint (last.pt)")["training"]
        model.load_state_dict(saved["model"])
        if ema is not None:
            ema.load_state_dict(saved["ema"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng_torch"])
        gen.set_state(saved["rng_generator"])
        state.update({k: saved[k] for k in STATE_KEYS if k in saved})
        if "es_best" not in saved:  # saved before min_delta existed: the two bests were one
            state["es_best"] = state["best"]
        log.info("resuming %s after epoch %d (best %.4f at epoch %d)", run_dir, state["epoch"],
                 state["best"], state["best_epoch"])
    eval_model = ema.module if ema is not None else model

    meta = {"format": FORMAT, "model": {"name": cfg.model.name, "args": args.to_dict()},
            **({"input_norm": norm} if norm else {}), **({"probe": probe} if probe else {}),
            "task": task or {}, "label_names": list(train.label_names),
            "feature_sets": {k: (feature_meta or {}).get(k, {"name": k, "dim": d})
                             for k, d in args.input_dims.items()},
            "data": {"seq_len": cfg.data.seq_len, "sequence_mode": cfg.data.sequence_mode},
            "config": cfg.to_dict(), "versions": versions()}
    writer = None
    if run_dir is not None and tc.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"), purge_step=state["epoch"] + 1)

    from tqdm.auto import tqdm

    bar = tqdm(total=tc.max_epochs, initial=state["epoch"], desc="train", unit="epoch",
               disable=not tc.progress, leave=False)
    ran = 0
    n = len(train)
    model.train()
    while not state["finished"] and state["epoch"] < tc.max_epochs:
        if tc.stop_after and ran >= tc.stop_after:
            break
        epoch = state["epoch"] + 1
        t0 = time.perf_counter()
        sums = np.zeros(3)
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, tc.batch_size):
            optimizer.zero_grad(set_to_none=True)
            sums += backward_batch(model, train, perm[start:start + tc.batch_size], tc)
            apply_gradients(model, optimizer, tc.clip_norm, ema, ema_before_step=tc.ema_timing == "before_step")
        lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step()
        pred = predict(eval_model, val, tc.batch_size)
        row = {"epoch": epoch, "lr": float(lr), "train_loss": float(sums[0] / n), "train_mse": float(sums[1] / n),
               "train_ce": float(sums[2] / n), **_val_metrics(pred, val), "seconds": time.perf_counter() - t0}
        state["history"].append(row)
        state["epoch"] = epoch
        score = row["val_mean_pearson"]
        if early_stopping_update(state, score, tc.patience, tc.min_delta):
            best_payload = {**meta, "state_dict": {k: v.clone() for k, v in unwrap(eval_model).state_dict().items()},
                            "epoch": epoch, "metrics": row}
            val_pred_best = pred
            if run_dir is not None:
                save_checkpoint(best_payload, run_dir / "best.pt")
                _write_val_predictions(run_dir / "val_predictions.csv", val, pred, epoch)
        if epoch >= tc.max_epochs:
            state["finished"] = True
        if run_dir is not None:
            _write_history(state["history"], run_dir / "metrics.csv")
            if writer is not None:
                for k, v in row.items():
                    if k != "epoch":
                        writer.add_scalar(k, v, epoch)
                writer.flush()
            training = {"model": model.state_dict(), "ema": ema.state_dict() if ema is not None else {},
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict() if scheduler is not None else {},
                        "rng_torch": torch.get_rng_state(), "rng_generator": gen.get_state(),
                        **{k: state[k] for k in STATE_KEYS}}
            save_checkpoint({**meta, "training": training}, last_path)
        ran += 1
        bar.update(1)
        bar.set_postfix(loss=f"{row['train_loss']:.4f}", val_r=f"{score:.4f}", best=f"{state['best']:.4f}")
    bar.close()
    if writer is not None:
        writer.close()
    if best_payload is None and run_dir is not None and (run_dir / "best.pt").is_file():
        best_payload = read_checkpoint(run_dir / "best.pt", FORMAT, "ERI checkpoint")
    if val_pred_best is None and best_payload is not None:
        from affectfuse.training.checkpoint import model_from_checkpoint

        val_pred_best = predict(model_from_checkpoint(best_payload), val, tc.batch_size)
    result = FitResult(state["best"], state["best_epoch"], state["epoch"], state["finished"], val_pred_best,
                       state["history"], best_payload or {}, probe)
    beats = _report_probe(state["best"], probe)
    if run_dir is not None:
        write_json_atomic(run_dir / "result.json", {
            "best_val_mean_pearson": state["best"], "best_epoch": state["best_epoch"], "epochs": state["epoch"],
            "finished": state["finished"], "label_names": list(train.label_names),
            "best_metrics": (best_payload or {}).get("metrics"), "probe": probe, "beats_probe": beats})
    return result


def build_model(cfg: RunConfig, args, train: SequenceData):
    """The registered model, behind :class:`StandardizedInputs` with the training split's statistics when
    ``data.standardize``; returns (model, statistics or None)."""
    model = create_eri_model(cfg.model.name, args)
    norm = None
    if cfg.data.standardize:
        norm = {k: v for k, v in input_norm_stats(train).items() if k in args.input_dims}
    if getattr(model, "skip", None) is not None:
        init_pooled_skip(model, train, list(args.input_dims), norm)
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
