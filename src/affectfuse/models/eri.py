"""affectfuse's ERI fusion transformer (``eri_fusion``), after Li, Chen et al. (ABAW 2023, arXiv 2303.09164, Fig. 1, eqs. 1-7).

Per modality m (audio, visual, or any feature set):
    x_m = TCN(f_m) + PE                      # (B, T, D_m) -> (B, T, d)
    h_m = [x_m, MHA(x_m), TL(x_m)]           # modality encoder, 2 heads, dropout 0.5 -> (B, T, 3d)
    g_m = masked mean over time of h_m       # (B, 3d)
Interaction (when enabled, >= 2 modalities):
    x_av = [x_audio, x_visual]               # (B, T, M d)
    h_av = [x_av, MHA(x_av), TL(x_av)]       # interaction encoder, 8 heads, dropout 0.1 -> (B, T, 3 M d)
    g_av = masked mean over time             # (B, 3 M d)
g_cat = [g_audio, g_visual]                  # (B, 3 M d)
z = [P_av(g_av), P_cat(g_cat)]               # projections to ``proj_dim`` each
intensity = sigmoid(W_r z + skip)  (B, K) in [0, 1];  logits = W_c z  (B, K)
Probe-started path (``pooled_skip``; started at the ridge probe by training):
    skip = S [mean_t f_m, std_t f_m]_m + sum_m c * G_m * burst_m(f_m S_m^T)      # (B, K)
    S_m = the columns of S on modality m's means; burst (``burst_pooling``): see BurstPooling

Modality sets of the paper's Table 1: A (audio only), V (visual only), A+V (no interaction), A+V+AV.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from affectfuse.data.moments import masked_mean_std
from affectfuse.models.blocks import TCN, BurstPooling, ConcatAttentionBlock, SinusoidalPositions, masked_mean
from affectfuse.models.eri_args import ERIArchitecture
from affectfuse.models.eri_authors import ERIAuthors


@dataclass
class ERIFusionArgs(ERIArchitecture):
    """Constructor arguments of :class:`ERIFusion`; stored in checkpoints so a model rebuilds itself.

    ``input_dims`` maps modality (feature-set) name -> input feature dim, in input order.
    ``pooled_skip``: add a linear path from pooled statistics (per-video mean and std over valid rows of
    each modality) to the intensity logits, which training starts at the ridge probe's solution (see
    :func:`affectfuse.training.probes.init_pooled_skip`), so the network learns what the probe misses.
    ``burst_pooling`` (a field of :class:`ERIArchitecture`, used with ``pooled_skip``): the path also reads
    each modality's per-step projections on the probe's mean weights through :class:`BurstPooling`, with
    gains that start at 0 (the untrained model is still the probe).
    """

    input_dims: dict[str, int] = field(default_factory=lambda: {"audio": 1024, "visual": 1536})
    num_outputs: int = 7
    interaction: bool = True
    pooled_skip: bool = False


class ERIFusion(nn.Module):
    """Multimodal fusion transformer for video-level emotional reaction intensity.

    forward(features, masks):
        features: {modality: (B, T, D_m) float}; masks: {modality: (B, T) bool, True = valid step}.
        Every modality must share T. Extra keys are ignored.
    Returns {"intensity": (B, K) in [0, 1], "logits": (B, K) unnormalised class scores}.
    """

    Args = ERIFusionArgs

    def __init__(self, args: ERIFusionArgs | None = None, **kwargs):
        super().__init__()
        args = args or ERIFusionArgs(**kwargs)
        if not args.input_dims:
            raise ValueError("ERIFusion needs at least one input modality")
        if args.interaction and len(args.input_dims) < 2:
            raise ValueError(f"the interaction encoder needs >= 2 modalities, got {list(args.input_dims)}")
        self.args = args
        d, m = args.d_model, len(args.input_dims)
        self.modalities = list(args.input_dims)
        self.embed = nn.ModuleDict({k: TCN(dim, d, args.tcn_levels, args.tcn_kernel, args.tcn_dropout)
                                    for k, dim in args.input_dims.items()})
        self.positions = SinusoidalPositions(d)
        self.encoders = nn.ModuleDict({k: ConcatAttentionBlock(d, args.modality_heads, args.modality_dropout,
                                                               args.ff_dim) for k in self.modalities})
        cat_dim = 3 * d * m

        def projection() -> nn.Sequential:
            return nn.Sequential(nn.Linear(cat_dim, args.proj_dim), nn.ReLU(), nn.Dropout(args.proj_dropout))

        self.proj_cat = projection()
        if args.interaction:
            self.interaction = ConcatAttentionBlock(d * m, args.interaction_heads, args.interaction_dropout,
                                                    args.ff_dim)
            self.proj_av = projection()
        else:
            self.interaction = None
            self.proj_av = None
        fused = args.proj_dim * (2 if args.interaction else 1)
        self.intensity_head = nn.Linear(fused, args.num_outputs)
        self.class_head = nn.Linear(fused, args.num_outputs)
        pooled_dim = 2 * sum(args.input_dims.values())
        self.skip = nn.Linear(pooled_dim, args.num_outputs) if args.pooled_skip else None
        self.burst = None
        if args.pooled_skip and args.burst_pooling:
            self.burst = nn.ModuleDict({k: BurstPooling(args.num_outputs) for k in self.modalities})
            self.burst_gain = nn.Parameter(torch.zeros(m, args.num_outputs))   # (M, K), x BURST_GAIN_SCALE

    def forward(self, features: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [k for k in self.modalities if k not in features]
        if missing:
            raise KeyError(f"ERIFusion expects modalities {self.modalities}; missing {missing}")
        steps = {k: features[k].shape[1] for k in self.modalities}
        if len(set(steps.values())) != 1:
            raise ValueError(f"every modality must have the same number of steps, got {steps}")
        xs, gs, ms, pooled = [], [], [], []
        for k in self.modalities:
            f, mask = features[k], masks[k].bool()                       # (B, T, D_m), (B, T)
            f = f * mask.unsqueeze(-1).to(f.dtype)                      # invalid rows carry no signal
            if self.skip is not None:
                pooled += masked_mean_std(f, mask)                         # 2 x (B, D_m)
            x = self.positions(self.embed[k](f))                        # (B, T, d)
            x = x * mask.unsqueeze(-1).to(x.dtype)
            h = self.encoders[k](x, mask)                               # (B, T, 3d)
            gs.append(masked_mean(h, mask))                             # (B, 3d)
            xs.append(x)
            ms.append(mask)
        g_cat = torch.cat(gs, dim=-1)                                   # (B, 3 M d)
        z = [self.proj_cat(g_cat)]
        if self.interaction is not None:
            any_valid = torch.stack(ms, 0).any(0)                       # (B, T)
            h_av = self.interaction(torch.cat(xs, dim=-1), any_valid)   # (B, T, 3 M d)
            z.insert(0, self.proj_av(masked_mean(h_av, any_valid)))
        z = torch.cat(z, dim=-1)                                        # (B, P) P = proj_dim x (1 or 2)
        intensity_logits = self.intensity_head(z)
        if self.skip is not None:
            intensity_logits = intensity_logits + self.skip(torch.cat(pooled, dim=-1))
        if self.burst is not None:
            intensity_logits = intensity_logits + self._burst_logits(features, masks)
        return {"intensity": torch.sigmoid(intensity_logits), "logits": self.class_head(z)}

    def _burst_logits(self, features: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, K) burst terms of the probe-started path: each modality's steps projected on the path's
        weights for its means (the probe's direction per emotion), pooled by :class:`BurstPooling`."""
        out, start = 0.0, 0
        with torch.autocast(features[self.modalities[0]].device.type, enabled=False):   # fp32: scores differ
            for i, k in enumerate(self.modalities):                                   # by a few % at most
                f, mask = features[k].float(), masks[k].bool()          # (B, T, D_m), (B, T)
                dim = f.shape[-1]
                weight = self.skip.weight[:, start:start + dim]         # (K, D_m): the mean columns
                start += 2 * dim                                        # then the std columns
                scores = (f * mask.unsqueeze(-1).float()) @ weight.t()  # (B, T, K)
                out = out + BURST_GAIN_SCALE * self.burst_gain[i] * self.burst[k](scores, mask)
        return out


