"""The authors' ERI fusion model, exactly as their code runs it (``eri_authors``).

Built from the facts measured on cyinen/CVPR2023-ABAW5-ERI (commit 07e0969, ``model/vitmodel.py``,
``MutilModel(d_in=[1024, 1536], d_model=256, len_feature=30)``; ``../shared/reference/README.md``): the same
modules under the same state-dict names, so their weights load strictly and their outputs are reproduced
(``tests/test_eri_authors.py`` checks the golden pair). Letters: B videos, T = 30 steps, D_m input dim,
d = 256, M modalities.

Per modality m::

    x_m = 16 * TCN_m(f_m) + PE_1000, dropout 0.2    # (B, T, D_m) -> (B, T, d); 5 causal weight-normed levels
    h_m = [x_m, Att(x_m), Transformer(x_m)]         # (B, T, 3d); 2 heads of 64, dropout 0.5, FF 512 GELU
Interaction::

    x_av = [x_audio, x_visual]                      # (B, T, M d)
    h_av = [x_av, Att(x_av), Transformer(x_av)]     # (B, T, 3 M d); 8 heads of 64, dropout 0.1
Heads::

    z = [ReLU(W_reg flatten([h_audio, h_visual])), ReLU(W_proj flatten(h_av))]   # (B, 256 + 256)
    intensity = sigmoid(W_i z) (B, K);  logits = W_c z (B, K)

Unlike :class:`affectfuse.models.eri.ERIFusion` (affectfuse's variant: any length, masked attention and
pooling), there are no masks: padded steps are attended to and flattened, and T must equal ``seq_len``
(the flatten fixes it). Rows the feature store marks invalid are zeroed, as the authors' zero padding.
With one modality or without the interaction (the paper's Table 1 ablations, which the authors' class
does not build), z is the ``regress`` branch alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from affectfuse.models.blocks import sinusoidal_positions
from affectfuse.models.eri_args import ERIArchitecture


@dataclass
class ERIAuthorsArgs(ERIArchitecture):
    """Constructor arguments of :class:`ERIAuthors`; the defaults are the authors' ``run.sh``.

    The shared :class:`ERIArchitecture` fields keep their meaning (``ff_dim`` the feed-forward width,
    ``tcn_levels`` the TCN depth); ``head_dim`` is the width of each attention head, ``pe_base`` the base of
    the sinusoidal code (1000 in their code, 10000 in Vaswani et al.), ``seq_len`` the fixed input length.
    """

    d_model: int = 256
    ff_dim: int = 512
    tcn_levels: int = 5
    tcn_dropout: float = 0.2
    head_dim: int = 64
    pe_base: float = 1000.0
    pe_dropout: float = 0.2
    pe_max_len: int = 5000
    seq_len: int = 30
    input_dims: dict[str, int] = field(default_factory=lambda: {"audio": 1024, "visual": 1536})
    num_outputs: int = 7
    interaction: bool = True


# -- TCN (Bai et al. 2018, as locuslab/TCN that the authors use) ----------------------------------------------
class WeightNormConv1d(nn.Module):
    """A Conv1d whose weight is ``g * v / ||v||`` (norm over all dims but the output channel), with the
    parameter names ``bias``, ``weight_g`` [C_out, 1, 1], ``weight_v`` [C_out, C_in, k] of PyTorch's
    ``weight_norm``. (B, C_in, T) -> (B, C_out, T + pad) before the caller trims it.

    Initialised like ``weight_norm(nn.Conv1d(...))``: PyTorch's default conv init, g = ||v||.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int, padding: int):
        super().__init__()
        conv = nn.Conv1d(c_in, c_out, kernel_size, padding=padding, dilation=dilation)
        self.bias = nn.Parameter(conv.bias.detach().clone())
        self.weight_g = nn.Parameter(conv.weight.detach().norm(dim=(1, 2), keepdim=True))
        self.weight_v = nn.Parameter(conv.weight.detach().clone())
        self.padding, self.dilation = padding, dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_v * (self.weight_g / self.weight_v.norm(dim=(1, 2), keepdim=True))
        return nn.functional.conv1d(x, weight, self.bias, padding=self.padding, dilation=self.dilation)


class TrimRight(nn.Module):
    """Drops the last ``steps`` time steps: with padding (k-1)·d on both sides this makes a conv causal."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, : -self.steps].contiguous() if self.steps else x


class CausalTemporalBlock(nn.Module):
    """conv -> trim -> ReLU -> dropout, twice, plus a residual (1x1 conv when C_in != C_out), then ReLU.

    ``conv1``/``conv2`` are registered both by name and inside ``net`` (positions 0 and 4), as in the
    authors' code, so their state dict holds each weight twice under both names.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        pad = (kernel_size - 1) * dilation
        self.conv1 = WeightNormConv1d(c_in, c_out, kernel_size, dilation, pad)
        self.chomp1, self.relu1, self.dropout1 = TrimRight(pad), nn.ReLU(), nn.Dropout(dropout)
        self.conv2 = WeightNormConv1d(c_out, c_out, kernel_size, dilation, pad)
        self.chomp2, self.relu2, self.dropout2 = TrimRight(pad), nn.ReLU(), nn.Dropout(dropout)
        self.net = nn.Sequential(self.conv1, self.chomp1, self.relu1, self.dropout1,
                                 self.conv2, self.chomp2, self.relu2, self.dropout2)
        self.downsample = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else None
        if self.downsample is not None:
            self.downsample.weight.data.normal_(0, 0.01)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(self.net(x) + residual)


