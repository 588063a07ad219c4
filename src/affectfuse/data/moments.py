"""Feature statistics shared by every standardisation and probe: running mean/std over rows, and the rule
that keeps a constant column from dividing by zero."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch


def usable_std(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``std`` with constant columns (std <= 1e-6 |mean|, float32 rounding noise) set to 1, so that
    ``(x - mean) / std`` maps them to 0, not NaN or amplified noise."""
    return np.where(std > 1e-6 * np.abs(mean) + 1e-12, std, 1.0)


def row_mean_std(chunks: Iterable[np.ndarray], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std (ddof 0) of every column over all rows of ``chunks`` ((n_i, dim) each), as
    float32 (dim,), (dim,): :func:`row_moments` cast down (the input standardisation's statistics)."""
    mean, std = row_moments(chunks, dim)
    return mean.astype(np.float32), std.astype(np.float32)


def row_moments(chunks: Iterable[np.ndarray], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std (ddof 0) of every column over all rows of ``chunks`` ((n_i, dim) each).

    Merged chunk by chunk in float64 with Chan's pairwise update, so memory stays flat and columns whose
    scales differ by orders of magnitude (eGeMAPS) lose nothing. Returns float64 (dim,), (dim,) with
    :func:`usable_std` applied (no rows at all: mean 0, std 1).
    """
    n, mean, m2 = 0, np.zeros(dim), np.zeros(dim)
    for rows in chunks:
        if len(rows) == 0:
            continue
        rows = np.asarray(rows, np.float64)
        k, chunk_mean = len(rows), rows.mean(0)
        delta = chunk_mean - mean
        m2 += ((rows - chunk_mean) ** 2).sum(0) + delta ** 2 * n * k / (n + k)
        mean += delta * k / (n + k)
        n += k
    return mean, usable_std(mean, np.sqrt(m2 / max(n, 1)))


def masked_mean_std(x: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """[mean, std] over valid steps: (B, T, C), (B, T) bool -> 2 x (B, C); zeros for a row with no valid
    step. What the ERI probes pool and what ``eri_fusion``'s probe-started path computes."""
    w = mask.unsqueeze(-1).to(x.dtype)
    count = w.sum(1).clamp(min=1.0)
    mean = (x * w).sum(1) / count
    var = (((x - mean.unsqueeze(1)) ** 2) * w).sum(1) / count
    return [mean, var.clamp(min=0).sqrt()]
