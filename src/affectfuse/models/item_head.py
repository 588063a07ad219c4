"""The item-level classification head: pooled statistics of an item's rows -> class logits.

Letters: B items, P pooled dims (per feature set, mean and std of the standardised rows), C classes::

    x (B, P) -(x - shift) / scale-> z (B, P)
    logits = linear(z) + mlp(z)          mlp: Dropout -> Linear(P, h) -> GELU -> Dropout -> Linear(h, C)

``shift``/``scale`` are buffers (the logistic probe's ``StandardScaler``); ``linear`` is started at the
probe's solution and the mlp's last layer at zero, so the untrained head predicts exactly what the probe
does and training adds only what the probe misses (see :mod:`affectfuse.training.items`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from affectfuse.utils import dataclass_from_dict


@dataclass
class ItemHeadArgs:
    """Constructor arguments of :class:`ItemHead` (saved in every checkpoint)."""

    in_dim: int
    n_classes: int
    hidden: int = 128        # mlp width; 0 = the linear part only
    dropout: float = 0.5     # before the mlp's last layer
    input_dropout: float = 0.2

    @classmethod
    def from_dict(cls, d: dict) -> "ItemHeadArgs":
        return dataclass_from_dict(cls, d, "item head option(s)")

    def to_dict(self) -> dict:
        return asdict(self)


class ItemHead(nn.Module):
    """Linear + residual mlp over pooled item statistics (see the module docstring)."""

    def __init__(self, args: ItemHeadArgs):
        super().__init__()
        self.args = args
        self.register_buffer("shift", torch.zeros(args.in_dim))
        self.register_buffer("scale", torch.ones(args.in_dim))
        self.linear = nn.Linear(args.in_dim, args.n_classes)
        self.mlp = None
        if args.hidden > 0:
            self.mlp = nn.Sequential(nn.Dropout(args.input_dropout), nn.Linear(args.in_dim, args.hidden), nn.GELU(),
                                     nn.Dropout(args.dropout), nn.Linear(args.hidden, args.n_classes))
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    def start_at_probe(self, probe: dict) -> None:
        """Copy a :func:`affectfuse.training.probes.fit_logistic` solution into ``shift``, ``scale`` and
        ``linear`` (coef (C, P) and intercept (C,) in the scaled space)."""
        with torch.no_grad():
            self.shift.copy_(torch.as_tensor(np.asarray(probe["scaler_mean"]), dtype=torch.float32))
            self.scale.copy_(torch.as_tensor(np.asarray(probe["scaler_scale"]), dtype=torch.float32))
            self.linear.weight.copy_(torch.as_tensor(np.asarray(probe["coef"]), dtype=torch.float32))
            self.linear.bias.copy_(torch.as_tensor(np.asarray(probe["intercept"]), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) for pooled statistics ``x`` (B, P)."""
        z = (x - self.shift) / self.scale
        logits = self.linear(z)
        return logits + self.mlp(z) if self.mlp is not None else logits
