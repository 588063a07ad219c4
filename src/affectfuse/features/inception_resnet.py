"""InceptionResnetV1 face-recognition embeddings (FaceNet; Szegedy et al. 2017, Schroff et al. 2015).

Our implementation of the architecture that David Sandberg's FaceNet models use, with parameter names of the
facenet-pytorch state-dict files, so their converted weights load as they are:

- ``20180402-114759-vggface2.pt`` (trained on VGGFace2) -> extractor ``inception-resnet-v1-vggface2``;
- ``20180408-102900-casia-webface.pt`` (trained on CASIA-WebFace) -> ``inception-resnet-v1-casia``.

Input: (N, 160, 160, 3) uint8 RGB aligned crops, standardised as FaceNet's ``fixed_image_standardization``:
``(x - 127.5) / 128``. Output: (N, 512) float32, the L2-normalised embedding (unit length; cosine = dot).
Weights are not on a package registry; users download the two files once (facenet-pytorch release v2.2.9).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from affectfuse.faces.plan import FacePlan
from affectfuse.features.face_common import TorchFaceExtractor, load_into, resolve_state
from affectfuse.weights import WeightsSpec

RELEASE = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
LICENCE = ("MIT (facenet-pytorch code); weights from David Sandberg's facenet models, trained on "
           "VGGFace2 / CASIA-WebFace - research use, check the dataset terms")
WEIGHTS = {
    "vggface2": WeightsSpec(
        name="inception_resnet_v1.vggface2", filename="20180402-114759-vggface2.pt",
        url=RELEASE + "20180402-114759-vggface2.pt",
        licence=LICENCE, source="facenet-pytorch v2.2.9 release (Sandberg 20180402-114759, VGGFace2)",
        env_var="AFFECTFUSE_IRV1_VGGFACE2", input_size=(160, 160), mean=(0.5, 0.5, 0.5), std=(128 / 255,) * 3,
        extra={"classes": 8631}),
    "casia-webface": WeightsSpec(
        name="inception_resnet_v1.casia-webface", filename="20180408-102900-casia-webface.pt",
        url=RELEASE + "20180408-102900-casia-webface.pt", licence=LICENCE,
        source="facenet-pytorch v2.2.9 release (Sandberg 20180408-102900, CASIA-WebFace)",
        env_var="AFFECTFUSE_IRV1_CASIA", input_size=(160, 160), mean=(0.5, 0.5, 0.5), std=(128 / 255,) * 3,
        extra={"classes": 10575}),
}
# How this network's faces are cut and scaled by extract, predict and finetune alike (affectfuse.faces.plan).
# facenet-pytorch fixed_image_standardization: (x - 127.5) / 128, the same for both weight files.
PLAN = FacePlan(160, "mtcnn_box", mean=(0.5, 0.5, 0.5), std=(128 / 255,) * 3)


class ConvBN(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3, TensorFlow's) -> ReLU; keys ``conv.*``, ``bn.*``."""

    def __init__(self, c_in: int, c_out: int, kernel, stride: int = 1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def chain(*layers: tuple) -> nn.Sequential:
    """A sequence of ConvBN from (c_in, c_out, kernel, stride, padding) tuples."""
    return nn.Sequential(*(ConvBN(*spec) for spec in layers))


class Residual(nn.Module):
    """Inception-ResNet block: x + scale * conv1x1(concat(branches(x))), then ReLU unless ``last``.

    ``branch0`` is one ConvBN, the other branches are Sequentials (facenet-pytorch key names).
    """

    def __init__(self, channels: int, branches: list[nn.Module], mixed: int, scale: float, relu: bool = True):
        super().__init__()
        for i, branch in enumerate(branches):
            setattr(self, f"branch{i}", branch)
        self.n_branches = len(branches)
        self.conv2d = nn.Conv2d(mixed, channels, 1)
        self.scale, self.relu = scale, relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([getattr(self, f"branch{i}")(x) for i in range(self.n_branches)], 1)
        out = x + self.scale * self.conv2d(mixed)
        return F.relu(out) if self.relu else out


def block35(scale: float = 0.17) -> Residual:  # 35x35 grid in the 299 network; 17x17 at 160 input
    return Residual(256, [ConvBN(256, 32, 1), chain((256, 32, 1), (32, 32, 3, 1, 1)),
                          chain((256, 32, 1), (32, 32, 3, 1, 1), (32, 32, 3, 1, 1))], 96, scale)


def block17(scale: float = 0.10) -> Residual:
    return Residual(896, [ConvBN(896, 128, 1),
                          chain((896, 128, 1), (128, 128, (1, 7), 1, (0, 3)), (128, 128, (7, 1), 1, (3, 0)))],
                    256, scale)


def block8(scale: float = 0.20, relu: bool = True) -> Residual:
    return Residual(1792, [ConvBN(1792, 192, 1),
                           chain((1792, 192, 1), (192, 192, (1, 3), 1, (0, 1)), (192, 192, (3, 1), 1, (1, 0)))],
                    384, scale, relu)


class Reduction(nn.Module):
    """Grid reduction: concat of conv branches and a 3x3/2 max pool (the last branch)."""

    def __init__(self, branches: list[nn.Module]):
        super().__init__()
        for i, branch in enumerate(branches):
            setattr(self, f"branch{i}", branch)
        self.n_branches = len(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [getattr(self, f"branch{i}")(x) for i in range(self.n_branches)]
        return torch.cat(outs + [F.max_pool2d(x, 3, 2)], 1)


class InceptionResnetV1(nn.Module):
    """(N, 3, 160, 160) standardised RGB -> (N, 512) unit-length embedding.

    ``num_classes`` adds the identity head ``logits`` (8631 VGGFace2 / 10575 CASIA identities) of the
    released files; the embedding does not use it.
    """

    def __init__(self, num_classes: int | None = None):
        super().__init__()
        self.conv2d_1a = ConvBN(3, 32, 3, 2)
        self.conv2d_2a = ConvBN(32, 32, 3)
        self.conv2d_2b = ConvBN(32, 64, 3, 1, 1)
        self.conv2d_3b = ConvBN(64, 80, 1)
        self.conv2d_4a = ConvBN(80, 192, 3)
        self.conv2d_4b = ConvBN(192, 256, 3, 2)
        self.repeat_1 = nn.Sequential(*(block35() for _ in range(5)))
        self.mixed_6a = Reduction([ConvBN(256, 384, 3, 2), chain((256, 192, 1), (192, 192, 3, 1, 1), (192, 256, 3, 2))])
        self.repeat_2 = nn.Sequential(*(block17() for _ in range(10)))
        self.mixed_7a = Reduction([chain((896, 256, 1), (256, 384, 3, 2)), chain((896, 256, 1), (256, 256, 3, 2)),
                                   chain((896, 256, 1), (256, 256, 3, 1, 1), (256, 256, 3, 2))])
        self.repeat_3 = nn.Sequential(*(block8() for _ in range(5)))
        self.block8 = block8(scale=1.0, relu=False)
        self.last_linear = nn.Linear(1792, 512, bias=False)
        self.last_bn = nn.BatchNorm1d(512, eps=1e-3)
        self.logits = nn.Linear(512, num_classes) if num_classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2d_2b(self.conv2d_2a(self.conv2d_1a(x)))  # (N, 64, 77, 77)
        x = F.max_pool2d(x, 3, 2)
        x = self.conv2d_4b(self.conv2d_4a(self.conv2d_3b(x)))  # (N, 256, 17, 17)
        x = self.mixed_6a(self.repeat_1(x))  # (N, 896, 8, 8)
        x = self.mixed_7a(self.repeat_2(x))  # (N, 1792, 3, 3)
        x = self.block8(self.repeat_3(x))
        x = self.last_bn(self.last_linear(x.mean((2, 3))))  # (N, 512)
        return F.normalize(x, p=2, dim=1)


def _factory(dataset: str, weights=None, random_weights: bool = False, device: str = "cpu",
             fast: bool = True, precision: str = "fp32", batch_size: int = 32) -> TorchFaceExtractor:
    spec = WEIGHTS[dataset]
    state, path = (None, None) if random_weights else resolve_state(spec, weights)
    model = InceptionResnetV1()  # the identity head (``logits.*`` in the files) is not part of the feature
    if state is not None:
        load_into(model, state, path, ignore=lambda k: k.startswith("logits."))
    short = "vggface2" if dataset == "vggface2" else "casia"
    return TorchFaceExtractor(model, name=f"inception-resnet-v1-{short}", dim=512, input=PLAN,
                              weights=spec, random_weights=random_weights,
                              device=device, fast=fast, precision=precision, batch_size=batch_size)


def inception_resnet_v1_vggface2(weights=None, random_weights: bool = False, device: str = "cpu", fast: bool = True,
                                 precision: str = "fp32", batch_size: int = 32) -> TorchFaceExtractor:
    """Factory of ``inception-resnet-v1-vggface2``: (N, 160, 160, 3) uint8 -> (N, 512) unit vectors."""
    return _factory("vggface2", weights, random_weights, device, fast, precision, batch_size)


def inception_resnet_v1_casia(weights=None, random_weights: bool = False, device: str = "cpu", fast: bool = True,
                              precision: str = "fp32", batch_size: int = 32) -> TorchFaceExtractor:
    """Factory of ``inception-resnet-v1-casia``: (N, 160, 160, 3) uint8 -> (N, 512) unit vectors."""
    return _factory("casia-webface", weights, random_weights, device, fast, precision, batch_size)
