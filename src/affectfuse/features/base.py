"""The extractor contract shared by every feature extractor.

An extractor is a small object that states what it wants and what it gives:

- ``name``: registry key, e.g. ``"deepspectrum"``;
- ``modality``: ``"audio"`` (input: mono float32 waveform windows) or ``"face"`` (input: aligned RGB crops);
- ``dim``: length of one output row (downstream code reads this, never a hard-coded size);
- ``rate``: output rows per second of media, or ``None`` when it follows the input (one row per face frame);
- ``input``: an :class:`AudioInput` or, for face extractors, the :class:`~affectfuse.faces.plan.FacePlan`
  (crop geometry, colour, normalisation, precision) every command cuts and prepares its faces by;
- ``weights``: the :class:`~affectfuse.weights.WeightsSpec` it loads (``None`` when it needs none);
- ``random_weights``: True only when built for tests without the pretrained file;
- ``__call__(batch) -> np.ndarray`` of shape ``(N, dim)``, float32, batched over N inputs.

Letters used in shape comments: N batch, T time steps, D feature dim, H/W pixels, S samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from affectfuse.faces.plan import FacePlan
from affectfuse.weights import WeightsSpec, describe_loaded


@dataclass(frozen=True)
class AudioInput:
    """Audio windows: (N, S) float32 mono waveforms at ``sample_rate`` Hz, S = window_s * sample_rate."""

    sample_rate: int = 16000
    window_s: float = 1.0
    hop_s: float = 0.5


# A face extractor's input is its face-preprocessing plan: crop geometry (size, template, margin), colour,
# normalisation and precision, declared with its weights (see affectfuse.faces.plan); FaceInput is its old name.
FaceInput = FacePlan


class Extractor:
    """Base class; subclasses set the class attributes and implement :meth:`extract`."""

    name: str = ""
    modality: str = ""
    dim: int = 0
    rate: float | None = None
    input: AudioInput | FaceInput | None = None
    weights: WeightsSpec | None = None
    random_weights: bool = False
    loaded_weights: list = []  # files the factory loaded (set by ``create_extractor``; read-only here)

    def extract(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        out = self.extract(batch)
        assert out.shape == (len(batch), self.dim), f"{self.name}: got {out.shape}, want ({len(batch)}, {self.dim})"
        return out

    def describe(self) -> dict:
        """Metadata stored with every feature set this extractor writes; ``weights`` names the file actually
        loaded (path, filename, sha256; ``"random"`` for random weights), see :func:`describe_loaded`."""
        return {"extractor": self.name, "modality": self.modality, "dim": self.dim, "rate": self.rate,
                "input": None if self.input is None else (self.input.describe() if isinstance(self.input, FacePlan)
                                                          else self.input.__dict__),
                "weights": describe_loaded(self.weights, self.loaded_weights, self.random_weights),
                "random_weights": self.random_weights}
