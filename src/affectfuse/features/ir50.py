"""IR-50 (ArcFace-style improved residual network, Deng et al. 2019) truncated as POSTER V2 uses it.

The image backbone of POSTER V2: a 3x3 stem and the first three stages of IResNet-50 (3, 4 and 14 "IR"
bottlenecks; BN -> conv3x3 -> PReLU -> conv3x3(stride) -> BN, plus an identity or 1x1-conv shortcut). The fourth
stage and the 512-d embedding head of the face-recognition network are not used by POSTER V2 and are left out.

Shapes for a 112x112 input: stem (N, 64, 112, 112) -> stage1 (N, 64, 56, 56) -> stage2 (N, 128, 28, 28)
-> stage3 (N, 256, 14, 14); :meth:`IR50.forward` returns the three stage outputs.

:func:`map_ir50_keys` maps the two published namings onto ours: POSTER V2's ``ir_back.body{1,2,3}.<i>`` and
the original face.evoLVe / ``ir50.pth`` file's single ``body.<j>`` (j = 0..23; 21-23 are stage 4, dropped).
"""

from __future__ import annotations

import re

import torch
from torch import nn

STAGES = ((64, 64, 3), (64, 128, 4), (128, 256, 14))  # (in channels, out channels, blocks); first block stride 2


class IRBlock(nn.Module):
    """IR bottleneck: (N, C_in, H, W) -> (N, C_out, H/s, W/s)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.stride = stride
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False)
        self.prelu = nn.PReLU(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        if c_in != c_out:
            self.down_conv = nn.Conv2d(c_in, c_out, 1, stride, bias=False)
            self.down_bn = nn.BatchNorm2d(c_out)
        else:
            self.down_conv = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down_conv is not None:
            shortcut = self.down_bn(self.down_conv(x))
        else:
            shortcut = x[:, :, ::self.stride, ::self.stride]  # a 1x1 max pool with stride = subsampling
        return shortcut + self.bn2(self.conv2(self.prelu(self.conv1(self.bn1(x)))))


class IR50(nn.Module):
    """Stem + stages 1-3 of IResNet-50: (N, 3, 112, 112) -> ((N,64,56,56), (N,128,28,28), (N,256,14,14))."""

    def __init__(self):
        super().__init__()
        self.stem_conv = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(64)
        self.stem_prelu = nn.PReLU(64)
        for s, (c_in, c_out, n) in enumerate(STAGES, start=1):
            blocks = [IRBlock(c_in, c_out, 2)] + [IRBlock(c_out, c_out, 1) for _ in range(n - 1)]
            setattr(self, f"stage{s}", nn.Sequential(*blocks))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.stem_prelu(self.stem_bn(self.stem_conv(x)))
        x1 = self.stage1(x)
        x2 = self.stage2(x1)
        return x1, x2, self.stage3(x2)


_RES = {"0": "bn1", "1": "conv1", "2": "prelu", "3": "conv2", "4": "bn2"}
_SHORT = {"0": "down_conv", "1": "down_bn"}
_STEM = {"0": "stem_conv", "1": "stem_bn", "2": "stem_prelu"}
_OFFSETS = (0, 3, 7, 21)  # body.<j> index where stages 1, 2, 3, 4 start in the full IR-50


def map_ir50_key(key: str) -> str | None:
    """One official IR-50 key -> our key, or ``None`` for parts POSTER V2 does not use (stage 4, head)."""
    m = re.match(r"^input_layer\.(\d)\.(.+)$", key)
    if m:
        return f"{_STEM[m[1]]}.{m[2]}"
    m = re.match(r"^body(\d?)\.(\d+)\.(res_layer|shortcut_layer)\.(\d)\.(.+)$", key)
    if m:
        stage, index = (int(m[1]), int(m[2])) if m[1] else _split_body_index(int(m[2]))
        if stage > 3:
            return None
        part = (_RES if m[3] == "res_layer" else _SHORT)[m[4]]
        return f"stage{stage}.{index}.{part}.{m[5]}"
    if key.startswith("output_layer.") or key.startswith("body4."):
        return None
    return key  # already ours (or unknown: the strict load reports it)


def _split_body_index(j: int) -> tuple[int, int]:
    for stage in (4, 3, 2, 1):
        if j >= _OFFSETS[stage - 1]:
            return stage, j - _OFFSETS[stage - 1]
    raise ValueError(j)


def map_ir50_keys(state: dict) -> dict:
    """Official IR-50 state dict (POSTER V2 ``ir_back.*`` without the prefix, or ``ir50.pth``) -> ours."""
    out = {}
    for key, value in state.items():
        new = map_ir50_key(key)
        if new is not None:
            out[new] = value
    return out
