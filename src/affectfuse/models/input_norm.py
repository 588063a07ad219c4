"""Input standardisation with training statistics, in front of any model that takes
``(features: {modality: (B, T, D_m)}, masks)``: the statistics travel with the model and its checkpoint."""

from __future__ import annotations

import torch
from torch import nn


class StandardizedInputs(nn.Module):
    """``(x - mean) / std`` per modality and feature dim, then the wrapped ``model``.

    ``stats``: {modality: {"mean": (D,), "std": (D,)}} (:func:`affectfuse.data.sequences.input_norm_stats`).
    Modalities without statistics pass unchanged. The wrapped models zero the rows their masks mark
    invalid, so padding stays zero. ``.model`` is the wrapped model, ``.stats()`` the statistics.
    """

    def __init__(self, model: nn.Module, stats: dict[str, dict[str, torch.Tensor]]):
        super().__init__()
        self.model = model
        self.names = list(stats)
        for i, name in enumerate(self.names):
            self.register_buffer(f"mean_{i}", torch.as_tensor(stats[name]["mean"], dtype=torch.float32).clone())
            self.register_buffer(f"std_{i}", torch.as_tensor(stats[name]["std"], dtype=torch.float32).clone())

    def stats(self) -> dict[str, dict[str, torch.Tensor]]:
        return {name: {"mean": getattr(self, f"mean_{i}"), "std": getattr(self, f"std_{i}")}
                for i, name in enumerate(self.names)}

    def forward(self, features: dict[str, torch.Tensor], masks: dict[str, torch.Tensor] | None = None):
        feats = dict(features)
        for name, s in self.stats().items():
            if name in feats:
                feats[name] = (feats[name] - s["mean"].to(feats[name].dtype)) / s["std"].to(feats[name].dtype)
        return self.model(feats, masks)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a :class:`StandardizedInputs` (or ``model`` itself)."""
    return model.model if isinstance(model, StandardizedInputs) else model
