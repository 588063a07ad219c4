"""Focal loss equals its formula, equals cross-entropy at gamma 0, and class weights follow frequencies."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from affectfuse.training.losses import FocalLoss, class_weights, focal_loss


def _data(seed=0, n=50, c=8):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g) * 3
    target = torch.randint(0, c, (n,), generator=g)
    target[::7] = -1
    return logits, target


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
def test_focal_equals_formula(gamma):
    logits, target = _data()
    alpha = torch.linspace(0.2, 2.0, 8)
    keep = target != -1
    p = torch.softmax(logits.double(), dim=-1)[keep, target[keep]]
    expected = (-alpha.double()[target[keep]] * (1 - p) ** gamma * torch.log(p)).mean()
    got = focal_loss(logits, target, gamma=gamma, alpha=alpha)
    assert torch.allclose(got.double(), expected, rtol=1e-5, atol=1e-7)
    per_item = focal_loss(logits, target, gamma=gamma, alpha=alpha, reduction="none")
    assert per_item.shape == target.shape and (per_item[~keep] == 0).all()


def test_gamma_zero_is_cross_entropy():
    logits, target = _data(1)
    ce = F.cross_entropy(logits, target, ignore_index=-1)
    assert torch.allclose(FocalLoss(gamma=0.0)(logits, target), ce, atol=1e-6)
    w = torch.rand(8) + 0.1
    ce_w_sum = F.cross_entropy(logits, target, weight=w, ignore_index=-1, reduction="sum")
    assert torch.allclose(focal_loss(logits, target, 0.0, w, reduction="sum"), ce_w_sum, atol=1e-5)


def test_focal_down_weights_easy_items_and_works_on_sequences():
    logits = torch.tensor([[8.0, 0.0], [0.2, 0.0]])  # easy, hard (both true class 0)
    target = torch.zeros(2, dtype=torch.long)
    ce = focal_loss(logits, target, 0.0, reduction="none")
    fl = focal_loss(logits, target, 2.0, reduction="none")
    assert (fl < ce).all() and (fl[0] / ce[0]) < (fl[1] / ce[1])
    seq_logits, seq_target = torch.randn(3, 5, 8, requires_grad=True), torch.randint(-1, 8, (3, 5))
    focal_loss(seq_logits, seq_target).backward()
    assert torch.isfinite(seq_logits.grad).all()
    assert focal_loss(seq_logits, torch.full((3, 5), -1)).item() == 0.0


def test_gamma_out_of_range():
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=6.0)


def test_class_weights_from_frequencies():
    labels = np.array([0] * 80 + [1] * 20 + [-1] * 50)
    w = class_weights(labels, 3, "inverse")
    assert w[0] < w[1] and np.isclose(w[:2].mean(), 1.0) and w[2] == 1.0
    assert np.isclose(w[1] / w[0], 4.0)
    assert np.isclose(class_weights(labels, 3, "inverse_sqrt")[1] / class_weights(labels, 3, "inverse_sqrt")[0], 2.0)
    assert np.allclose(class_weights(labels, 3, "none"), 1.0)
    with pytest.raises(ValueError, match="valid"):
        class_weights(labels, 3, "bogus")
