"""Fine-tune a face extractor's network on a face-expression image dataset (the paper's AffectNet-7 step).

A run folder ``RUN`` holds::

    config.json        resolved FinetuneConfig
    split.json         train / validation indices (fold k of K, or a held-out fraction), dataset hash
    checkpoint.pt      last epoch: model, optimizer, scheduler, history (atomic; ``resume=True`` goes on)
    best.pt            the model of the epoch with the best validation macro F1
    history.csv        per epoch: train loss, validation accuracy / macro F1 / UAR, learning rate, seconds
    metrics.json       validation scores of the best epoch (accuracy, macro F1, UAR, per class, confusion)
    failures.csv       images left out (unreadable), when any
    export/<name>.pt   the extractor's state dict in its own naming (see :mod:`finetune_export`)

The network is the extractor's own ``nn.Module`` (``extractor.model``); the embedding is ``model.embed(x)``
when it has one, else ``model(x)``; a fresh linear head over the embedding gives the fine-tuned classes,
initialised from the extractor's own head where class names match (face-api ``happy`` = ``Happiness`` ...).
Inputs are uint8 crops, normalised inside :class:`ExpressionClassifier` exactly as the extractor does.
Training: AdamW (head lr x ``head_lr_mult``), linear warm-up then cosine decay, class-weighted
cross-entropy or focal loss or a class-balanced sampler. Precision: training steps run the network under
bf16 autocast on CUDA (``amp``; fp32 on CPU); the head, the loss, validation and the probe's embeddings are
always float32 (the precision policy of :mod:`affectfuse.features.face_common`).
Every epoch draws its shuffling and augmentation from ``seed`` and the epoch number, so a resumed run
gives the same weights as an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from affectfuse.training.checkpoint import read_checkpoint, save_checkpoint
from affectfuse.training.finetune_data import canonical
from affectfuse.utils import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)
FORMAT = "affectfuse.finetune/1"
HEAD_ATTRS = ("fc", "head", "classifier")


@dataclass
class FinetuneConfig:
    """Everything a run needs; saved as ``config.json`` and checked on resume.

    ``fold``: 0..folds-1 (stratified K-fold), or None to hold out ``val_fraction`` (stratified;
    0 = train on everything and keep the last epoch), unless ``val_data`` names a separate set.
    ``balance``: ``"loss"`` (class weights in the loss, scheme ``class_weights``: ``inverse``,
    ``inverse_sqrt`` or ``effective`` frequency), ``"sampler"`` (class-balanced sampling) or ``"none"``.
    ``head_init``: ``"pretrained"`` (rows of the extractor's own head where class names match, the rest
    zero) or ``"probe"`` (a class-balanced logistic regression, inverse regularisation ``probe_c`` on
    standardised embeddings, fitted on the frozen embeddings of the training crops: "linear probe, then
    fine-tune", Kumar et al. 2022). ``loss``: ``"ce"`` or ``"focal"`` (``gamma``).
    ``max_items``: stratified subset of the training set (quick runs, tests).
    ``freeze``: comma-separated parameter-name prefixes of the extractor network kept fixed
    (e.g. ``"dense0,dense1"``: partial fine-tuning, cheaper on CPU).
    ``select``: export the epoch with the best validation macro F1 (``"best"``) or the last one
    (``"last"``: no model selection on the validation set, as in cross-validation where it is the test fold).
    ``stop_after``: end this invocation after that many epochs in total, leaving a resumable run
    (time-limited cluster jobs).
    """

    model: str = "faceexpressionnet"
    data: str = ""
    val_data: str | None = None
    classes: str = "auto"
    weights: str | None = None
    random_weights: bool = False
    align: str = "mtcnn"
    crop_cache: str | None = None
    folds: int = 5
    fold: int | None = None
    val_fraction: float = 0.1
    max_items: int | None = None
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-4
    head_lr_mult: float = 10.0
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    balance: str = "loss"
    class_weights: str = "inverse"
    head_init: str = "pretrained"
    probe_c: float = 0.01
    loss: str = "ce"
    gamma: float = 2.0
    device: str = "auto"
    amp: bool = True
    workers: int = 0
    seed: int = 0
    preload: bool | None = None
    freeze: str = ""
    select: str = "best"
    stop_after: int = 0


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def extractor_classes(extractor) -> tuple[str, ...] | None:
    names = getattr(extractor, "classes", None)
    if names is None and getattr(extractor, "weights", None) is not None:
        names = extractor.weights.extra.get("classes")
    return tuple(names) if names else None


def find_head(net: nn.Module, dim: int) -> str | None:
    """Attribute name of the network's own classification head (a Linear over the embedding), if any."""
    for attr in HEAD_ATTRS:
        layer = getattr(net, attr, None)
        if isinstance(layer, nn.Linear) and layer.in_features == dim:
            return attr
    return None


class ExpressionClassifier(nn.Module):
    """uint8 crops (N, 3, S, S) -> logits (N, C) over ``classes``; ``embed`` gives (N, D).

    ``net`` is the extractor's network; normalisation ``(x / scale - mean) / std`` matches the extractor.
    """

    def __init__(self, net: nn.Module, head: nn.Linear, classes, mean, std, scale: float = 255.0):
        super().__init__()
        self.net, self.head, self.classes = net, head, tuple(classes)
        self.scale = float(scale)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / self.scale - self.mean) / self.std

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalise(x)
        return self.net.embed(x) if hasattr(self.net, "embed") else self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb = self.embed(x).float()
        with torch.autocast(emb.device.type, enabled=False):  # the head in float32 even under autocast
            return self.head(emb)