class TemporalConvNet(nn.Module):
    """``levels`` causal blocks with dilations 1, 2, 4, ...: (B, D, T) -> (B, d, T)."""

    def __init__(self, in_dim: int, channels: list[int], kernel_size: int, dropout: float):
        super().__init__()
        dims = [in_dim] + channels
        self.network = nn.Sequential(*[CausalTemporalBlock(dims[i], dims[i + 1], kernel_size, 2 ** i, dropout)
                                       for i in range(len(channels))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


class TCNEmbedding(nn.Module):
    """(B, T, D) -> sqrt(d) · TCN(x): (B, T, d) (the transformer's embedding scale)."""

    def __init__(self, in_dim: int, args: ERIAuthorsArgs):
        super().__init__()
        self.lut = TemporalConvNet(in_dim, [args.d_model] * args.tcn_levels, args.tcn_kernel, args.tcn_dropout)
        self.scale = math.sqrt(args.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lut(x.transpose(1, 2)).transpose(1, 2) * self.scale


class PositionalEncoding(nn.Module):
    """x + sinusoidal code with base ``base``, then dropout: (B, T, d) -> (B, T, d).

    The table ``pe`` [1, max_len, d] is a persistent buffer, as in the authors' state dict.
    """

    def __init__(self, d_model: int, dropout: float, base: float, max_len: int):
        super().__init__()
        self.register_buffer("pe", sinusoidal_positions(max_len, d_model, base).unsqueeze(0))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x + self.pe[:, : x.shape[1]].to(x.dtype))


class ModalityInput(nn.Module):
    """TCN embedding then positional encoding. The attribute names are the authors' (state-dict keys)."""

    def __init__(self, in_dim: int, args: ERIAuthorsArgs):
        super().__init__()
        self.Embeddings = TCNEmbedding(in_dim, args)
        self.PositionEncoding = PositionalEncoding(args.d_model, args.pe_dropout, args.pe_base, args.pe_max_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.PositionEncoding(self.Embeddings(x))


# -- attention blocks (vit-pytorch style) ---------------------------------------------------------------------
class Attention(nn.Module):
    """Multi-head self-attention without qkv bias: (B, T, dim) -> (B, T, dim); softmax(q k^T / sqrt(64))."""

    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.scale = heads, head_dim ** -0.5
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (z.reshape(b, t, self.heads, -1).transpose(1, 2) for z in self.to_qkv(x).chunk(3, dim=-1))
        attn = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)   # (B, H, T, T)
        return self.to_out((attn @ v).transpose(1, 2).reshape(b, t, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm, self.fn = nn.LayerNorm(dim), fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class Transformer(nn.Module):
    """Pre-norm layers: x + Att(LN(x)), then x + FF(LN(x)); no final norm."""

    def __init__(self, dim: int, depth: int, heads: int, head_dim: int, ff_dim: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList([nn.ModuleList([PreNorm(dim, Attention(dim, heads, head_dim, dropout)),
                                                    PreNorm(dim, FeedForward(dim, ff_dim, dropout))])
                                     for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attention, feed_forward in self.layers:
            x = x + attention(x)
            x = x + feed_forward(x)
        return x


class ConcatEncoder(nn.Module):
    """concat(x, Att(x), Transformer(x)): (B, T, dim) -> (B, T, 3 dim)."""

    def __init__(self, dim: int, heads: int, head_dim: int, ff_dim: int, dropout: float):
        super().__init__()
        self.att = Attention(dim, heads, head_dim, dropout)
        self.trans = Transformer(dim, 1, heads, head_dim, ff_dim, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.att(x), self.trans(x)], dim=-1)


# -- the model -------------------------------------------------------------------------------------------------
class ERIAuthors(nn.Module):
    """The authors' ``MutilModel``; see the module doc.

    forward(features, masks=None):
        features: {modality: (B, T, D_m)} (or a list in ``input_dims`` order, as the authors call it),
        T == ``seq_len``; masks: optional {modality: (B, T) bool}, False rows are zeroed.
    Returns {"intensity": (B, K) in [0, 1], "logits": (B, K)}.
    """

    Args = ERIAuthorsArgs

    def __init__(self, args: ERIAuthorsArgs | None = None, **kwargs):
        super().__init__()
        args = args or ERIAuthorsArgs(**kwargs)
        if not args.input_dims:
            raise ValueError("ERIAuthors needs at least one input modality")
        if args.interaction and len(args.input_dims) < 2:
            raise ValueError(f"the interaction encoder needs >= 2 modalities, got {list(args.input_dims)}")
        self.args, self.modalities = args, list(args.input_dims)
        d, m, t = args.d_model, len(args.input_dims), args.seq_len
        self.input = nn.ModuleList([ModalityInput(dim, args) for dim in args.input_dims.values()])
        self.modality_encoders = nn.ModuleList([
            ConcatEncoder(d, args.modality_heads, args.head_dim, args.ff_dim, args.modality_dropout)
            for _ in range(m)])
        self.modal_interaction = (ConcatEncoder(d * m, args.interaction_heads, args.head_dim, args.ff_dim,
                                                args.interaction_dropout) if args.interaction else None)
        self.regress = nn.Sequential(nn.Flatten(), nn.Linear(t * 3 * d * m, args.proj_dim), nn.ReLU())
        self.proj = (nn.Sequential(nn.Flatten(), nn.Linear(t * 3 * d * m, args.proj_dim), nn.ReLU())
                     if args.interaction else None)
        fused = args.proj_dim * (2 if args.interaction else 1)
        self.intensity_layer = nn.Linear(fused, args.num_outputs)
        self.class_layer = nn.Linear(fused, args.num_outputs)

    def _inputs(self, features, masks) -> list[torch.Tensor]:
        if isinstance(features, (list, tuple)):
            features = dict(zip(self.modalities, features))
        missing = [k for k in self.modalities if k not in features]
        if missing:
            raise KeyError(f"ERIAuthors expects modalities {self.modalities}; missing {missing}")
        xs = []
        for k in self.modalities:
            f = features[k]
            if f.shape[1] != self.args.seq_len:
                raise ValueError(f"eri_authors takes exactly {self.args.seq_len} steps (its flatten fixes it); "
                                 f"modality {k!r} has {f.shape[1]}: set data.seq_len={self.args.seq_len}")
            if masks is not None and k in masks:
                f = f * masks[k].unsqueeze(-1).to(f.dtype)
            xs.append(f)
        return xs

    def forward(self, features, masks: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        xs = [embed(f) for embed, f in zip(self.input, self._inputs(features, masks))]    # M x (B, T, d)
        hs = [enc(x) for enc, x in zip(self.modality_encoders, xs)]                        # M x (B, T, 3d)
        z = [self.regress(torch.cat(hs, dim=-1))]                                          # (B, P)
        if self.modal_interaction is not None:
            z.append(self.proj(self.modal_interaction(torch.cat(xs, dim=-1))))             # (B, P)
        z = torch.cat(z, dim=-1)
        return {"intensity": torch.sigmoid(self.intensity_layer(z)), "logits": self.class_layer(z)}


# -- the authors' checkpoints ----------------------------------------------------------------------------------
CHECKPOINT_PREFIXES = {"ema": ("model_ema.module.", "model_ema."), "raw": ("model.",)}


def authors_state_dict(obj: dict, weights: str = "ema") -> dict[str, torch.Tensor]:
    """The model's state dict from what the authors' code saves.

    ``obj`` is a plain state dict (their key names) or a Lightning checkpoint (``{"state_dict": {...}}``
    with ``model.`` and ``model_ema.`` prefixes); ``weights`` picks the EMA copy (``"ema"``, the one
    they validate) or the raw weights (``"raw"``) when both are there.
    """
    if weights not in CHECKPOINT_PREFIXES:
        raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict):
        raise ValueError(f"not a state dict or a Lightning checkpoint (got {type(obj).__name__})")
    other = "raw" if weights == "ema" else "ema"
    for prefix in CHECKPOINT_PREFIXES[weights] + CHECKPOINT_PREFIXES[other]:
        picked = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if picked:
            return picked
    return dict(sd)


def load_authors_weights(model: ERIAuthors, source: str | Path | dict, weights: str = "ema") -> ERIAuthors:
    """Load the authors' weights strictly (every key, every shape) into ``model``; returns it in eval mode.

    ``source`` is a path (read with ``weights_only=True``) or an already loaded dict; errors name the file
    and the keys that do not match.
    """
    name = str(source) if not isinstance(source, dict) else "state dict"
    if not isinstance(source, dict):
        try:
            source = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"{name}: unreadable authors' checkpoint ({type(exc).__name__}: {exc})") from exc
    sd = authors_state_dict(source, weights)
    try:
        result = model.load_state_dict(sd, strict=False)
    except RuntimeError as exc:  # shapes that differ
        raise ValueError(f"{name}: does not match eri_authors {model.args.input_dims}: {exc}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{name}: does not match eri_authors {model.args.input_dims}: "
                         f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]} "
                         f"({len(result.missing_keys)} missing, {len(result.unexpected_keys)} unexpected)")
    return model.eval()
