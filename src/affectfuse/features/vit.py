"""ViT-B/16 (torchvision) CLS embeddings of face crops: (N, 224, 224, 3) uint8 RGB -> (N, 768) float32.

The paper's visual branch pairs POSTER V2 with a ViT-B/16 first fine-tuned on AffectNet-7. Weights:

- default: torchvision's ImageNet file ``vit_b_16-c867db91.pth`` (from the torch hub cache, a path or
  ``$AFFECTFUSE_VIT_B16``);
- a user's AffectNet-finetuned file by path (``weights=PATH``), either in torchvision naming or in timm
  naming (``blocks.0.attn.qkv.weight`` ...), which :func:`timm_to_torchvision` maps. A classification head in
  the file (``heads.head.*`` / ``head.*``, e.g. 7 AffectNet classes) is kept for :meth:`ViTB16.logits`.

The embedding is the class token after the encoder's final LayerNorm (the head's input). ImageNet mean/std.
"""

from __future__ import annotations

import re

import torch
import torchvision
from torch import nn

from affectfuse.faces.plan import FacePlan
from affectfuse.features.face_common import (IMAGENET_MEAN, IMAGENET_STD, TorchFaceExtractor, load_into,
                                             resolve_state)
from affectfuse.weights import WeightsSpec

VIT_B16_IMAGENET = WeightsSpec(
    name="vit_b_16.imagenet",
    filename="vit_b_16-c867db91.pth",
    sha256=None,  # not computable offline; torchvision's file name carries the first 8 hex digits
    url="https://download.pytorch.org/models/vit_b_16-c867db91.pth",
    licence="BSD-3-Clause (torchvision); trained on ImageNet-1k (non-commercial research terms of ImageNet)",
    source="torchvision.models.ViT_B_16_Weights.IMAGENET1K_V1 (Dosovitskiy et al. 2021)",
    env_var="AFFECTFUSE_VIT_B16",
    input_size=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD,
)
EMBED_DIM = 768

_TIMM_RULES = [
    (r"^cls_token$", "class_token"),
    (r"^pos_embed$", "encoder.pos_embedding"),
    (r"^patch_embed\.proj\.", "conv_proj."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.encoder_layer_\1.ln_1."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.encoder_layer_\1.ln_2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", r"encoder.layers.encoder_layer_\1.self_attention.in_proj_\2"),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.encoder_layer_\1.self_attention.out_proj."),
    (r"^blocks\.(\d+)\.mlp\.fc1\.", r"encoder.layers.encoder_layer_\1.mlp.0."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"encoder.layers.encoder_layer_\1.mlp.3."),
    (r"^norm\.", "encoder.ln."),
    (r"^head\.", "heads.head."),
]
# How this network's faces are cut and scaled by extract, predict and finetune alike (affectfuse.faces.plan).
PLAN = FacePlan(224, "mtcnn_box", mean=IMAGENET_MEAN, std=IMAGENET_STD)


def timm_to_torchvision(state: dict) -> dict:
    """Rename a timm ``vit_base_patch16_224`` state dict to torchvision ``vit_b_16`` names (others unchanged)."""
    if not any(k.startswith("blocks.") for k in state):
        return state
    out = {}
    for key, value in state.items():
        for pattern, repl in _TIMM_RULES:
            new, n = re.subn(pattern, repl, key)
            if n:
                key = new
                break
        out[key] = value
    return out


class ViTB16(nn.Module):
    """torchvision ViT-B/16 returning the 768-d CLS embedding; ``head`` (optional) gives class logits."""

    def __init__(self, num_classes: int | None = None):
        super().__init__()
        self.vit = torchvision.models.vit_b_16(weights=None)
        self.vit.heads = nn.Identity()
        self.head = nn.Linear(EMBED_DIM, num_classes) if num_classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 224, 224) ImageNet-normalised -> (N, 768)."""
        return self.vit(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            raise ValueError("these ViT-B/16 weights have no classification head")
        return self.head(self(x))

    def load_checkpoint(self, state: dict, source: str) -> None:
        """Load torchvision- or timm-named weights; a ``heads.head`` in the file becomes :attr:`head`."""
        state = timm_to_torchvision(state)
        if "heads.head.weight" in state:
            weight = state["heads.head.weight"]
            self.head = nn.Linear(weight.shape[1], weight.shape[0])
            self.head.load_state_dict({"weight": weight, "bias": state["heads.head.bias"]})
        load_into(self.vit, {k: v for k, v in state.items() if not k.startswith("heads.")}, source)


def vit_b16(weights=None, random_weights: bool = False, device: str = "cpu", fast: bool = True,
            precision: str = "fp32", batch_size: int = 16) -> TorchFaceExtractor:
    """Factory of ``vit-b16``: (N, 224, 224, 3) uint8 RGB -> (N, 768) float32 CLS embeddings."""
    state, path = (None, None) if random_weights else resolve_state(VIT_B16_IMAGENET, weights)
    model = ViTB16()
    if state is not None:
        model.load_checkpoint(state, path)
    return TorchFaceExtractor(model, name="vit-b16", dim=EMBED_DIM, input=PLAN,
                              weights=VIT_B16_IMAGENET, random_weights=random_weights, device=device, fast=fast,
                              precision=precision, batch_size=batch_size)