def build_classifier(extractor, classes) -> ExpressionClassifier:
    """The extractor's network + a head over ``classes`` (rows copied from its own head where names match)."""
    net = extractor.model
    with torch.no_grad():
        probe = net.embed(torch.zeros(1, 3, extractor.input.size, extractor.input.size,
                                      device=next(net.parameters()).device)) if hasattr(net, "embed") else None
    dim = int(probe.shape[1]) if probe is not None else int(extractor.dim)
    head = nn.Linear(dim, len(classes))
    own = find_head(net, dim)
    own_classes = extractor_classes(extractor)
    if own is not None and own_classes and len(own_classes) == getattr(net, own).out_features:
        layer = getattr(net, own)
        index = {canonical(c).lower(): i for i, c in enumerate(own_classes)}
        with torch.no_grad():
            matched = [(j, index[canonical(c).lower()]) for j, c in enumerate(classes) if canonical(c).lower() in index]
            head.weight.zero_()
            head.bias.fill_(float(layer.bias.mean()))
            for j, i in matched:
                head.weight[j] = layer.weight[i]
                head.bias[j] = layer.bias[i]
        log.info("head initialised from %s.%s for %d of %d classes", extractor.name, own, len(matched), len(classes))
    return ExpressionClassifier(net, head, classes, extractor.mean, extractor.std, getattr(extractor, "scale", 255.0))


# ---------------------------------------------------------------- training pieces

def make_loss(cfg: FinetuneConfig, train_labels: np.ndarray, n_classes: int, device):
    from affectfuse.training.losses import class_weights

    weights = None
    if cfg.balance == "loss":
        weights = torch.from_numpy(class_weights(train_labels, n_classes, cfg.class_weights)).to(device)
    elif cfg.balance not in ("sampler", "none"):
        raise ValueError(f"balance must be loss, sampler or none, got {cfg.balance!r}")
    if cfg.loss == "ce":
        return lambda logits, y: F.cross_entropy(logits, y, weight=weights, label_smoothing=cfg.label_smoothing)
    if cfg.loss == "focal":
        from affectfuse.training.losses import focal_loss

        return lambda logits, y: focal_loss(logits, y, gamma=cfg.gamma, alpha=weights)
    raise ValueError(f"loss must be ce or focal, got {cfg.loss!r}")


def apply_freeze(model: ExpressionClassifier, freeze: str) -> int:
    """Stop gradients for network parameters whose name starts with one of the comma-separated prefixes."""
    prefixes = tuple(p.strip() for p in freeze.split(",") if p.strip())
    if not prefixes:
        return 0
    names = [n for n, _ in model.net.named_parameters()]
    for prefix in prefixes:
        if not any(n.startswith(prefix) for n in names):
            raise ValueError(f"--freeze {prefix!r} matches no parameter of the network (e.g. {names[:3]})")
    frozen = 0
    for name, param in model.net.named_parameters():
        if name.startswith(prefixes):
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def make_optimizer(model: ExpressionClassifier, cfg: FinetuneConfig, steps_per_epoch: int):
    head = list(model.head.parameters())
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters() if id(p) not in head_ids and p.requires_grad]
    opt = torch.optim.AdamW([{"params": body, "lr": cfg.lr}, {"params": head, "lr": cfg.lr * cfg.head_lr_mult}],
                            weight_decay=cfg.weight_decay)
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = min(total - 1, int(round(cfg.warmup_epochs * steps_per_epoch)))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def make_loader(dataset, cfg: FinetuneConfig, epoch: int, train: bool, labels=None):
    from torch.utils.data import DataLoader, WeightedRandomSampler

    g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    kwargs = dict(batch_size=cfg.batch_size, num_workers=cfg.workers, generator=g)
    if not train:
        return DataLoader(dataset, shuffle=False, **kwargs)
    if cfg.balance == "sampler":
        counts = np.bincount(labels)
        w = 1.0 / counts[labels]
        sampler = WeightedRandomSampler(torch.as_tensor(w, dtype=torch.double), len(labels), generator=g)
        return DataLoader(dataset, sampler=sampler, drop_last=len(labels) > cfg.batch_size, **kwargs)
    return DataLoader(dataset, shuffle=True, drop_last=len(labels) > cfg.batch_size, **kwargs)


