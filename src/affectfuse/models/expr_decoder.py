"""A hidden Markov decoder over per-frame class posteriors: label stickiness learned from training labels.

The per-frame model gives ``p(class | frame)`` (N, C). Expressions last: a frame's class is very likely the
one of the frame before. The decoder treats the classes as the hidden states of a Markov chain whose
transition matrix comes from the training labels -- per class, the chance to stay is ``1 - 1 / mean run
length`` (so durations depend on the class), and where a run ends, the next class follows the counted
class-to-class changes -- and the frame posteriors as emissions, flattened by an exponent ``scale`` in (0, 1]
(neighbouring frames are not independent evidence, so each counts less). Forward-backward gives each frame's
marginal posterior over the whole video: evidence is integrated over a span that adapts to the data,
not a fixed window. ``scale`` and a multiplier of the run lengths are chosen on validation
(:mod:`affectfuse.training.temporal`); the transition matrix is stored with the model.

Letters: B sequences, N frames, C classes.
"""

from __future__ import annotations

import numpy as np

MIN_RUN = 1.5  # frames: a run shorter than this would make "stay" less likely than "leave"
MAX_BATCH_VALUES = 8_000_000  # float64 values per array in one batched pass (64 MB)


def label_statistics(labels: list[np.ndarray], n_classes: int) -> dict:
    """Run statistics of per-video label sequences (-1 = not annotated, which ends a run).

    Returns {"mean_run": (C,) mean run length in frames (classes never seen: the mean over the others, or 30),
    "changes": (C, C) counted changes from class i to class j between neighbouring annotated frames, plus one
    (so every change stays possible), zero diagonal}.
    """
    lengths: list[list[int]] = [[] for _ in range(n_classes)]
    changes = np.ones((n_classes, n_classes))
    np.fill_diagonal(changes, 0.0)
    for y in labels:
        y = np.asarray(y)
        if len(y) == 0:
            continue
        cuts = np.flatnonzero(np.diff(y)) + 1
        for start, end in zip(np.r_[0, cuts], np.r_[cuts, len(y)]):
            if 0 <= y[start] < n_classes:
                lengths[y[start]].append(end - start)
        a, b = y[:-1], y[1:]
        moved = (a >= 0) & (b >= 0) & (a != b)
        np.add.at(changes, (a[moved], b[moved]), 1.0)
    seen = [np.mean(v) for v in lengths if v]
    fallback = float(np.mean(seen)) if seen else 30.0
    mean_run = np.array([np.mean(v) if v else fallback for v in lengths], dtype=np.float64)
    return {"mean_run": mean_run, "changes": changes}


def transition_matrix(stats: dict, run_scale: float = 1.0) -> np.ndarray:
    """(C, C) row-stochastic transitions: stay with ``1 - 1 / (run_scale * mean_run)``, else move as counted."""
    runs = np.maximum(np.asarray(stats["mean_run"], dtype=np.float64) * run_scale, MIN_RUN)
    stay = 1.0 - 1.0 / runs
    changes = np.asarray(stats["changes"], dtype=np.float64)
    move = changes / np.maximum(changes.sum(axis=1, keepdims=True), 1e-12)
    out = move * (1.0 - stay)[:, None]
    out[np.arange(len(stay)), np.arange(len(stay))] = stay
    return out


def forward_backward(probs: list[np.ndarray], transitions: list[np.ndarray], scales: list[float]) -> list[np.ndarray]:
    """Marginal class posteriors of every (decoder, sequence) pair.

    Args:
        probs: per sequence (N_i, C) frame posteriors (rows need not be normalised; zeros are floored).
        transitions: per decoder a (C, C) row-stochastic matrix.
        scales: per decoder the emission exponent (1 = the posteriors as they are).

    Returns (N_i, C) float32 marginals, decoder-major: ``out[g * len(probs) + i]``. The start state is uniform
    (the frame posteriors come from a class-balanced model). Decoders run batched in groups of a bounded size.
    """
    if not probs:
        return []
    frames = len(probs) * max(len(p) for p in probs) + 1  # padded
    group = max(1, int(MAX_BATCH_VALUES // (frames * probs[0].shape[1])))
    out: list[np.ndarray] = []
    for g in range(0, len(transitions), group):
        out += _forward_backward(probs, transitions[g:g + group], scales[g:g + group])
    return out


def _forward_backward(probs, transitions, scales) -> list[np.ndarray]:
    """One batched pass over sequences x decoders (padding beyond a sequence's end has emission 1, which
    leaves its marginals unchanged)."""
    n_seq, n_dec = len(probs), len(transitions)
    lengths = np.array([len(p) for p in probs])
    n_max, n_classes = int(lengths.max()), probs[0].shape[1]
    base = np.ones((n_seq, n_max, n_classes))
    for i, p in enumerate(probs):
        base[i, :len(p)] = np.clip(p, 1e-6, None)
    emis = np.concatenate([base ** s for s in scales])                        # (G*B, N, C)
    trans = np.repeat(np.stack(transitions), n_seq, axis=0)                  # (G*B, C, C)
    alpha = np.empty_like(emis)
    a = emis[:, 0] / n_classes
    alpha[:, 0] = a / a.sum(1, keepdims=True)
    for t in range(1, n_max):
        a = np.einsum("bi,bij->bj", alpha[:, t - 1], trans) * emis[:, t]
        alpha[:, t] = a / a.sum(1, keepdims=True)
    beta = np.ones_like(emis)
    for t in range(n_max - 2, -1, -1):
        b = np.einsum("bij,bj->bi", trans, emis[:, t + 1] * beta[:, t + 1])
        beta[:, t] = b / b.sum(1, keepdims=True)
    post = alpha * beta
    post /= post.sum(2, keepdims=True)
    return [post[g * n_seq + i, :lengths[i]].astype(np.float32) for g in range(n_dec) for i in range(n_seq)]


def decode(probs: np.ndarray, transitions, scale: float) -> np.ndarray:
    """(N, C) marginal posteriors of one sequence's (N, C) frame posteriors under one decoder."""
    if len(probs) == 0:
        return np.asarray(probs, dtype=np.float32)
    return forward_backward([np.asarray(probs)], [np.asarray(transitions, dtype=np.float64)], [float(scale)])[0]
