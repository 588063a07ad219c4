"""Shared preprocessing, batching and weight-loading helpers for the face extractors.

Every face extractor takes aligned crops ``(N, S, S, 3)`` uint8 RGB (S = ``extractor.input.size``) and
returns ``(N, D)`` float32. :class:`TorchFaceExtractor` does the common work: input checks, resizing a crop
of another size, per-channel normalisation, batching, an optional fast path (channels-last memory
format; bf16 autocast only where the hardware has bf16 units), and ``torch.inference_mode``.

Letters in shape comments: N batch, S crop side in pixels, C channels, D feature dim.
"""

from __future__ import annotations

import os
import re
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from affectfuse.features.base import Extractor, FaceInput
from affectfuse.weights import WeightsSpec, resolve

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


def check_crops(batch: np.ndarray, name: str) -> np.ndarray:
    """Validate a crop batch: (N, S, S, 3) uint8 RGB; a single (S, S, 3) crop is promoted to N = 1."""
    batch = np.asarray(batch)
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.shape[1] != batch.shape[2]:
        raise ValueError(f"{name}: expected aligned face crops of shape (N, S, S, 3) RGB, got {batch.shape}")
    if batch.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8 crops (0-255), got dtype {batch.dtype}")
    return batch


def crops_to_tensor(batch: np.ndarray, size: int, mean: Iterable[float], std: Iterable[float],
                    scale: float = 255.0, device: str | torch.device = "cpu") -> torch.Tensor:
    """(N, S, S, 3) uint8 -> (N, 3, size, size) float32: ``((x / scale) - mean) / std``.

    Crops of another side are resized bilinearly (antialiased when shrinking) to ``size``.
    """
    x = torch.from_numpy(np.ascontiguousarray(batch)).to(device).permute(0, 3, 1, 2).float()  # (N, 3, S, S)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > size).clamp_(0, 255)
    mean_t = torch.tensor(list(mean), dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(list(std), dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return (x / scale - mean_t) / std_t


def bf16_supported() -> bool:
    """True when bf16 autocast is likely to be faster than fp32 (a CUDA device, or a CPU with AMX/AVX512-BF16)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return False
    return bool(re.search(r"\b(amx_bf16|avx512_bf16)\b", flags))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def strip_prefix(state: dict, prefixes: Iterable[str] = ("module.",)) -> dict:
    """Drop wrapper prefixes (``module.`` from DataParallel) from every key."""
    out = {}
    for key, value in state.items():
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def load_into(model: nn.Module, state: dict, source: str, ignore: Callable[[str], bool] = lambda k: False) -> None:
    """Load ``state`` strictly except for keys ``ignore`` accepts; a mismatch names the file and the keys."""
    own = model.state_dict()
    unexpected = [k for k in state if k not in own and not ignore(k)]
    missing = [k for k in own if k not in state]
    wrong = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if unexpected or missing or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if wrong:
            parts.append("shape mismatch " + ", ".join(
                f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in wrong[:3]))
        raise ValueError(f"{source}: not a {type(model).__name__} checkpoint: " + "; ".join(parts))
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)


def resolve_state(spec: WeightsSpec, weights: str | os.PathLike | None) -> tuple[dict, str]:
    """Find ``spec``'s file (an explicit path first; sha256-checked when declared) and load its tensors.

    Returns ``(state_dict, path)``; a checkpoint dict holding ``state_dict`` or ``model`` is unwrapped.
    """
    path = resolve(spec, weights)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated file, pickle with code, not a torch file ...
        raise ValueError(f"{path}: cannot read weights '{spec.name}' ({type(exc).__name__}: {exc})") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: weights '{spec.name}' hold a {type(state).__name__}, not a state dict")
    return strip_prefix(state), str(path)


class TorchFaceExtractor(Extractor):
    """A face extractor around a torch module mapping (N, 3, S, S) float -> (N, D) float.

    Args:
        model: the network; ``model(x)`` returns ``(N, D)``.
        name, dim, input, weights: the :class:`Extractor` contract.
        mean, std, scale: normalisation ``(x / scale - mean) / std`` applied to uint8 crops.
        random_weights: True only for tests (recorded in :meth:`describe`).
        device: torch device.
        fast: use the fast path (channels-last; bf16 autocast when :func:`bf16_supported`).
        batch_size: crops per forward pass.
    """

    modality = "face"
    rate = None

    def __init__(self, model: nn.Module, *, name: str, dim: int, input: FaceInput, weights: WeightsSpec | None,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, scale: float = 255.0, random_weights: bool = False,
                 device: str = "cpu", fast: bool = True, batch_size: int = 32, columns: list[str] | None = None):
        self.name, self.dim, self.input, self.weights = name, dim, input, weights
        self.mean, self.std, self.scale = tuple(mean), tuple(std), scale
        self.random_weights = random_weights
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.columns = columns
        self.model = model.eval().to(self.device)
        self.fast = fast
        self.autocast_bf16 = fast and bf16_supported()
        if fast:
            self.model = self.model.to(memory_format=torch.channels_last)

    def preprocess(self, batch: np.ndarray) -> torch.Tensor:
        """(N, S, S, 3) uint8 -> (N, 3, size, size) normalised float32 on the device."""
        return crops_to_tensor(batch, self.input.size, self.mean, self.std, self.scale, self.device)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, size, size) normalised -> (N, D) float32."""
        if self.fast:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast_bf16):
            out = self.model(x)
        return out.float()

    def extract(self, batch: np.ndarray) -> np.ndarray:
        batch = check_crops(batch, self.name)
        outs = [self.forward(self.preprocess(batch[i:i + self.batch_size]))
                for i in range(0, len(batch), self.batch_size)]
        if not outs:
            return np.zeros((0, self.dim), np.float32)
        return torch.cat(outs).cpu().numpy().astype(np.float32)

    def describe(self) -> dict:
        meta = super().describe()
        meta.update(parameters=count_parameters(self.model), fast=self.fast, bf16=self.autocast_bf16)
        if self.columns is not None:
            meta["columns"] = list(self.columns)
        return meta
