"""Area resampling for MTCNN from a summed-area table: pyramid levels and candidate crops, each equal to
``F.interpolate(mode="area")`` (what facenet-pytorch uses) to the bit, at a few table reads per output pixel.

Shapes: B frames, H x W pixels, C channels, K windows.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch.nn import functional as F


def _summed_area(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, H, W, C) uint8 -> (B, H + 1, W + 1, C) integer table of sums over rows ``< i``, columns ``< j``.

    Sums of whole pixel values are exact, so the area averages taken from the table (below) are what
    ``F.interpolate(mode="area")`` computes, to the bit (while a window's sum stays under 2**24, i.e.
    windows under 65,000 pixels), at a few reads per output pixel.
    """
    if device.type != "cpu":
        return _summed_area_torch(torch.from_numpy(images).to(device))
    n, height, width, channels = images.shape
    if 255 * height * width < 2**31 and channels <= 4 and n:
        import cv2  # OpenCV's integral image: the same int32 table, ~8x faster than two numpy cumsums

        return torch.from_numpy(np.stack([cv2.integral(np.ascontiguousarray(im), sdepth=cv2.CV_32S).reshape(
            height + 1, width + 1, channels) for im in images]))
    table = np.zeros((n, height + 1, width + 1, channels), np.int32 if 255 * height * width < 2**31 else np.int64)
    inner = table[:, 1:, 1:]
    np.cumsum(images, axis=1, dtype=table.dtype, out=inner)  # numpy's integer cumsum is ~2x torch's on CPU
    np.cumsum(inner, axis=2, out=inner)
    return torch.from_numpy(table)


def _summed_area_torch(images: torch.Tensor) -> torch.Tensor:
    """:func:`_summed_area` of a (B, H, W, C) uint8 tensor, on its device."""
    return F.pad(images.long().cumsum(1).cumsum(2), (0, 0, 1, 0, 1, 0))


def _pool_bounds(start: torch.Tensor, length: torch.Tensor, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive average pooling's input ranges: (K,) window starts and lengths -> (K, n_out) first and
    end (exclusive) indices, ``floor(i * L / n)`` to ``ceil((i + 1) * L / n)``."""
    i = torch.arange(n_out, device=start.device)
    first = start[:, None] + (i * length[:, None]) // n_out
    end = start[:, None] + ((i + 1) * length[:, None] + n_out - 1) // n_out
    return first, end


def _mean(sums: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(K, h, w, C) window sums / heights (K|1, h) / widths (K|1, w) -> (K, C, h, w) float32 (channels-last
    in memory). Divided by the height, then the width: the pooling kernel's order, hence its rounding."""
    return (sums.float() / rows[:, :, None, None].float() / cols[:, None, :, None].float()).permute(0, 3, 1, 2)


def _resample_frames(table: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Whole frames area-resampled to ``height x width``: (B, C, height, width) float32, channels-last in
    memory like ``F.interpolate`` of the reference's channels-last frames (so P-Net runs the same kernels)."""
    r0, r1, c0, c1 = _frame_bounds(table.shape[1] - 1, table.shape[2] - 1, height, width, table.device)
    rows = table.index_select(1, r1[0]) - table.index_select(1, r0[0])  # (B, height, W + 1, C)
    sums = rows.index_select(2, c1[0]) - rows.index_select(2, c0[0])
    return _mean(sums, r1 - r0, c1 - c0)


@functools.lru_cache(maxsize=256)
def _frame_bounds(in_height: int, in_width: int, height: int, width: int, device: torch.device) -> tuple:
    """:func:`_pool_bounds` of whole frames for one pair of sizes, computed once (the pyramid's levels recur on
    every frame of a video): row first / end (1, height), column first / end (1, width)."""
    zero = torch.zeros(1, dtype=torch.long, device=device)
    return (*_pool_bounds(zero, torch.full_like(zero, in_height), height),
            *_pool_bounds(zero, torch.full_like(zero, in_width), width))


def _resample_windows(table: torch.Tensor, idx: torch.Tensor, windows: torch.Tensor, size: int) -> torch.Tensor:
    """Windows of frames area-resampled to ``size x size``, each equal to ``F.interpolate(mode="area")`` of it.

    Args:
        table: (B, H + 1, W + 1, C) from :func:`_summed_area`; idx: (K,) frame of each window;
        windows: (K, 4) int64 non-empty half-open ``x0, y0, x1, y1``.

    Returns:
        (K, C, size, size) float32 pixel values, channels-last in memory (R- and O-Net's max pooling runs 4x
        faster so than on NCHW crops; the values are the same).
    """
    r0, r1 = _pool_bounds(windows[:, 1], windows[:, 3] - windows[:, 1], size)  # (K, size)
    c0, c1 = _pool_bounds(windows[:, 0], windows[:, 2] - windows[:, 0], size)
    # each corner read as one gather of whole C-vectors from the flattened table (2-3x faster than 4-D
    # advanced indexing; the same sums)
    b, h1, w1, c = table.shape
    flat, base = table.reshape(b * h1 * w1, c), (idx * (h1 * w1))[:, None, None]

    def at(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return flat.index_select(0, (base + rows[:, :, None] * w1 + cols[:, None, :]).reshape(-1))

    sums = (at(r1, c1) - at(r0, c1) - at(r1, c0) + at(r0, c0)).reshape(len(idx), size, size, c)
    return _mean(sums, r1 - r0, c1 - c0)
