"""The simplest baseline on the same features, fitted inside every training run.

ERI: ridge regression on pooled statistics (per-video mean and std over the valid rows of each modality,
standardised with the training split's statistics), the ridge penalty chosen by efficient leave-one-out
cross-validation on the training split (``RidgeCV``), predictions clipped to the label range [0, 1].
A learned model that does not beat this on validation is reported as such.
"""

from __future__ import annotations

import numpy as np

from affectfuse.data.sequences import SequenceData, pooled_statistics

RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-1, 5, 13))
LOGIT_CLIP = 0.02   # labels are clipped to [0.02, 0.98] before the logit (a label of 1 has no finite logit)


def ridge_probe(train: SequenceData, val: SequenceData, modalities: list[str], norm: dict | None = None) -> dict:
    """Fit the ridge probe on ``train`` and score it on ``val`` (mean Pearson over the label columns).

    Returns {"kind", "pooling", "modalities", "alpha", "val_mean_pearson", "per_emotion": {name: r}}.
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import StandardScaler

    from affectfuse.metrics.regression import eri_metrics

    x_train = pooled_statistics(train, modalities, norm)
    x_val = pooled_statistics(val, modalities, norm)
    scaler = StandardScaler().fit(x_train)
    ridge = RidgeCV(alphas=RIDGE_ALPHAS).fit(scaler.transform(x_train), train.labels.numpy())
    pred = np.clip(ridge.predict(scaler.transform(x_val)), 0.0, 1.0)
    m = eri_metrics(val.labels.numpy(), pred, val.label_names)
    return {"kind": "ridge", "pooling": "mean+std over valid rows", "modalities": list(modalities),
            "alpha": float(ridge.alpha_), "val_mean_pearson": float(m["mean_pearson"]),
            "per_emotion": {k: float(v) for k, v in m["pearson"].items()}}


def init_pooled_skip(model, train: SequenceData, modalities: list[str], norm: dict | None = None) -> float:
    """Start ``model.skip`` (Linear on pooled statistics -> intensity logits) at a ridge fit of the label
    logits, and shrink the network's intensity head to a tenth (bias 0), so the untrained model predicts
    about what the probe does, gradients reach the network from the first step, and training adds what
    the probe misses. The pooled statistics are those the model computes (after ``norm``);
    their standardisation is folded into the weights. Returns the chosen ridge penalty.
    """
    import torch
    from sklearn.linear_model import RidgeCV

    x = pooled_statistics(train, modalities, norm)                        # (N, P)
    y = np.clip(train.labels.numpy(), LOGIT_CLIP, 1 - LOGIT_CLIP)
    mu, sd = x.mean(0), x.std(0)
    sd = np.where(sd > 1e-6 * np.abs(mu) + 1e-12, sd, 1.0)
    ridge = RidgeCV(alphas=RIDGE_ALPHAS).fit((x - mu) / sd, np.log(y / (1 - y)))
    weight = ridge.coef_ / sd                                             # (K, P)
    bias = ridge.intercept_ - weight @ mu                                 # (K,)
    with torch.no_grad():
        model.skip.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        model.skip.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        model.intensity_head.weight.mul_(0.1)
        model.intensity_head.bias.zero_()
    return float(ridge.alpha_)
