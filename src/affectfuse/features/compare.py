"""ComParE 2016 (Schuller et al. 2016, the INTERSPEECH Computational Paralinguistics Challenge set) functionals
per audio window, computed by openSMILE: 6,373 features from 65 low-level descriptors (energy, spectral, MFCC,
voicing) and their deltas.

Input: (N, S) float32 mono windows at ``sample_rate`` Hz (or a list of 1-D windows of different lengths).
Output: (N, 6373) float32, columns named as openSMILE names them (``describe()['columns']``), e.g.
``pcm_RMSenergy_sma_amean`` (RMS amplitude, full scale 1), ``F0final_sma_amean`` (Hz, 0 where unvoiced).
Windows shorter than 0.1 s are dropped by the windowing; NaN openSMILE leaves becomes 0 (as ``egemaps``).

Default windows: 4 s every 2 s, so a recording shorter than 4 s (an utterance of an acted-speech corpus) is
one window, its whole self: ComParE's functionals are utterance-level statistics, and on EmoDB (2 s files,
leave one speaker out) whole-utterance rows gave UAR 0.810 against 0.727 for 1 s / 0.5 s windows pooled by
mean + std (docs/speech.md). Longer recordings get a row every 2 s.
"""

from __future__ import annotations

from affectfuse.features.egemaps import OpenSmileFunctionals

WINDOW_S, HOP_S = 4.0, 2.0  # see the module docstring
COLUMNS_FILE = "assets/compare/compare_2016_functionals.txt"


class ComParE2016(OpenSmileFunctionals):
    """openSMILE ComParE_2016 functionals: 6,373 acoustic features per window (no weights needed)."""

    name = "compare-2016"
    dim = 6373
    feature_set = "ComParE_2016"
    columns_file = COLUMNS_FILE


def compare_2016(weights=None, random_weights: bool = False, device: str = "cpu", sample_rate: int = 16000,
                 window_s: float = WINDOW_S, hop_s: float = HOP_S) -> ComParE2016:
    """Registry factory; ComParE has no weights (``weights`` / ``random_weights`` are ignored)."""
    return ComParE2016(sample_rate, window_s, hop_s)
