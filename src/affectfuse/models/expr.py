"""The EXPR frame transformer: per-frame features -> transformer encoder -> 8 logits per frame.

Paper (arXiv 2303.09164, Part B): the features of several face extractors are concatenated per frame
("stitched": InceptionResnetV1-VGGFace2 512 + InceptionResnetV1-CASIA 512 + RegNet), a transformer
fusion module runs over windows of consecutive frames, and a linear head gives one prediction per frame.

Here (letters: B windows, L frames per window, D input dim, d model width, C classes)::

    face (B, L, D_face) -LayerNorm-Linear-> (B, L, d)  [faceless frames (valid False) -> learned token]
    + audio (B, L, D_audio) -LayerNorm-Linear-> (B, L, d)  [optional stream aligned to frames]
    + sinusoidal positions -> dropout -> TransformerEncoder (pre-norm, n_layers) -> LayerNorm
    -> Linear -> logits (B, L, C)

Padding frames (beyond the end of a short video) are excluded from attention with ``pad`` (B, L).

Options for few training videos (all off by default, i.e. the paper's model; ``expr train``'s defaults turn
them on, see :class:`affectfuse.training.expr.ExprTrainConfig`):

- ``standardize``: ``(x - input_mean) / input_std`` per feature column first (buffers set from the training
  frames and saved with the weights), so eGeMAPS-like scales and constant columns do no harm;
- ``probe_skip``: a per-frame linear path, standardised frame -> Linear -> logits (B, L, C), added to the
  transformer's logits; training sets it to the per-frame logistic probe (kept there unless ``train_skip``:
  gradient steps move a linear model off the probe's optimum) and starts the transformer's head at zero,
  so the untrained model is the probe and training learns what context adds to it;
- ``frame_dropout``: while training, this share of frames is shown as faceless (the learned no-face token),
  so the encoder learns to read a frame from its neighbours; ``input_noise``: Gaussian noise of this std
  (in standardised units) on the inputs while training;
- ``video_center``: every video's features minus ``n / (n + center_prior_frames)`` times the mean of its n
  frames with features (:func:`center_video`), before everything else: a per-person offset (identity, camera)
  is removed, shrunk towards none on short videos, whose mean is mostly their own expression. Applied to whole
  videos by the callers (:func:`affectfuse.training.expr.predict_videos`), not inside a window.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from affectfuse.models.blocks import sinusoidal_positions
from affectfuse.utils import dataclass_from_dict


@dataclass
class ExprModelConfig:
    """Typed configuration of :class:`ExprTransformer` (saved in every checkpoint)."""

    face_dim: int  # sum of the stitched face feature dims (paper: 512 + 512 + RegNet's dim)
    audio_dim: int = 0  # 0 = no audio stream
    d_model: int = 256
    n_heads: int = 4
    n_layers: int = 2
    ff_mult: int = 4
    dropout: float = 0.1
    input_dropout: float = 0.1
    n_classes: int = 8
    standardize: bool = False
    probe_skip: bool = False
    train_skip: bool = False  # False: the skip path keeps the probe's solution (not trained)
    frame_dropout: float = 0.0
    input_noise: float = 0.0
    video_center: bool = False  # inputs are per-video centred (center_video) by whoever calls the model
    center_prior_frames: float = 0.0  # shrinkage of the video mean: n / (n + this) of it is removed

    @classmethod
    def from_dict(cls, d: dict) -> "ExprModelConfig":
        return dataclass_from_dict(cls, d, "EXPR model option(s)")

    def to_dict(self) -> dict:
        return asdict(self)


class ExprTransformer(nn.Module):
    """Frame-level expression classifier over windows of per-frame features (see module docstring)."""

    def __init__(self, config: ExprModelConfig):
        super().__init__()
        if config.d_model % config.n_heads:
            raise ValueError(f"d_model {config.d_model} is not divisible by n_heads {config.n_heads}")
        self.config = config
        d = config.d_model
        self.face_proj = nn.Sequential(nn.LayerNorm(config.face_dim), nn.Dropout(config.input_dropout),
                                       nn.Linear(config.face_dim, d))
        self.audio_proj = (nn.Sequential(nn.LayerNorm(config.audio_dim), nn.Dropout(config.input_dropout),
                                         nn.Linear(config.audio_dim, d)) if config.audio_dim else None)
        self.no_face = nn.Parameter(torch.zeros(d))
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(d, config.n_heads, config.ff_mult * d, config.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.n_classes)
        dim = config.face_dim + config.audio_dim
        if config.standardize:
            self.register_buffer("input_mean", torch.zeros(dim))
            self.register_buffer("input_std", torch.ones(dim))
        self.skip = nn.Linear(dim, config.n_classes) if config.probe_skip else None
        if self.skip is not None:  # untrained: the skip path alone (set from the probe by the trainer)
            for p in (*self.head.parameters(), *self.skip.parameters()):
                nn.init.zeros_(p)
            self.skip.requires_grad_(config.train_skip)
        self.register_buffer("positions", sinusoidal_positions(1024, d), persistent=False)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None,
                pad: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, L, C) for features ``x`` (B, L, face_dim + audio_dim).

        ``valid`` (B, L) bool: False at faceless frames (their face projection is replaced by the learned
        no-face embedding). ``pad`` (B, L) bool: True at padding frames (not attended to).
        """
        cfg = self.config
        if x.shape[-1] != cfg.face_dim + cfg.audio_dim:
            raise ValueError(f"features have {x.shape[-1]} columns, the model expects "
                             f"{cfg.face_dim} face + {cfg.audio_dim} audio = {cfg.face_dim + cfg.audio_dim}")
        if cfg.standardize:
            x = (x - self.input_mean.to(x.dtype)) / self.input_std.to(x.dtype)
        if self.training and cfg.input_noise > 0:
            x = x + cfg.input_noise * torch.randn_like(x)
        if self.training and cfg.frame_dropout > 0:
            keep = torch.rand(x.shape[:2], device=x.device) >= cfg.frame_dropout
            valid = keep if valid is None else valid & keep
        h = self.face_proj(x[..., :cfg.face_dim])  # (B, L, d)
        if valid is not None:
            h = torch.where(valid[..., None], h, self.no_face.to(h.dtype))
        if self.audio_proj is not None:
            h = h + self.audio_proj(x[..., cfg.face_dim:])
        length = h.shape[1]
        if length > self.positions.shape[0]:
            self.positions = sinusoidal_positions(length, h.shape[-1]).to(h.device)
        h = self.dropout(h + self.positions[:length].to(h.dtype))
        h = self.encoder(h, src_key_padding_mask=pad)
        logits = self.head(self.norm(h))
        if self.skip is not None:  # faceless frames (valid False) get the skip path's bias only
            z = x if valid is None else x * valid[..., None].to(x.dtype)
            logits = logits + self.skip(z)
        return logits

    def set_standardization(self, mean, std) -> None:
        """Set the input statistics (D,), (D,) of a ``standardize`` model (std of constant columns: 1)."""
        if not self.config.standardize:
            raise ValueError("this EXPR model was built without standardize=True")
        self.input_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.input_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def set_skip(self, weight, bias) -> None:
        """Set the per-frame linear path: ``weight`` (C, D) on standardised inputs, ``bias`` (C,)."""
        if self.skip is None:
            raise ValueError("this EXPR model was built without probe_skip=True")
        with torch.no_grad():
            self.skip.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            self.skip.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))


def center_video(features: np.ndarray, valid: np.ndarray, prior_frames: float = 0.0) -> np.ndarray:
    """(N, D) features minus ``n / (n + prior_frames)`` x the mean of the n rows with features (``valid`` (N,)
    bool); rows without features stay as they are (they are masked downstream)."""
    n = int(valid.sum())
    if n == 0:
        return features
    offset = features[valid].mean(axis=0, dtype=np.float64) * (n / (n + prior_frames))
    return np.where(valid[:, None], features - offset, features).astype(np.float32)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
