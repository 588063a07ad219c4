"""POSTER V2 (Mao et al. 2023, "POSTER V2: A simpler and stronger facial expression recognition network").

Our implementation of the architecture, laid out so the official checkpoints load through
:func:`map_official_keys`. Pipeline (letters: N batch; shapes for the official 224 input):

1. ``x`` (N, 3, 224, 224) ImageNet-normalised -> nearest resize to 112 (as the official forward does);
2. landmark backbone MobileFaceNet (frozen in training) -> queries f3 (N, 64, 28, 28), f4 (N, 128, 14, 14),
   ``landmark_proj``(f5) (N, 256, 7, 7);
3. image backbone IR-50 (stages 1-3) -> (N, 64, 56, 56), (N, 128, 28, 28), (N, 256, 14, 14), each then
   halved by a stride-2 3x3 conv (``down``) to the landmark maps' sizes;
4. per scale, window cross-attention (:class:`WindowCrossAttention`): LayerNorm'd image features cut into
   windows (28, 14, 7 = whole maps) give keys and values, the landmark features of the window's size are the
   queries (2, 4, 8 heads of 32 dims; Swin-style relative position bias); then a layer-scaled residual and
   an MLP block, both residual branches under stochastic depth (DropPath) at rates 0, 0.125, 0.25 for the
   three scales, as in the reference (``linspace(0, 0.5, 5)[:3]``); active in training mode only;
5. tokens: scale 1 -> two stride-2 3x3 convs, scale 2 -> one, scale 3 -> 1x1 conv; 3 x 49 = 147 tokens of 768;
6. a 2-block ViT (:class:`TokenFuser`, 8 heads) with a class token -> LayerNorm -> SE gating -> the 768-d
   embedding; ``head`` Linear(768, 7) gives AffectNet-7 logits.

Extractors: ``posterv2`` (768-d) and ``posterv2-vit`` (1536-d = [POSTER V2 | ViT-B/16], the ABAW 2023 ERI
winner's visual feature), both on (N, 224, 224, 3) uint8 RGB crops.
"""

from __future__ import annotations

import re
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth

from affectfuse.faces.plan import FacePlan
from affectfuse.features.face_common import (IMAGENET_MEAN, IMAGENET_STD, TorchFaceExtractor, fp32, load_into,
                                             resolve_state)
from affectfuse.features.ir50 import IR50, map_ir50_key
from affectfuse.features.mobilefacenet import MobileFaceNet, map_mobilefacenet_key
from affectfuse.features.vit import EMBED_DIM as VIT_DIM
from affectfuse.features.vit import ViTB16, timm_to_torchvision
from affectfuse.weights import WeightsSpec

AFFECTNET7 = ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger")  # ImageFolder order 0-6
EMBED_DIM = 768
DROP_PATH = (0.0, 0.125, 0.25)  # per scale, the reference's stochastic depth rates


