"""The fine-tuning model and its pieces: config, the extractor network with a class head, loss, optimizer,
loaders, evaluation (see :mod:`affectfuse.training.finetune` for the run and its folder).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from affectfuse.training.finetune_data import canonical
from affectfuse.training.losses import WEIGHT_SCHEMES
from affectfuse.training.resolver import check_choice
from affectfuse.training.resolver import from_dict as resolve_from_dict

log = logging.getLogger(__name__)
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
    (time-limited cluster jobs). ``clip_norm``: gradient clipping max-norm (0 = off), as ERI and EXPR.
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
    clip_norm: float = 0.0  # off: clipping cost fold 0 of the faces 0.03 macro F1 (docs/finetune.md)

    def validate(self) -> None:
        """Choices of the string fields (a ConfigError names the field)."""
        for key, valid in (("balance", ("loss", "sampler", "none")), ("loss", ("ce", "focal")),
                           ("head_init", ("pretrained", "probe")), ("select", ("best", "last")),
                           ("class_weights", WEIGHT_SCHEMES)):
            check_choice(getattr(self, key), valid, key, "fine-tuning settings")

    @classmethod
    def from_dict(cls, d: dict, source: str = "fine-tuning settings") -> "FinetuneConfig":
        return resolve_from_dict(cls, d, source)


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


