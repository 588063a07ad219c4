"""Item-level probe of the EXPR frame model (``expr probe``, kept as a deprecated alias of ``classify cv``):
k-fold cross-validation of labelled items (images, clips) with the frame transformer (item probability =
mean of its frame probabilities) or a logistic regression on mean-pooled features.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from affectfuse.data.affwild2 import ExprVideo
from affectfuse.training.expr import ExprTrainConfig, item_probabilities, predict_videos, train_expr


def pooled_features(items: list[ExprVideo]) -> np.ndarray:
    """(I, D) mean feature row of each item over its face frames (zeros when it has none)."""
    return np.stack([it.features[it.valid].mean(axis=0) if it.valid.any() else np.zeros(it.features.shape[1],
                     np.float32) for it in items])


def _fit_predict_logreg(train: list[ExprVideo], test: list[ExprVideo], n_classes: int, seed: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.array([it.labels[0] for it in train])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, class_weight="balanced",
                                                             C=0.5, random_state=seed))
    clf.fit(pooled_features(train), y)
    probs = np.zeros((len(test), n_classes), np.float32)
    probs[:, clf.classes_] = clf.predict_proba(pooled_features(test))
    return probs


def _fit_predict_transformer(train, test, config: ExprTrainConfig, class_names, groups, seed) -> np.ndarray:
    from dataclasses import replace

    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    y = np.array([it.labels[0] for it in train])
    index = np.arange(len(train))
    if groups is not None:  # inner validation split (early stopping) by group, never by item
        fit_idx, val_idx = next(GroupShuffleSplit(1, test_size=0.15, random_state=seed).split(index, y, groups))
    else:
        strat = y if np.bincount(y).min(initial=2) >= 2 else None
        fit_idx, val_idx = train_test_split(index, test_size=0.15, random_state=seed, stratify=strat)
    longest = max(it.n_frames for it in train + test)
    window = min(config.window, longest)
    cfg = replace(config, window=window, stride=max(1, min(config.stride, window)),
                  predict_stride=max(1, min(config.predict_stride, window)), seed=seed)
    run = train_expr([train[i] for i in fit_idx], [train[i] for i in val_idx], cfg, class_names=class_names)
    frame_probs = predict_videos(run.model, test, cfg.window, cfg.predict_stride, device=cfg.device)
    return item_probabilities(frame_probs, test)


def cross_validate_items(items: list[ExprVideo], class_names, folds: int = 5, groups=None,
                         classifier: str = "transformer", config: ExprTrainConfig | None = None,
                         seed: int = 0) -> dict:
    """k-fold probe of labelled items: stratified (``StratifiedKFold``) or grouped by subject/speaker
    (``StratifiedGroupKFold``). ``classifier``: ``"transformer"`` (the EXPR frame model with focal loss,
    early-stopped on 15 % of each training fold) or ``"logreg"`` (linear probe on mean-pooled features).

    Returns {"scores": pooled out-of-fold scores, "folds": per-fold scores, "probabilities": (I, C)}.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    from affectfuse.metrics.classification import classification_scores

    if classifier not in ("transformer", "logreg"):
        raise ValueError(f"unknown classifier {classifier!r}; valid: transformer, logreg")
    y = np.array([it.labels[0] for it in items])
    if (y < 0).any():
        raise ValueError(f"{int((y < 0).sum())} item(s) without a label; a probe needs labelled items")
    config = config or ExprTrainConfig()
    if groups is not None:
        groups = np.asarray(groups)
        splits = StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(y, y, groups)
    else:
        splits = StratifiedKFold(folds, shuffle=True, random_state=seed).split(y, y)
    probs = np.zeros((len(items), len(class_names)), np.float32)
    fold_scores = []
    start = time.perf_counter()
    for k, (tr, te) in enumerate(splits):
        train, test = [items[i] for i in tr], [items[i] for i in te]
        if classifier == "logreg":
            p = _fit_predict_logreg(train, test, len(class_names), seed + k)
        else:
            p = _fit_predict_transformer(train, test, config, class_names,
                                         None if groups is None else groups[tr], seed + k)
        probs[te] = p
        fold_scores.append(classification_scores(y[te], p.argmax(1), len(class_names), class_names))
        spent = time.perf_counter() - start
        print(f"probe {classifier}: fold {k + 1}/{folds} macro F1 {fold_scores[-1]['macro_f1']:.4f}, "
              f"{spent:.0f} s elapsed, ETA {spent / (k + 1) * (folds - k - 1):.0f} s", file=sys.stderr, flush=True)
    scores = classification_scores(y, probs.argmax(1), len(class_names), class_names)
    return {"scores": scores, "folds": fold_scores, "probabilities": probs}
