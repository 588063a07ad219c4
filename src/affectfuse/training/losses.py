"""Losses for classification: the focal loss (softmax form) and class weights from label frequencies.

Focal loss (Lin et al. 2017), per scored item with true class t and softmax probability p_t::

    FL = -alpha_t * (1 - p_t) ** gamma * log(p_t)

``gamma`` in [0, 5] down-weights easy items (gamma = 0 gives cross-entropy); ``alpha`` is a per-class
weight vector (C,) for class imbalance, e.g. from :func:`class_weights`. Items whose label is
``ignore_index`` (-1, "not annotated" in Aff-Wild2) contribute nothing.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WEIGHT_SCHEMES = ("none", "inverse", "inverse_sqrt", "effective")


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
               alpha: torch.Tensor | None = None, ignore_index: int = -1,
               reduction: str = "mean") -> torch.Tensor:
    """Softmax focal loss.

    Args:
        logits: (..., C) unnormalised scores.
        target: (...) int64 class indices, ``ignore_index`` where not scored.
        gamma: focusing parameter in [0, 5].
        alpha: (C,) per-class weights or None (all 1).
        reduction: ``"mean"`` (sum over scored items / their count; 0 when none is scored),
            ``"sum"`` or ``"none"`` (per item, 0 at ignored items; shape of ``target``).
    """
    if not 0.0 <= gamma <= 5.0:
        raise ValueError(f"focal loss gamma must lie in [0, 5], got {gamma}")
    n_classes = logits.shape[-1]
    flat_logits = logits.reshape(-1, n_classes)
    flat_target = target.reshape(-1)
    keep = flat_target != ignore_index
    safe_target = torch.where(keep, flat_target, torch.zeros_like(flat_target))
    log_p = F.log_softmax(flat_logits.float(), dim=-1)
    log_pt = log_p.gather(1, safe_target[:, None]).squeeze(1)  # (N,)
    pt = log_pt.exp()
    loss = -((1.0 - pt).clamp_min(0.0) ** gamma) * log_pt
    if alpha is not None:
        loss = loss * alpha.to(loss.device, loss.dtype)[safe_target]
    loss = torch.where(keep, loss, torch.zeros_like(loss))
    if reduction == "none":
        return loss.reshape(target.shape)
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / keep.sum().clamp_min(1)
    raise ValueError(f"unknown reduction {reduction!r}; valid: mean, sum, none")


class FocalLoss(nn.Module):
    """Module form of :func:`focal_loss`; ``alpha`` is kept as a buffer so it follows ``.to(device)``."""

    def __init__(self, gamma: float = 2.0, alpha=None, ignore_index: int = -1):
        super().__init__()
        if not 0.0 <= gamma <= 5.0:
            raise ValueError(f"focal loss gamma must lie in [0, 5], got {gamma}")
        self.gamma = float(gamma)
        self.ignore_index = ignore_index
        self.register_buffer("alpha", None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, target, self.gamma, self.alpha, self.ignore_index)


def class_weights(labels, n_classes: int, scheme: str = "inverse", ignore_index: int = -1,
                  beta: float = 0.999) -> np.ndarray:
    """(C,) float32 per-class weights from label frequencies, scaled so the present classes average 1.

    Schemes: ``"none"`` (all 1), ``"inverse"`` (1 / n_c), ``"inverse_sqrt"`` (1 / sqrt(n_c)),
    ``"effective"`` ((1 - beta) / (1 - beta ** n_c), Cui et al. 2019). A class absent from ``labels``
    gets weight 1 (it never occurs in the loss anyway).
    """
    if scheme not in WEIGHT_SCHEMES:
        raise ValueError(f"unknown class-weight scheme {scheme!r}; valid: {', '.join(WEIGHT_SCHEMES)}")
    labels = np.asarray(labels).reshape(-1)
    labels = labels[labels != ignore_index].astype(np.int64)
    counts = np.bincount(labels, minlength=n_classes)[:n_classes].astype(np.float64)
    present = counts > 0
    weights = np.ones(n_classes)
    if scheme == "inverse":
        weights[present] = 1.0 / counts[present]
    elif scheme == "inverse_sqrt":
        weights[present] = 1.0 / np.sqrt(counts[present])
    elif scheme == "effective":
        weights[present] = (1.0 - beta) / (1.0 - beta ** counts[present])
    if present.any():
        weights[present] /= weights[present].mean()
    return weights.astype(np.float32)
