"""FaceExpressionNet of face-api.js (Vincent Mühler; npm ``@vladmandic/face-api``), in PyTorch.

The pretrained weights ship with affectfuse (``features/weights/face_expression_net.pt``, MIT, converted
from face-api's ``face_expression_model.bin`` by ``scripts/convert_faceapi_weights.py``), so this is the
face extractor that works offline.

Network (face-api ``FaceFeatureExtractor`` + ``FaceExpressionNet``):
``x`` (N, 112, 112, 3) RGB 0-255 -> ``(x - [122.782, 117.001, 104.298]) / 255`` -> four dense blocks
(each: a stride-2 conv, then three depthwise-separable 3x3 convs with dense additive skips and ReLU;
channels 32, 64, 128, 256; the first block's stride-2 conv is a plain 3x3 conv) -> (N, 256, 7, 7)
-> 7x7 average pool -> 256-d embedding -> fully connected -> softmax over 7 classes
``neutral, happy, sad, angry, fearful, disgusted, surprised``.
Padding follows TensorFlow's ``same`` rule (for stride 2 on an even side: 0 before, 1 after).

Extractor output, ``dim = 263`` columns: ``emb_000 .. emb_255`` (the embedding, ReLU features, no unit)
then ``p_neutral, p_happy, p_sad, p_angry, p_fearful, p_disgusted, p_surprised`` (probabilities, sum 1).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from affectfuse.faces.plan import FacePlan
from affectfuse.features.face_common import TorchFaceExtractor, check_crops, fp32, load_into, resolve_state
from affectfuse.labels import EXPR_CLASSES
from affectfuse.weights import WeightsSpec

FACEAPI_CLASSES: tuple[str, ...] = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
FACEAPI_MEAN_RGB = (122.782, 117.001, 104.298)
# face-api class -> ABAW EXPR class (Neutral, Anger, Disgust, Fear, Happiness, Sadness, Surprise, Other).
FACEAPI_TO_ABAW = {"neutral": "Neutral", "angry": "Anger", "disgusted": "Disgust", "fearful": "Fear",
                   "happy": "Happiness", "sad": "Sadness", "surprised": "Surprise"}
EMBED_DIM = 256
COLUMNS = [f"emb_{i:03d}" for i in range(EMBED_DIM)] + [f"p_{c}" for c in FACEAPI_CLASSES]

FACE_EXPRESSION_WEIGHTS = WeightsSpec(
    name="faceexpressionnet.faceapi",
    filename="face_expression_net.pt",
    sha256="7f5f20611f1e0677545546337805cc01056b4c0e39aab9da71c1d40cba0cf445",
    url=None,
    licence="MIT (face-api.js, Vincent Mühler; @vladmandic/face-api) - features/weights/face-api-LICENSE.txt",
    source="npm @vladmandic/face-api 1.7.15 model/face_expression_model.bin, converted by "
           "scripts/convert_faceapi_weights.py",
    env_var="AFFECTFUSE_FACEEXPRESSIONNET",
    package_file="features/weights/face_expression_net.pt",
    input_size=(112, 112),
    mean=tuple(m / 255 for m in FACEAPI_MEAN_RGB),
    std=(1.0, 1.0, 1.0),
    extra={"classes": FACEAPI_CLASSES},
)
# How this network's faces are cut and scaled by extract, predict and finetune alike (affectfuse.faces.plan).
# Margin 0, although the shipped network reads the labelled photos better zero-shot with 0.1 (acc 0.566 vs 0.541):
# with 0.1, fine-tuning lost its gain over the probe and person-disjoint photo CV fell 0.014 (docs/face_features.md).
FACE_EXPRESSION_PLAN = FacePlan(112, "mtcnn_box", mean=FACE_EXPRESSION_WEIGHTS.mean, std=FACE_EXPRESSION_WEIGHTS.std)


def tf_same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Pad (N, C, H, W) as TensorFlow's ``same`` does: total ceil-rule padding, the odd pixel after."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad order: W then H
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class SeparableConv(nn.Module):
    """3x3 depthwise (no bias) then 1x1 pointwise (with bias): (N, C_in, H, W) -> (N, C_out, H/s, W/s)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.stride = stride  # stride 1: TF 'same' = symmetric padding 1, done inside the convolution
        self.depthwise = nn.Conv2d(c_in, c_in, 3, stride, 1 if stride == 1 else 0, groups=c_in, bias=False)
        self.pointwise = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x if self.stride == 1 else tf_same_pad(x, 3, self.stride)))


