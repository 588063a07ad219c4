"""MobileFaceNet (Chen et al. 2018) as POSTER V2's facial-landmark backbone.

POSTER V2 uses a MobileFaceNet trained to regress 68 landmarks (136 outputs, GDC head) and takes three of its
feature maps as attention queries. Shapes for a 112x112 input:
stem (N, 64, 56, 56) -> down2 + stage3 (N, 64, 28, 28) -> down3 + stage4 (N, 128, 14, 14)
-> down4 + stage5 + expand (N, 512, 7, 7) -> head (N, 136) landmark coordinates.
:meth:`MobileFaceNet.forward` returns ``(stage3, stage4, expand)`` outputs.

Blocks: ``ConvBN`` (conv -> BN -> optional PReLU); ``DepthWise`` = 1x1 expand -> 3x3 depthwise (stride) ->
1x1 linear projection, with a residual inside the stages.

:func:`map_mobilefacenet_keys` maps the official names (``conv1``, ``conv_23``, ``conv_3.model.<i>``,
``output_layer.conv_6_dw`` ...) onto ours.
"""

from __future__ import annotations

import re

import torch
from torch import nn


class ConvBN(nn.Module):
    """Conv (no bias) -> BN -> PReLU (omitted when ``act`` is False)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, padding: int = 0,
                 groups: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.prelu = nn.PReLU(c_out) if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return self.prelu(x) if self.prelu is not None else x


class DepthWise(nn.Module):
    """Inverted bottleneck: (N, C_in, H, W) -> (N, C_out, H/s, W/s) through ``hidden`` channels."""

    def __init__(self, c_in: int, c_out: int, hidden: int, stride: int = 2, residual: bool = False):
        super().__init__()
        self.expand = ConvBN(c_in, hidden)
        self.depthwise = ConvBN(hidden, hidden, 3, stride, 1, groups=hidden)
        self.project = ConvBN(hidden, c_out, act=False)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.residual else out


def stage(channels: int, blocks: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(*(DepthWise(channels, channels, hidden, 1, residual=True) for _ in range(blocks)))


class LandmarkHead(nn.Module):
    """GDC head: 7x7 depthwise linear conv -> linear -> BN1d: (N, 512, 7, 7) -> (N, 136)."""

    def __init__(self, outputs: int = 136):
        super().__init__()
        self.dw = ConvBN(512, 512, 7, groups=512, act=False)
        self.linear = nn.Linear(512, outputs, bias=False)
        self.bn = nn.BatchNorm1d(outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.linear(self.dw(x).flatten(1)))


class MobileFaceNet(nn.Module):
    """(N, 3, 112, 112) -> (f3 (N,64,28,28), f4 (N,128,14,14), f5 (N,512,7,7)); ``landmarks`` -> (N, 136)."""

    def __init__(self, outputs: int = 136):
        super().__init__()
        self.stem = ConvBN(3, 64, 3, 2, 1)
        self.stem_dw = ConvBN(64, 64, 3, 1, 1, groups=64)
        self.down2 = DepthWise(64, 64, 128)
        self.stage3 = stage(64, 4, 128)
        self.down3 = DepthWise(64, 128, 256)
        self.stage4 = stage(128, 6, 256)
        self.down4 = DepthWise(128, 128, 512)
        self.stage5 = stage(128, 2, 256)
        self.expand = ConvBN(128, 512)
        self.head = LandmarkHead(outputs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f3 = self.stage3(self.down2(self.stem_dw(self.stem(x))))
        f4 = self.stage4(self.down3(f3))
        f5 = self.expand(self.stage5(self.down4(f4)))
        return f3, f4, f5

    def landmarks(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 112, 112) -> (N, 136): 68 (x, y) pairs as the landmark network was trained to output."""
        return self.head(self.forward(x)[2])


_TOP = {"conv1": "stem", "conv2_dw": "stem_dw", "conv_23": "down2", "conv_3": "stage3", "conv_34": "down3",
        "conv_4": "stage4", "conv_45": "down4", "conv_5": "stage5", "conv_6_sep": "expand", "output_layer": "head"}
_INNER = {"conv": "expand", "conv_dw": "depthwise", "project": "project", "conv_6_dw": "dw"}


def map_mobilefacenet_key(key: str) -> str:
    """One official MobileFaceNet key -> ours.

    ``conv_3.model.2.conv_dw.bn.weight`` -> ``stage3.2.depthwise.bn.weight``.
    """
    parts = key.split(".")
    if parts[0] not in _TOP:
        return key
    out = [_TOP[parts[0]]]
    rest = parts[1:]
    if rest and rest[0] == "model":  # Residual wrapper
        out.append(rest[1])
        rest = rest[2:]
    if out[0] in ("down2", "down3", "down4") or re.fullmatch(r"stage\d", out[0]) or out[0] == "head":
        if rest and rest[0] in _INNER:
            out.append(_INNER[rest[0]])
            rest = rest[1:]
    return ".".join(out + rest)


def map_mobilefacenet_keys(state: dict) -> dict:
    return {map_mobilefacenet_key(k): v for k, v in state.items()}
