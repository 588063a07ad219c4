"""Sequence windows over whole videos, overlap averaging and temporal smoothing of per-frame outputs.

Letters: T frames of one video, L window length, W windows, D feature dim, C classes.

Windows of length L start every ``stride`` frames; the last one is moved back so it ends on the last
frame, so every frame is covered at least once and no window runs past the video unless the video is
shorter than L (then one window, zero-padded, with ``pad`` marking the padding). At prediction the
per-frame outputs of overlapping windows are averaged.
"""

from __future__ import annotations

import numpy as np

SMOOTHING_METHODS = ("none", "mean", "mode")


def window_starts(n_frames: int, length: int, stride: int) -> np.ndarray:
    """(W,) int64 start frames (0-based) of windows covering ``0..n_frames-1``."""
    if length < 1 or stride < 1:
        raise ValueError(f"window length and stride must be >= 1, got {length} and {stride}")
    if n_frames <= length:
        return np.zeros(1, dtype=np.int64)
    starts = list(range(0, n_frames - length + 1, stride))
    if starts[-1] + length < n_frames:
        starts.append(n_frames - length)
    return np.asarray(starts, dtype=np.int64)


def cut_windows(x: np.ndarray, starts: np.ndarray, length: int, fill=0) -> tuple[np.ndarray, np.ndarray]:
    """Cut (W, L, ...) windows out of ``x`` (T, ...); returns (windows, pad (W, L) bool True at padding)."""
    n = x.shape[0]
    idx = starts[:, None] + np.arange(length)[None, :]  # (W, L)
    pad = idx >= n
    out = x[np.minimum(idx, max(n - 1, 0))]
    if pad.any():
        out = out.copy()
        out[pad] = fill
    return out, pad


def overlap_average(window_values: np.ndarray, starts: np.ndarray, n_frames: int) -> np.ndarray:
    """Average per-frame outputs of overlapping windows: (W, L, C) -> (T, C) float32.

    Padded positions (beyond ``n_frames``) are dropped; every frame must be covered by a window.
    """
    n_windows, length = window_values.shape[:2]
    total = np.zeros((n_frames,) + window_values.shape[2:], dtype=np.float64)
    count = np.zeros(n_frames, dtype=np.int64)
    for w in range(n_windows):
        stop = min(int(starts[w]) + length, n_frames)
        span = stop - int(starts[w])
        total[starts[w]:stop] += window_values[w, :span]
        count[starts[w]:stop] += 1
    if (count == 0).any():
        raise ValueError(f"{int((count == 0).sum())} of {n_frames} frames not covered by any window")
    return (total / count.reshape((-1,) + (1,) * (total.ndim - 1))).astype(np.float32)


def smooth_probabilities(probs: np.ndarray, method: str = "mean", window: int = 5) -> np.ndarray:
    """Temporal smoothing of one video's per-frame class probabilities (T, C) -> (T, C).

    ``"mean"``: centred moving average of the probabilities over ``window`` frames (edges use the nearest
    frame). ``"mode"``: mode filter: each frame gets the share of votes of each class among the argmax
    labels of the ``window`` frames around it, so its argmax is the most frequent label there (ties go to
    the lower class index). ``"none"`` or ``window <= 1`` returns the input unchanged. Rows still sum to 1.
    """
    from scipy.ndimage import uniform_filter1d

    if method not in SMOOTHING_METHODS:
        raise ValueError(f"unknown smoothing {method!r}; valid: {', '.join(SMOOTHING_METHODS)}")
    probs = np.asarray(probs, dtype=np.float32)
    if method == "none" or window <= 1 or probs.shape[0] <= 1:
        return probs
    if method == "mode":
        probs = np.eye(probs.shape[1], dtype=np.float32)[probs.argmax(axis=1)]
    return uniform_filter1d(probs.astype(np.float64), size=int(window), axis=0, mode="nearest").astype(np.float32)


def parse_smoothing(spec: str | None) -> tuple[str, int]:
    """``"mean:9"`` -> ("mean", 9); ``None``/``"none"`` -> ("none", 1)."""
    if not spec or spec == "none":
        return "none", 1
    method, _, size = spec.partition(":")
    if method not in SMOOTHING_METHODS:
        raise ValueError(f"unknown smoothing {spec!r}; use none, mean:N or mode:N")
    try:
        window = int(size) if size else 5
    except ValueError:
        raise ValueError(f"smoothing window in {spec!r} is not an integer") from None
    return method, window
