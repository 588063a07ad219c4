"""Building blocks of the ERI fusion model (paper Fig. 1, eqs. 1-5).

Letters used in shape comments: B batch (videos), T time steps, D input feature dim, d model dim.
Masks are (B, T) bool with True = valid step (the feature-store convention).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class TemporalBlock(nn.Module):
    """One residual TCN block (Bai et al. 2018): two dilated 1-D convolutions, ReLU, dropout.

    Non-causal ("same") padding: a video-level estimate may look at the whole clip.
    (B, C_in, T) -> (B, C_out, T).
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        pad = (kernel_size - 1) * dilation // 2
        self.conv1 = nn.Conv1d(c_in, c_out, kernel_size, padding=pad, dilation=dilation)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel_size, padding=pad, dilation=dilation)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)
        self.down = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.drop(self.act(self.conv1(x)))
        y = self.drop(self.act(self.conv2(y)))
        return self.act(y + self.down(x))


class TCN(nn.Module):
    """Temporal convolution stack that embeds a (B, T, D) sequence into (B, T, d).

    ``levels`` blocks with dilation 1, 2, 4, ...; the first maps D -> d, the rest keep d.
    ``kernel_size`` must be odd so the sequence length is kept.
    """

    def __init__(self, in_dim: int, d_model: int, levels: int = 2, kernel_size: int = 3, dropout: float = 0.1):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"TCN kernel_size must be odd to keep the sequence length, got {kernel_size}")
        blocks = [TemporalBlock(in_dim if i == 0 else d_model, d_model, kernel_size, 2 ** i, dropout)
                  for i in range(levels)]
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.transpose(1, 2)).transpose(1, 2)  # (B, T, D) -> (B, T, d)


def sinusoidal_positions(length: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """(length, dim) sinusoidal position table (Vaswani et al. 2017; ``base`` 10000 there, 1000 in the
    authors' ERI code)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(base) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table


class SinusoidalPositions(nn.Module):
    """Adds the fixed sinusoidal position code of Vaswani et al. to a (B, T, d) sequence."""

    def __init__(self, d_model: int, max_len: int = 4096):
        super().__init__()
        self.register_buffer("pe", sinusoidal_positions(max_len, d_model), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.pe.shape[0]:
            raise ValueError(f"sequence of {x.shape[1]} steps exceeds the position table ({self.pe.shape[0]})")
        return x + self.pe[: x.shape[1]].to(x.dtype)


def _attention_padding(mask: torch.Tensor) -> torch.Tensor:
    """Key-padding mask for nn.MultiheadAttention (True = ignore) from a valid-mask (True = valid).

    A sequence with no valid step would make every attention row NaN; there the first step is
    attended (its values are zeros), and pooling later gives zeros for that video.
    """
    pad = ~mask
    empty = pad.all(dim=1)
    if empty.any():
        pad = pad.clone()
        pad[empty, 0] = False
    return pad


class ConcatAttentionBlock(nn.Module):
    """out = concat(x, MHA(x), TransformerLayer(x)): (B, T, d) -> (B, T, 3d).

    The paper's modality encoder (2 heads, dropout 0.5) and interaction encoder (8 heads, dropout 0.1)
    are both this block. Padded steps are excluded as attention keys and zeroed in the output.
    """

    def __init__(self, d_model: int, heads: int, dropout: float, ff_dim: int = 2048):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"model dim {d_model} is not divisible by {heads} heads")
        self.mha = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=ff_dim, dropout=dropout,
                                                batch_first=True)
        self.out_dim = 3 * d_model

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pad = _attention_padding(mask)                                  # (B, T) True = ignore
        attn, _ = self.mha(x, x, x, key_padding_mask=pad, need_weights=False)
        enc = self.layer(x, src_key_padding_mask=pad)
        out = torch.cat([x, attn, enc], dim=-1)                         # (B, T, 3d)
        return out * mask.unsqueeze(-1).to(out.dtype)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid steps: (B, T, C), (B, T) -> (B, C); zeros for a video with no valid step."""
    w = mask.unsqueeze(-1).to(x.dtype)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)



class BurstPooling(nn.Module):
    """A signed burst statistic of per-step scores, for finding a short event in time that a mean dilutes.

    scores ``s`` (B, T, K) (one series per output, e.g. the probe's projection of each step), mask (B, T):
        d_t   = s_t - mean_t s                           # deviation from the video's mean
        a_t   = softmax_t(|d_t| / (std_t d * tau_k))     # attention on the steps furthest from the mean
        burst = sum_t a_t d_t                            # (B, K): the signed size of the largest excursion
    ``tau`` (learned, per output) is the temperature: large -> uniform weights (burst -> 0), small -> the
    single most extreme step. Dividing by the video's own std makes the weights independent of the
    scores' units. Invalid steps get no weight; a video with < 2 valid steps gives 0.
    """

    def __init__(self, outputs: int, tau: float = 0.5):
        super().__init__()
        self.log_tau = nn.Parameter(torch.full((outputs,), math.log(tau)))

    def forward(self, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = mask.unsqueeze(-1).to(scores.dtype)                                   # (B, T, 1)
        d = (scores - masked_mean(scores, mask).unsqueeze(1)) * w                 # (B, T, K)
        spread = ((d ** 2).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp(min=1.0)).sqrt()
        logits = d.abs() / (spread.clamp(min=1e-6) * self.log_tau.exp().to(scores.dtype))
        logits = logits.masked_fill(~mask.unsqueeze(-1), -1e4)
        return (torch.softmax(logits, dim=1) * d).sum(1)                          # (B, K)