class WindowCrossAttention(nn.Module):
    """Image windows (keys/values) attended by landmark queries, with relative position bias.

    Input: ``x`` (N, C, H, W) image features, ``q`` (N, C, w, w) landmark features (w = window side).
    Output: (N, H, W, C) = the attention output plus the LayerNorm'd input, then an MLP residual.
    ``drop_path``: probability of dropping each residual branch per sample in training (scaled by
    ``1 / (1 - p)`` when kept, timm's DropPath); identity in eval.
    """

    def __init__(self, dim: int, heads: int, window: int, mlp_ratio: float = 4.0, layer_scale: float = 1e-5,
                 drop_path: float = 0.0):
        super().__init__()
        self.heads, self.window = heads, window
        self.down = nn.Conv2d(dim, dim, 3, 2, 1)
        self.norm = nn.LayerNorm(dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rel_bias = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.rel_bias, std=0.02)
        idx = torch.arange(window)
        yy, xx = torch.meshgrid(idx, idx, indexing="ij")
        yy, xx = yy.flatten(), xx.flatten()
        rel = (yy[:, None] - yy[None] + window - 1) * (2 * window - 1) + (xx[:, None] - xx[None] + window - 1)
        self.register_buffer("rel_index", rel, persistent=False)  # (w*w, w*w)
        self.gamma1 = nn.Parameter(torch.full((dim,), layer_scale))
        self.gamma2 = nn.Parameter(torch.full((dim,), layer_scale))
        self.mlp_norm = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(OrderedDict(fc1=nn.Linear(dim, hidden), act=nn.GELU(), fc2=nn.Linear(hidden, dim)))
        self.drop_path = StochasticDepth(drop_path, mode="row")  # no parameters: checkpoints keep their keys

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.down(x).permute(0, 2, 3, 1))  # (N, H, W, C)
        n, h, w, c = x.shape
        s, nh, hd = self.window, self.heads, c // self.heads
        win = x.reshape(n, h // s, s, w // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, s * s, c)  # (N*nW, s*s, C)
        k, v = self.kv(win).reshape(win.shape[0], s * s, 2, nh, hd).permute(2, 0, 3, 1, 4)  # (N*nW, nh, s*s, hd)
        query = q.permute(0, 2, 3, 1).reshape(n, 1, s * s, nh, hd).permute(0, 1, 3, 2, 4)  # (N, 1, nh, s*s, hd)
        query = query.expand(n, win.shape[0] // n, nh, s * s, hd).reshape(-1, nh, s * s, hd)
        bias = self.rel_bias[self.rel_index].permute(2, 0, 1).to(query.dtype)  # (nh, s*s, s*s)
        out = F.scaled_dot_product_attention(query, k, v, attn_mask=bias.unsqueeze(0))
        out = self.proj(out.transpose(1, 2).reshape(-1, s * s, c))  # (N*nW, s*s, C)
        out = out.reshape(n, h // s, w // s, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(n, h, w, c)
        x = x + self.drop_path(self.gamma1 * out)
        return x + self.drop_path(self.gamma2 * self.mlp(self.mlp_norm(x)))


class FuserBlock(nn.Module):
    """Pre-norm transformer block (LayerNorm eps 1e-6, 8 heads, MLP x4, GELU): (N, T, D) -> (N, T, D)."""

    def __init__(self, dim: int = EMBED_DIM, heads: int = 8):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TokenFuser(nn.Module):
    """Class token + learned positions -> blocks -> LayerNorm -> class token -> SE gate: (N, 147, D) -> (N, D)."""

    def __init__(self, tokens: int = 147, dim: int = EMBED_DIM, depth: int = 2):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens + 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*(FuserBlock(dim) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.se_fc1 = nn.Linear(dim, dim)
        self.se_fc2 = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], 1) + self.pos_embed
        cls = self.norm(self.blocks(x))[:, 0]
        return cls * torch.sigmoid(self.se_fc2(F.relu(self.se_fc1(cls))))


class PosterV2(nn.Module):
    """(N, 3, S, S) ImageNet-normalised (S = 224 officially) -> (N, 768) embedding; :meth:`logits` -> (N, 7)."""

    def __init__(self, num_classes: int = 7, dims=(64, 128, 256), heads=(2, 4, 8), windows=(28, 14, 7),
                 drop_path=DROP_PATH):
        super().__init__()
        self.landmark_backbone = MobileFaceNet()
        self.landmark_proj = nn.Conv2d(512, dims[2], 3, 1, 1)
        self.image_backbone = IR50()
        self.scales = nn.ModuleList(WindowCrossAttention(d, h, w, drop_path=p)
                                    for d, h, w, p in zip(dims, heads, windows, drop_path))
        self.to_tokens = nn.ModuleList([  # (N, C_i, w_i, w_i) -> (N, 768, 7, 7)
            nn.Sequential(nn.Conv2d(dims[0], EMBED_DIM, 3, 2, 1), nn.Conv2d(EMBED_DIM, EMBED_DIM, 3, 2, 1)),
            nn.Sequential(nn.Conv2d(dims[1], EMBED_DIM, 3, 2, 1)),
            nn.Sequential(nn.Conv2d(dims[2], EMBED_DIM, 1))])
        self.fuser = TokenFuser(tokens=3 * (windows[2] ** 2))
        self.head = nn.Linear(EMBED_DIM, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 112:
            x = F.interpolate(x, size=112)  # nearest, as in the official forward
        f3, f4, f5 = self.landmark_backbone(x)
        queries = (f3, f4, self.landmark_proj(f5))
        feats = self.image_backbone(x)
        tokens = [embed(scale(feat, q).permute(0, 3, 1, 2)).flatten(2).transpose(1, 2)  # (N, 49, 768)
                  for scale, embed, feat, q in zip(self.scales, self.to_tokens, feats, queries)]
        return self.fuser(torch.cat(tokens, 1))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 224, 224) -> (N, 7) AffectNet-7 logits (classes :data:`AFFECTNET7`), the head in float32."""
        emb = self(x)
        with fp32(emb):
            return self.head(emb.float())


# ---- official checkpoint names -> ours -------------------------------------------------------------------
_UNUSED = re.compile(r"^(VIT\.(patch_embed|CON1|IRLinear1|IRLinear2|eca_block)\.|VIT\.blocks\.\d+\.conv\.|"
                     r"attn\d\.relative_position_index$)")
_RULES = [
    (r"^conv([123])\.", lambda m: f"scales.{int(m[1]) - 1}.down."),
    (r"^window([123])\.norm\.", lambda m: f"scales.{int(m[1]) - 1}.norm."),
    (r"^attn([123])\.qkv\.", lambda m: f"scales.{int(m[1]) - 1}.kv."),
    (r"^attn([123])\.proj\.", lambda m: f"scales.{int(m[1]) - 1}.proj."),
    (r"^attn([123])\.relative_position_bias_table$", lambda m: f"scales.{int(m[1]) - 1}.rel_bias"),
    (r"^ffn([123])\.gamma([12])$", lambda m: f"scales.{int(m[1]) - 1}.gamma{m[2]}"),
    (r"^ffn([123])\.norm\.", lambda m: f"scales.{int(m[1]) - 1}.mlp_norm."),
    (r"^ffn([123])\.mlp\.(fc[12])\.", lambda m: f"scales.{int(m[1]) - 1}.mlp.{m[2]}."),
    (r"^last_face_conv\.", lambda m: "landmark_proj."),
    (r"^embed_q\.([01])\.", lambda m: f"to_tokens.0.{m[1]}."),
    (r"^embed_k\.0\.", lambda m: "to_tokens.1.0."),
    (r"^embed_v\.proj\.", lambda m: "to_tokens.2.0."),
    (r"^VIT\.(cls_token|pos_embed)$", lambda m: f"fuser.{m[1]}"),
    (r"^VIT\.blocks\.(\d+)\.(norm1|norm2)\.", lambda m: f"fuser.blocks.{m[1]}.{m[2]}."),
    (r"^VIT\.blocks\.(\d+)\.attn\.(qkv|proj)\.", lambda m: f"fuser.blocks.{m[1]}.{m[2]}."),
    (r"^VIT\.blocks\.(\d+)\.mlp\.(fc[12])\.", lambda m: f"fuser.blocks.{m[1]}.{m[2]}."),
    (r"^VIT\.norm\.", lambda m: "fuser.norm."),
    (r"^VIT\.se_block\.linear([12])\.", lambda m: f"fuser.se_fc{m[1]}."),
    (r"^VIT\.head\.linear\.", lambda m: "head."),
]


def map_official_keys(state: dict) -> dict:
    """Official POSTER V2 state dict (``pyramid_trans_expr2``; ``module.`` already stripped) -> ours.

    Parts the official forward never uses (``VIT.patch_embed``, ``VIT.CON1``, ``VIT.IRLinear*``,
    ``VIT.eca_block``, ``VIT.blocks.*.conv``, the IR-50 ``output_layer``, the cached relative position indices)
    are dropped; our own keys pass through unchanged.
    """
    out = {}
    for key, value in state.items():
        if _UNUSED.match(key):
            continue
        if key.startswith("ir_back."):
            new = map_ir50_key(key[len("ir_back."):])
            if new is not None:
                out["image_backbone." + new] = value
            continue
        if key.startswith("face_landback."):
            out["landmark_backbone." + map_mobilefacenet_key(key[len("face_landback."):])] = value
            continue
        for pattern, repl in _RULES:
            m = re.match(pattern, key)
            if m:
                key = repl(m) + key[m.end():]
                break
        out[key] = value
    return out


POSTERV2_AFFECTNET7 = WeightsSpec(
    name="posterv2.affectnet7", filename="affectnet-7-model_best.pth", sha256=None,
    url=None, licence="MIT (POSTER V2 code, Talented-Q/POSTER_V2); trained on AffectNet - research use only",
    source="POSTER V2 AffectNet-7 checkpoint from https://github.com/Talented-Q/POSTER_V2 (Google Drive link in "
           "its README), or one you trained; official or affectfuse naming",
    env_var="AFFECTFUSE_POSTERV2", input_size=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD,
    extra={"classes": AFFECTNET7})
POSTERV2_VIT_JOINT = WeightsSpec(
    name="posterv2-vit.joint", filename="posterv2_vit_joint.pth", sha256=None, url=None,
    licence="yours (trained by the user on AffectNet - research use only)",
    source="a joint PosterV2 + ViT-B/16 checkpoint: keys 'poster.*' (official or affectfuse POSTER V2 naming), "
           "'vit.*' (torchvision or timm ViT-B/16 naming), optional 'head.*' Linear(1536, 7)",
    env_var="AFFECTFUSE_POSTERV2_VIT", input_size=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD,
    extra={"classes": AFFECTNET7})
# How this network's faces are cut and scaled by extract, predict and finetune alike (affectfuse.faces.plan).
PLAN = FacePlan(224, "mtcnn_box", mean=IMAGENET_MEAN, std=IMAGENET_STD)


def load_posterv2(model: PosterV2, state: dict, source: str) -> None:
    """Load an official or affectfuse-named POSTER V2 state dict, strictly after the mapping."""
    load_into(model, map_official_keys(state), source)


class PosterV2ViT(nn.Module):
    """[POSTER V2 (768) | ViT-B/16 CLS (768)] = (N, 1536) from one (N, 3, 224, 224) ImageNet-normalised batch."""

    def __init__(self, num_classes: int = 7):
        super().__init__()
        self.poster = PosterV2(num_classes)
        self.vit = ViTB16()
        self.head = nn.Linear(EMBED_DIM + VIT_DIM, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.poster(x), self.vit(x)], 1)

    def load_joint(self, state: dict, source: str) -> None:
        """Keys ``poster.*``, ``vit.*`` (prefix ``vit.vit.`` or ``vit.``) and optional ``head.*``."""
        poster = {k[len("poster."):]: v for k, v in state.items() if k.startswith("poster.")}
        vit = {k[len("vit."):]: v for k, v in state.items() if k.startswith("vit.")}
        vit = {k[len("vit."):] if k.startswith("vit.") else k: v for k, v in vit.items()}
        if not poster or not vit:
            raise ValueError(f"{source}: not a joint PosterV2-ViT checkpoint (need keys 'poster.*' and 'vit.*')")
        load_posterv2(self.poster, poster, source)
        self.vit.load_checkpoint(timm_to_torchvision(vit), source)
        if "head.weight" in state:
            self.head.load_state_dict({"weight": state["head.weight"], "bias": state["head.bias"]})


def posterv2(weights=None, random_weights: bool = False, device: str = "cpu", fast: bool = True,
             precision: str = "fp32", batch_size: int = 16) -> TorchFaceExtractor:
    """Factory of ``posterv2``: (N, 224, 224, 3) uint8 RGB -> (N, 768) float32 embedding."""
    state, path = (None, None) if random_weights else resolve_state(POSTERV2_AFFECTNET7, weights)
    model = PosterV2()
    if state is not None:
        load_posterv2(model, state, path)
    return TorchFaceExtractor(model, name="posterv2", dim=EMBED_DIM, input=PLAN,
                              weights=POSTERV2_AFFECTNET7, random_weights=random_weights, device=device, fast=fast,
                              precision=precision, batch_size=batch_size)


def posterv2_vit(weights=None, random_weights: bool = False, device: str = "cpu", fast: bool = True,
                 precision: str = "fp32", batch_size: int = 16) -> TorchFaceExtractor:
    """Factory of ``posterv2-vit``: (N, 224, 224, 3) uint8 RGB -> (N, 1536) = [POSTER V2 | ViT-B/16]."""
    state, path = (None, None) if random_weights else resolve_state(POSTERV2_VIT_JOINT, weights)
    model = PosterV2ViT()
    if state is not None:
        model.load_joint(state, path)
    return TorchFaceExtractor(model, name="posterv2-vit", dim=EMBED_DIM + VIT_DIM, input=PLAN,
                              weights=POSTERV2_VIT_JOINT, random_weights=random_weights, device=device, fast=fast,
                              precision=precision, batch_size=batch_size)
