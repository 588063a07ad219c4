"""Cutting a waveform into analysis windows, as the original DeepSpectrum tool does.

DeepSpectrum (``_generate_chunks``) takes ``max(floor(S / hop), 1)`` windows starting at ``n * hop``; windows
that run past the end are cut short (not padded), and windows shorter than the FFT size are dropped. A row's
timestamp is its window's start time in seconds. affectfuse uses the same rule for every audio extractor so
that rows of different audio feature sets line up.
"""

from __future__ import annotations

import numpy as np


def audio_windows(audio: np.ndarray, sample_rate: int, window_s: float, hop_s: float,
                  min_samples: int = 1) -> tuple[np.ndarray, list[np.ndarray]]:
    """Split ``audio`` (S,) float32 mono into windows.

    Returns:
        starts: (T,) float64 window start times in seconds;
        chunks: T arrays of ``round(window_s * sample_rate)`` samples (the trailing ones shorter).

    Windows with fewer than ``min_samples`` samples are dropped (an extractor that cannot use them says so
    through ``min_samples``); a recording shorter than that gives no window at all.
    """
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if window_s <= 0 or hop_s <= 0:
        raise ValueError(f"window and hop must be positive seconds, got window={window_s}, hop={hop_s}")
    win = int(window_s * sample_rate)
    hop = int(hop_s * sample_rate)
    if win < 1 or hop < 1:
        raise ValueError(f"window {window_s} s / hop {hop_s} s are shorter than one sample at {sample_rate} Hz")
    starts, chunks = [], []
    for n in range(max(len(audio) // hop, 1)):
        chunk = audio[n * hop:n * hop + win]
        if len(chunk) >= max(min_samples, 1):
            starts.append(n * hop / sample_rate)
            chunks.append(chunk)
    return np.asarray(starts, dtype=np.float64), chunks


def group_by_length(chunks: list[np.ndarray]) -> dict[int, list[int]]:
    """Indices of ``chunks`` grouped by length (so equal-length windows are processed as one array)."""
    groups: dict[int, list[int]] = {}
    for i, chunk in enumerate(chunks):
        groups.setdefault(len(chunk), []).append(i)
    return groups