def autocast(device: torch.device, amp: bool):
    """bf16 autocast on CUDA when ``amp`` (training steps only); plain fp32 elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


@torch.no_grad()
def predict_logits(model: ExpressionClassifier, dataset, cfg: FinetuneConfig, device) -> np.ndarray:
    """(N, C) float32 logits over ``dataset`` (no augmentation)."""
    model.eval()
    outs = [np.zeros((0, len(model.classes)), np.float32)]
    for x, _ in make_loader(dataset, cfg, 0, train=False):  # float32: validation scores are not bf16's
        outs.append(model(x.to(device)).float().cpu().numpy())
    return np.concatenate(outs)


def evaluate(model, dataset, cfg, device) -> dict:
    """Accuracy, macro F1 (all classes count), UAR, per class and confusion on ``dataset``."""
    from affectfuse.metrics.classification import classification_scores

    pred = predict_logits(model, dataset, cfg, device).argmax(1)
    return classification_scores(dataset.labels, pred, n_classes=len(model.classes), class_names=model.classes)


def train_epoch(model, loader, loss_fn, opt, sched, device, amp: bool) -> float:
    model.train()
    total, n = 0.0, 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device)
        with autocast(device, amp):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += float(loss.detach()) * len(y)
        n += len(y)
    return total / max(n, 1)


# ---------------------------------------------------------------- checkpoints

def load_checkpoint(path: Path) -> dict:
    return read_checkpoint(path, FORMAT, "fine-tuning checkpoint")


def write_history(path: Path, history: list[dict]) -> None:
    if not history:
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    write_text_atomic(path, buf.getvalue())


def fit(model: ExpressionClassifier, train_set, val_set, cfg: FinetuneConfig, run: Path, resume: bool = False,
        progress: bool = False) -> dict:
    """Train ``model`` in place for ``cfg.epochs`` epochs, checkpointing every epoch into ``run``.

    Returns ``{"best_epoch", "best": scores, "history"}``; ``model`` ends holding the best weights
    (the last ones when there is no validation set).
    """
    device = pick_device(cfg.device)
    model.to(device)
    apply_freeze(model, cfg.freeze)
    loss_fn = make_loss(cfg, train_set.labels, len(model.classes), device)
    steps = len(make_loader(train_set, cfg, 0, train=True, labels=train_set.labels))
    opt, sched = make_optimizer(model, cfg, steps)
    history, start, best_f1, best_epoch = [], 1, -1.0, 0
    ckpt_path, best_path = run / "checkpoint.pt", run / "best.pt"
    if resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        history, best_f1, best_epoch = ckpt["history"], ckpt["best_f1"], ckpt["best_epoch"]
        start = ckpt["epoch"] + 1
        log.info("%s: resuming after epoch %d", run, ckpt["epoch"])
    if cfg.select not in ("best", "last"):
        raise ValueError(f"select must be best or last, got {cfg.select!r}")
    end = min(cfg.epochs, cfg.stop_after) if cfg.stop_after else cfg.epochs
    if start == 1 and cfg.head_init == "probe":
        from affectfuse.training.finetune_probe import probe_head

        probe_head(model, train_set, cfg, device)
    elif cfg.head_init not in ("pretrained", "probe"):
        raise ValueError(f"head_init must be pretrained or probe, got {cfg.head_init!r}")
    for epoch in range(start, end + 1):
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # augmentation draws
        loader = make_loader(train_set, cfg, epoch, train=True, labels=train_set.labels)
        if progress:
            from tqdm import tqdm

            loader = tqdm(loader, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False)
        loss = train_epoch(model, loader, loss_fn, opt, sched, device, cfg.amp)
        row = {"epoch": epoch, "train_loss": round(loss, 6), "lr": sched.get_last_lr()[0]}
        if len(val_set):
            scores = evaluate(model, val_set, cfg, device)
            row.update(val_accuracy=round(scores["accuracy"], 6), val_macro_f1=round(scores["macro_f1"], 6),
                       val_uar=round(scores["uar"], 6))
            improved = scores["macro_f1"] > best_f1 or (cfg.select == "last")
        else:
            scores, improved = None, True
        row["seconds"] = round(time.perf_counter() - t0, 2)
        history.append(row)
        if improved:
            best_f1, best_epoch = (scores["macro_f1"] if scores else 0.0), epoch
            save_checkpoint({"format": FORMAT, "epoch": epoch, "model": model.state_dict()}, best_path)
            if scores:
                write_json_atomic(run / "metrics.json", {"epoch": epoch, "split": "validation", **scores})
        save_checkpoint({"format": FORMAT, "epoch": epoch, "model": model.state_dict(),
                           "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "history": history,
                           "best_f1": best_f1, "best_epoch": best_epoch, "config": asdict(cfg)}, ckpt_path)
        write_history(run / "history.csv", history)
        log.info("epoch %d: %s", epoch, row)
    if best_path.exists():
        model.load_state_dict(load_checkpoint(best_path)["model"])
    best = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else None
    return {"best_epoch": best_epoch, "best": best, "history": history}
