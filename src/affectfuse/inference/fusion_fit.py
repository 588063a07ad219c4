"""Choosing the face + voice fusion rule on data: how people's audio-visual judgements combine their face-only
and voice-only judgements of the same clip.

CREMA-D had every clip rated three ways by different raters (voice only, face only, audio-visual; about 9-10
votes each over Anger, Disgust, Fear, Happiness, Neutral, Sadness). For each clip the face-only and voice-only
vote shares are the two "experts"; a rule pools them into one distribution, scored by how well it predicts
the audio-visual votes. Rules (:data:`RULES`; C classes, ``pf``, ``pv`` (N, C)):

- ``"linear"``: weighted mean ``w pf + (1 - w) pv``, ``w`` in [0, 1];
- ``"geometric"``: log-linear pool with weights summing to 1, ``p ~ pf^w pv^(1 - w)`` (renormalised);
- ``"loglinear"``: ``p ~ pf^a pv^b``, ``a, b`` in [0, 4] (``a = b = 1``: the plain product of experts; a sum
  above 1 makes the pooled distribution sharper than either input).

Votes become distributions with ``alpha`` pseudo-votes per class (``(n + alpha) / (N + C alpha)``; a product
cannot take zeros). Scores: the mean per-vote cross-entropy of the audio-visual votes (nats; lower is better),
the share of clips whose pooled argmax is the audio-visual majority, and the share whose argmax is the emotion
the actor was asked to show. Parameters are fitted by maximum likelihood (scipy L-BFGS-B) on the training folds
and scored on held-out actors (:func:`cross_validate`: no actor in both).

Letters: N clips, C classes, K parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from affectfuse.inference.fusion import pool

RULES = ("linear", "geometric", "loglinear")
BOUNDS = {"linear": [(0.0, 1.0)], "geometric": [(0.0, 1.0)], "loglinear": [(0.0, 4.0), (0.0, 4.0)]}


def vote_shares(counts: np.ndarray, alpha: float) -> np.ndarray:
    """(N, C) vote counts -> (N, C) distributions with ``alpha`` pseudo-votes per class (rows sum to 1)."""
    counts = np.asarray(counts, np.float64)
    if alpha < 0 or (alpha == 0 and (counts.sum(1) == 0).any()):
        raise ValueError(f"alpha must be >= 0 (> 0 when a clip has no votes), got {alpha}")
    return (counts + alpha) / (counts.sum(1, keepdims=True) + counts.shape[1] * alpha)


def cross_entropy(p: np.ndarray, counts: np.ndarray) -> float:
    """Mean per-vote cross-entropy (nats) of (N, C) vote ``counts`` under (N, C) distributions ``p``."""
    counts = np.asarray(counts, np.float64)
    return float(-(counts * np.log(np.maximum(p, 1e-300))).sum() / counts.sum())


def fit(pf: np.ndarray, pv: np.ndarray, counts: np.ndarray, rule: str) -> np.ndarray:
    """(K,) parameters of ``rule`` minimising :func:`cross_entropy` of ``counts`` (N, C) on these clips."""
    from scipy.optimize import minimize

    bounds = BOUNDS[rule]
    best = None
    for start in ([0.5] * len(bounds), [0.8] * len(bounds), [0.2] * len(bounds)):  # a few starts, bounded
        res = minimize(lambda x: cross_entropy(pool(pf, pv, rule, x), counts), np.asarray(start, np.float64),
                       method="L-BFGS-B", bounds=bounds)
        if best is None or res.fun < best.fun:
            best = res
    return np.asarray(best.x, np.float64)


@dataclass
class RuleScore:
    """One rule's held-out scores (means over folds weighted by clips) and its parameters fitted on all clips."""

    rule: str
    alpha: float
    cross_entropy: float
    agrees_av: float
    label_accuracy: float
    params: tuple[float, ...]
    fold_params: list[tuple[float, ...]]


def group_folds(groups: np.ndarray, k: int) -> list[np.ndarray]:
    """``k`` held-out masks (N,) over whole groups (actors), groups dealt in sorted order round-robin."""
    ids = np.unique(np.asarray(groups))
    if len(ids) < k:
        raise ValueError(f"{len(ids)} groups cannot make {k} folds")
    return [np.isin(groups, ids[i::k]) for i in range(k)]