# Adam moves each parameter by about ``lr`` per step whatever its scale; the burst gains are stored divided
# by this factor so that at the default lr (1e-4) a few hundred steps can move them by O(1) (an equalised
# learning rate, Karras et al. 2018), as the path needs with a few hundred training videos.
BURST_GAIN_SCALE = 30.0

# -- registry -----------------------------------------------------------------------------------
# name -> model class; each class names its argument dataclass as ``Args``.
ERI_MODELS: dict[str, type[nn.Module]] = {"eri_fusion": ERIFusion, "eri_authors": ERIAuthors}

# Arguments added after checkpoints were first written, with the value that rebuilds such a checkpoint's model.
LEGACY_ARGS = {"eri_fusion": {"burst_pooling": False}}

# Modality sets of the paper's Table 1, by the short names used in configs and tables.
MODALITY_ALIASES = {"A": "audio", "V": "visual"}


def list_eri_models() -> list[str]:
    return sorted(ERI_MODELS)


def eri_model_args_class(name: str) -> type:
    """The argument dataclass of a registered ERI model (``ERIFusionArgs``, ``ERIAuthorsArgs``)."""
    if name not in ERI_MODELS:
        raise KeyError(f"unknown ERI model {name!r}; valid: {', '.join(list_eri_models())}")
    return ERI_MODELS[name].Args


def create_eri_model(name: str, args: dict | ERIArchitecture) -> nn.Module:
    """Build a registered model from its name and argument dict (as stored in a checkpoint)."""
    args_class = eri_model_args_class(name)
    if isinstance(args, dict):
        args = args_class(**{**LEGACY_ARGS.get(name, {}), **args})
    return ERI_MODELS[name](args)


def parse_modality_set(spec: str, available: list[str]) -> tuple[list[str], bool]:
    """Resolve a modality-set name to (modalities, interaction).

    ``spec`` is ``"all"`` (every available feature set, interaction when >= 2) or tokens joined by
    ``+``: ``A``/``V`` (audio/visual), any feature-set name, and an interaction token that joins the
    others (``AV``) or is ``X``. Examples: ``"A"``, ``"A+V"``, ``"A+V+AV"``, ``"audio+face+X"``.
    """
    if spec.strip().lower() == "all":
        return list(available), len(available) >= 2
    mods: list[str] = []
    interaction = False
    for token in [t.strip() for t in spec.split("+") if t.strip()]:
        if token.upper() == "X" or (len(token) > 1 and token.isupper() and all(c in MODALITY_ALIASES for c in token)):
            interaction = True
            continue
        name = MODALITY_ALIASES.get(token, token)
        if name not in available:
            raise ValueError(f"modality set {spec!r}: no feature set named {name!r}; given: {', '.join(available)}")
        mods.append(name)
    if not mods:
        raise ValueError(f"modality set {spec!r} names no modality")
    if interaction and len(mods) < 2:
        raise ValueError(f"modality set {spec!r}: the interaction encoder needs >= 2 modalities")
    return mods, interaction


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
