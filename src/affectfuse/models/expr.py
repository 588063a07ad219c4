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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
        return self.head(self.norm(h))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