class PlainConv(nn.Module):
    """3x3 convolution with bias and TF ``same`` padding (the first layer of the network)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 2):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(c_in, c_out, 3, stride, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(tf_same_pad(x, 3, self.stride))


class DenseBlock4(nn.Module):
    """face-api ``denseBlock4``: (N, C_in, H, W) -> (N, C_out, H/2, W/2) with additive dense skips."""

    def __init__(self, c_in: int, c_out: int, first: bool = False):
        super().__init__()
        self.conv0 = PlainConv(c_in, c_out, 2) if first else SeparableConv(c_in, c_out, 2)
        self.conv1 = SeparableConv(c_out, c_out)
        self.conv2 = SeparableConv(c_out, c_out)
        self.conv3 = SeparableConv(c_out, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = F.relu(self.conv0(x))
        out2 = self.conv1(out1)
        out3 = self.conv2(F.relu(out1 + out2))
        out4 = self.conv3(F.relu(out1 + out2 + out3))
        return F.relu(out1 + out2 + out3 + out4)


class FaceExpressionNet(nn.Module):
    """(N, 3, 112, 112) normalised RGB -> (embedding (N, 256), logits (N, 7))."""

    def __init__(self):
        super().__init__()
        self.dense0 = DenseBlock4(3, 32, first=True)
        self.dense1 = DenseBlock4(32, 64)
        self.dense2 = DenseBlock4(64, 128)
        self.dense3 = DenseBlock4(128, 256)
        self.fc = nn.Linear(EMBED_DIM, len(FACEAPI_CLASSES))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dense3(self.dense2(self.dense1(self.dense0(x))))  # (N, 256, 7, 7)
        return F.avg_pool2d(x, 7, 2).flatten(1)  # (N, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Extractor output: (N, 263) = embedding (256) + softmax probabilities (7).

        The head and softmax run in float32 even under bf16 autocast, so each row's probabilities sum to 1.
        """
        emb = self.embed(x).float()
        with fp32(emb):
            return torch.cat([emb, self.fc(emb).softmax(-1)], dim=1)


class FaceExpressionExtractor(TorchFaceExtractor):
    """Extractor ``faceexpressionnet``: (N, 112, 112, 3) uint8 RGB -> (N, 263) float32 (see module doc)."""

    classes = FACEAPI_CLASSES

    def expressions(self, batch: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
        """(N, 112, 112, 3) uint8 -> (probabilities (N, 7) in [0, 1], rows sum to 1; the 7 class names)."""
        out = self(check_crops(batch, self.name))
        return out[:, EMBED_DIM:], FACEAPI_CLASSES

    @staticmethod
    def to_abaw(probs: np.ndarray) -> np.ndarray:
        """(N, 7) face-api probabilities -> (N, 8) in ABAW EXPR order (``labels.EXPR_CLASSES``); Other = 0."""
        probs = np.asarray(probs, dtype=np.float32)
        out = np.zeros((len(probs), len(EXPR_CLASSES)), np.float32)
        for j, name in enumerate(FACEAPI_CLASSES):
            out[:, EXPR_CLASSES.index(FACEAPI_TO_ABAW[name])] = probs[:, j]
        return out

    def predict_abaw(self, batch: np.ndarray) -> np.ndarray:
        """(N, 112, 112, 3) uint8 -> (N, 8) probabilities over ``labels.EXPR_CLASSES`` (Other = 0)."""
        return self.to_abaw(self.expressions(batch)[0])


def face_expression_net(weights=None, random_weights: bool = False, device: str = "cpu",
                        fast: bool = True, precision: str = "fp32", batch_size: int = 16,
                        tta: str = "none", runtime: str = "auto") -> FaceExpressionExtractor:
    """Factory of ``faceexpressionnet`` (registry). ``weights``: a path overriding the shipped file; ``tta``:
    test-time augmentation (:mod:`affectfuse.features.tta`). ``batch_size``: crops per forward pass; 16 because
    the network's activations then stay in the caches (fp32 channels-last, 1 thread: 2.3 ms CPU per crop at 16,
    3.5-3.7 at 32, 3.9-4.9 at 64; docs/benchmarks.md). ``runtime``: ``"auto"`` runs the fp32 forward pass in
    ONNX Runtime where it is installed (2.3x less CPU than PyTorch eager for this network, the same outputs to
    ~1e-5; :mod:`affectfuse.features.onnx_runtime`), ``"torch"`` forces PyTorch."""
    model = FaceExpressionNet()
    if not random_weights:
        state, path = resolve_state(FACE_EXPRESSION_WEIGHTS, weights)
        load_into(model, state, path)
    return FaceExpressionExtractor(
        model, name="faceexpressionnet", dim=EMBED_DIM + len(FACEAPI_CLASSES), input=FACE_EXPRESSION_PLAN,
        weights=FACE_EXPRESSION_WEIGHTS, random_weights=random_weights, device=device, fast=fast,
        precision=precision, batch_size=batch_size, columns=COLUMNS, tta=tta, runtime=runtime)
