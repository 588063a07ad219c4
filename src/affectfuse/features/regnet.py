"""RegNetY-1.6GF (torchvision, ImageNet) penultimate features for face crops: (N, 224, 224, 3) -> (N, 888).

The paper's EXPR system stitches "RegNet trained on ImageNet" features with InceptionResnetV1 ones. We use
torchvision's ``regnet_y_1_6gf`` ``IMAGENET1K_V2`` weights: among torchvision's RegNetY sizes it gives the best
ImageNet accuracy per FLOP below 2 GFLOPs (80.9 % top-1 at 1.6 GFLOPs and 11.2 M parameters, against 75.8 % for
400MF and 81.98 % for 3.2GF at twice the cost), so features stay cheap per video frame on a laptop CPU.
Output: the global-average-pooled trunk (the input of ``fc``), 888-d, non-negative (after ReLU).
"""

from __future__ import annotations

import torchvision
from torch import nn

from affectfuse.faces.plan import FacePlan
from affectfuse.features.face_common import (IMAGENET_MEAN, IMAGENET_STD, TorchFaceExtractor, load_into,
                                             resolve_state)
from affectfuse.weights import WeightsSpec

REGNET_Y_1_6GF_WEIGHTS = WeightsSpec(
    name="regnet_y_1_6gf.imagenet",
    filename="regnet_y_1_6gf-0d7bc02a.pth",
    sha256=None,  # not computable offline; torchvision's file name carries the first 8 hex digits
    url="https://download.pytorch.org/models/regnet_y_1_6gf-0d7bc02a.pth",
    licence="BSD-3-Clause (torchvision); trained on ImageNet-1k (non-commercial research terms of ImageNet)",
    source="torchvision.models.RegNet_Y_1_6GF_Weights.IMAGENET1K_V2 (Radosavovic et al. 2020)",
    env_var="AFFECTFUSE_REGNET_Y",
    input_size=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD,
)
FEATURE_DIM = 888
# How this network's faces are cut and scaled by extract, predict and finetune alike (affectfuse.faces.plan).
PLAN = FacePlan(224, "mtcnn_box", mean=IMAGENET_MEAN, std=IMAGENET_STD)


def regnet_y_trunk() -> nn.Module:
    """torchvision RegNetY-1.6GF with ``fc`` replaced by identity: (N, 3, 224, 224) -> (N, 888)."""
    model = torchvision.models.regnet_y_1_6gf(weights=None)
    model.fc = nn.Identity()
    return model


def regnet_y(weights=None, random_weights: bool = False, device: str = "cpu", fast: bool = True,
             precision: str = "fp32", batch_size: int = 32) -> TorchFaceExtractor:
    """Factory of ``regnet-y``: (N, 224, 224, 3) uint8 RGB -> (N, 888) float32 (ImageNet-normalised input)."""
    state, path = (None, None) if random_weights else resolve_state(REGNET_Y_1_6GF_WEIGHTS, weights)
    model = regnet_y_trunk()
    if state is not None:
        load_into(model, state, path, ignore=lambda k: k.startswith("fc."))
    return TorchFaceExtractor(model, name="regnet-y", dim=FEATURE_DIM, input=PLAN,
                              weights=REGNET_Y_1_6GF_WEIGHTS, random_weights=random_weights, device=device,
                              fast=fast, precision=precision, batch_size=batch_size)