def cross_validate(face: np.ndarray, voice: np.ndarray, av: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                   rule: str, alpha: float, k: int = 10, fixed=None) -> RuleScore:
    """Score ``rule`` on held-out groups: fit on the other folds (``fixed``: no fitting, these parameters).

    Args:
        face, voice, av: (N, C) vote counts of the face-only, voice-only and audio-visual ratings.
        labels: (N,) int class the actor was asked to show; groups: (N,) actor ids.
    """
    pf, pv = vote_shares(face, alpha), vote_shares(voice, alpha)
    top_av = np.argmax(av, axis=1)  # ties go to the first class, the same for every rule
    ce = agree = acc = 0.0
    fold_params = []
    for held in group_folds(groups, k):
        params = np.asarray(fixed, np.float64) if fixed is not None else fit(pf[~held], pv[~held], av[~held], rule)
        fold_params.append(tuple(round(float(x), 4) for x in params))
        p = pool(pf[held], pv[held], rule, params)
        ce += cross_entropy(p, av[held]) * av[held].sum()
        agree += (np.argmax(p, 1) == top_av[held]).sum()
        acc += (np.argmax(p, 1) == labels[held]).sum()
    params = np.asarray(fixed, np.float64) if fixed is not None else fit(pf, pv, av, rule)
    return RuleScore(rule, alpha, ce / av.sum(), agree / len(av), acc / len(av),
                     tuple(round(float(x), 4) for x in params), fold_params)


CREMA_CLASSES = ("Anger", "Disgust", "Fear", "Happiness", "Neutral", "Sadness")  # table columns A D F H N S
CREMA_CODES = {"ANG": 0, "DIS": 1, "FEA": 2, "HAP": 3, "NEU": 4, "SAD": 5}


@dataclass
class VoteTable:
    """Per clip (N): face-only, voice-only and audio-visual vote counts (N, 6) over :data:`CREMA_CLASSES`, the
    acted emotion (N,) int, the actor (N,) and the clip names (N,)."""

    face: np.ndarray
    voice: np.ndarray
    av: np.ndarray
    labels: np.ndarray
    actors: np.ndarray
    clips: np.ndarray


def read_crema_votes(path) -> VoteTable:
    """CREMA-D ``tabulatedVotes.csv`` -> :class:`VoteTable` (row id's first digit: 1 voice, 2 face, 3 both).

    Raises ValueError naming the file when a column is missing or a clip lacks one of the three ratings."""
    import csv
    from pathlib import Path

    path = Path(path)
    rows: dict[str, dict[str, np.ndarray]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        need = {"A", "D", "F", "H", "N", "S", "fileName"}
        if not need <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}: not a CREMA-D tabulatedVotes.csv (needs columns {sorted(need)})")
        first = (reader.fieldnames or [""])[0]
        for row in reader:
            kind = {"1": "voice", "2": "face", "3": "av"}.get(str(row[first])[:1])
            if kind is not None:
                rows.setdefault(row["fileName"], {})[kind] = np.array([float(row[c]) for c in "ADFHNS"])
    clips = sorted(c for c, r in rows.items() if len(r) == 3)
    if len(clips) != len(rows) or not clips:
        raise ValueError(f"{path}: {len(rows) - len(clips)} clips lack a voice, face or audio-visual rating")
    take = {k: np.stack([rows[c][k] for c in clips]) for k in ("face", "voice", "av")}
    labels = np.array([CREMA_CODES[c.split("_")[2]] for c in clips])
    return VoteTable(take["face"], take["voice"], take["av"], labels, np.array([c.split("_")[0] for c in clips]),
                     np.array(clips))


def shipped_weights(params) -> tuple[float, float]:
    """The (face, voice) exponents predict uses, from a ``loglinear`` fit's ``(a, b)``: ``(a, b) / (a + b)``,
    rounded to 2 decimals.

    Only the ratio carries over to a model's probabilities: the sum ``a + b`` also undoes the smoothing of
    ~10 votes (it grows with ``alpha``), which a network's softmax output does not have."""
    a, b = params
    return round(a / (a + b), 2), round(b / (a + b), 2)
