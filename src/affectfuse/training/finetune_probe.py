"""Linear probe of frozen embeddings: the baseline of fine-tuning and its head initialisation.

``head_init="probe"`` ("linear probe, then fine-tune", Kumar et al. 2022) fits a class-balanced logistic
regression on the frozen network's embeddings of the (unaugmented) training crops and starts fine-tuning
from it, so epoch 0 of fine-tuning *is* the frozen-features probe.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from affectfuse.training.finetune_model import ExpressionClassifier, FinetuneConfig, make_loader

log = logging.getLogger(__name__)


@torch.no_grad()
def embeddings(model: ExpressionClassifier, dataset, cfg: FinetuneConfig, device) -> np.ndarray:
    """(N, D) float32 embeddings of ``dataset`` (no augmentation), computed in float32."""
    model.eval()
    outs = [np.zeros((0, model.head.in_features), np.float32)]
    for x, _ in make_loader(dataset, cfg, 0, train=False):
        outs.append(model.embed(x.to(device)).float().cpu().numpy())
    return np.concatenate(outs)


def fit_probe(emb: np.ndarray, labels: np.ndarray, n_classes: int, c: float) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced logistic regression on standardised (N, D) embeddings, returned in raw-embedding
    terms: weight (C, D), bias (C,) with ``logits = emb @ weight.T + bias``; absent classes get -1e4 bias."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(emb)
    lr = LogisticRegression(C=c, class_weight="balanced", max_iter=3000).fit(scaler.transform(emb), labels)
    coef, icpt = lr.coef_, lr.intercept_
    if len(lr.classes_) == 2:  # sklearn's binary form: one row for class 1
        coef, icpt = np.vstack([-coef, coef]) / 2, np.array([-icpt[0], icpt[0]]) / 2
    weight = np.zeros((n_classes, emb.shape[1]))
    bias = np.full(n_classes, -1e4)
    w = coef / scaler.scale_
    weight[lr.classes_], bias[lr.classes_] = w, icpt - w @ scaler.mean_
    return weight.astype(np.float32), bias.astype(np.float32)


def probe_head(model: ExpressionClassifier, train_set, cfg: FinetuneConfig, device) -> None:
    """Set the head to the linear probe of the frozen network's training embeddings (``head_init="probe"``)."""
    emb = embeddings(model, CropView(train_set), cfg, device)
    weight, bias = fit_probe(emb, train_set.labels, len(model.classes), cfg.probe_c)
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(weight))
        model.head.bias.copy_(torch.from_numpy(bias))
    log.info("head initialised by a linear probe on %d frozen training embeddings", len(emb))


class CropView:
    """The same crops without augmentation (the training set as the probe sees it)."""

    def __init__(self, dataset):
        from affectfuse.training.finetune_data import build_transform

        self.dataset, self.labels = dataset, dataset.labels
        self.transform = build_transform(dataset.size, train=False)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        return self.transform(self.dataset.image(i)), int(self.labels[i])
