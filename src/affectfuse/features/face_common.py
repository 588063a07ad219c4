"""Shared preprocessing, batching and weight-loading helpers for the face extractors.

Every face extractor takes aligned crops ``(N, S, S, 3)`` uint8 RGB (S = ``extractor.input.size``) and
returns ``(N, D)`` float32. ``extractor.input`` is its :class:`~affectfuse.faces.plan.FacePlan`: the crop
every command cuts for it (:func:`affectfuse.faces.plan.crop_faces`) and how the crop becomes a tensor.
:class:`TorchFaceExtractor` does the common work: input checks, resizing a crop of another size, the plan's
per-channel normalisation, batching, the channels-last memory format (``fast``), the numeric precision
(the plan's ``precision``, below) and ``torch.inference_mode``.

Precision policy (one for every face network):

- ``"fp32"`` (the default): float32 throughout; the features are the reference.
- ``"bf16"``: bf16 autocast over the network, asked for explicitly (faster on CPUs with AVX512-BF16 / AMX and
  on GPUs; features then differ from fp32, see docs/benchmarks.md "Precision").
- ``"auto"``: bf16 only where the hardware has bf16 units (:func:`bf16_supported`) *and* the first batch
  run both ways agrees with fp32 to cosine >= :data:`AUTO_MIN_COSINE` on every row; otherwise fp32.

Classification heads and softmax always run in float32 outside autocast (:func:`fp32`), so probabilities
sum to 1 whatever the precision. :data:`CPU_BF16_ENV` (``AFFECTFUSE_CPU_BF16=1`` or ``=0``) overrides the
CPU-capability detection, so both paths can be tested on any machine.

Letters in shape comments: N batch, S crop side in pixels, C channels, D feature dim.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from affectfuse.faces.plan import IMAGENET_MEAN, IMAGENET_STD, FacePlan  # noqa: F401 (the means re-exported)
from affectfuse.features.base import Extractor
from affectfuse.features.onnx_runtime import onnx_forward, runtime_name
from affectfuse.features.tta import TTA, averaged, parse_tta
from affectfuse.weights import WeightsSpec, resolve

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


PRECISIONS = ("fp32", "bf16", "auto")
AUTO_MIN_COSINE = 0.9999  # "auto" keeps bf16 only when every row of its first batch is this close to fp32
CPU_BF16_ENV = "AFFECTFUSE_CPU_BF16"  # "1": take the CPU as having bf16 units, "0": as not; unset: detect


def cpu_has_bf16() -> bool:
    """True when the CPU has bf16 units (AVX512-BF16 or AMX-BF16 in /proc/cpuinfo); :data:`CPU_BF16_ENV` overrides."""
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if forced:
        raise ValueError(f"{CPU_BF16_ENV}={forced!r}: expected 0 or 1 (or unset to detect)")
    try:
        flags = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return False
    return bool(re.search(r"\b(amx_bf16|avx512_bf16)\b", flags))


def bf16_supported(device: str | torch.device = "cpu") -> bool:
    """True when bf16 autocast can be faster than fp32 on ``device``: a bf16-capable GPU, or :func:`cpu_has_bf16`."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def fp32(x: torch.Tensor):
    """Context in which ops on ``x``'s device run in float32 even inside autocast (heads, softmax)."""
    return torch.autocast(x.device.type, enabled=False)


def row_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, D), (N, D) -> (N,) cosine similarity per row, in float64 (two zero rows count as equal)."""
    a, b = a.double().flatten(1), b.double().flatten(1)
    num, den = (a * b).sum(1), a.norm(dim=1) * b.norm(dim=1)
    return torch.where(den > 0, num / den.clamp_min(1e-300), (a.norm(dim=1) == b.norm(dim=1)).double())


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
        name, dim, input, weights: the :class:`Extractor` contract; ``input`` is the network's declared
            :class:`~affectfuse.faces.plan.FacePlan`.
        mean, std, scale: normalisation ``(x / scale - mean) / std`` applied to uint8 crops (None: the plan's;
            given, they replace the plan's, and :attr:`input` holds what runs).
        random_weights: True only for tests (recorded in :meth:`describe`).
        device: torch device.
        fast: channels-last memory format (float32 all the same; faster on CPUs).
        precision: ``"fp32"``, ``"bf16"`` or ``"auto"`` (see the module doc; None: the plan's, fp32 unless
            declared); :attr:`bf16` says what runs (for ``"auto"``: None until the first batch has decided).
        batch_size: crops per forward pass.
        tta: test-time augmentation, outputs averaged over views of each crop (``"none"``, ``"flip"``,
            ``"scales"``, ``"flip+scales"``; :mod:`affectfuse.features.tta`); recorded in :meth:`describe`.
        runtime: what runs the fp32 forward pass on CPU (:func:`affectfuse.features.onnx_runtime.check_runtime`):
            ``"torch"`` (the default here), ``"onnxruntime"``, ``"auto"``; bf16 and other devices run PyTorch.
    """

    modality = "face"
    rate = None

    def __init__(self, model: nn.Module, *, name: str, dim: int, input: FacePlan, weights: WeightsSpec | None,
                 mean=None, std=None, scale: float | None = None, random_weights: bool = False,
                 device: str = "cpu", fast: bool = True, precision: str | None = None, batch_size: int = 32,
                 columns: list[str] | None = None, tta: str | TTA = "none", runtime: str = "torch"):
        if not isinstance(input, FacePlan):
            raise TypeError(f"{name}: input must be a FacePlan (affectfuse.faces.plan), got {type(input).__name__}")
        given = {"mean": mean, "std": std, "scale": scale, "precision": precision}
        self.name, self.dim, self.weights = name, dim, weights
        self.input = replace(input, **{k: v for k, v in given.items() if v is not None})
        precision = self.input.precision
        self.random_weights = random_weights
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.columns = columns
        self.tta = parse_tta(tta)
        self.model = model.eval().to(self.device)
        self.fast = fast
        self.precision = check_precision(precision)
        self.bf16: bool | None = {"fp32": False, "bf16": True}.get(precision)
        if precision == "auto" and not bf16_supported(self.device):
            self.bf16 = False
        self.auto_cosine: float | None = None  # "auto": the first batch's smallest bf16-vs-fp32 row cosine
        if fast:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._onnx = onnx_forward(self.model, name, runtime, self.device)

    @property
    def mean(self) -> tuple[float, ...]:
        return self.input.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.input.std

    @property
    def scale(self) -> float:
        return self.input.scale

    def preprocess(self, batch: np.ndarray) -> torch.Tensor:
        """(N, S, S, 3) uint8 -> (N, 3, size, size) normalised float32 on the device."""
        return crops_to_tensor(batch, self.input.size, self.mean, self.std, self.scale, self.device)

    def _run(self, x: torch.Tensor, bf16: bool) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            return self.model(x).float()

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, size, size) normalised -> (N, D) float32."""
        if self.fast:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.bf16 is None:  # "auto" on bf16 hardware: keep bf16 only if this batch proves it close to fp32
            ref, fast = self._run(x, False), self._run(x, True)
            self.auto_cosine = float(row_cosine(ref, fast).min())
            self.bf16 = self.auto_cosine >= AUTO_MIN_COSINE
            if self.bf16 or self.runtime_used == "torch":
                return fast if self.bf16 else ref
            # fp32 decided: this batch too from ONNX Runtime, as every later one will be
        if self.runtime_used == "onnxruntime":
            out = self._onnx.maybe(x)
            if out is not None:
                return out
        return self._run(x, self.bf16)

    @property
    def runtime_used(self) -> str:
        """``"onnxruntime"`` or ``"torch"``: what runs the fp32 forward pass now."""
        return "torch" if self.bf16 else runtime_name(self._onnx)

    def extract(self, batch: np.ndarray) -> np.ndarray:
        batch = check_crops(batch, self.name)
        outs = [averaged(self.forward, self.preprocess(batch[i:i + self.batch_size]), self.tta)
                for i in range(0, len(batch), self.batch_size)]
        if not outs:
            return np.zeros((0, self.dim), np.float32)
        return torch.cat(outs).cpu().numpy().astype(np.float32)

    def describe(self) -> dict:
        meta = super().describe()
        meta.update(parameters=count_parameters(self.model), fast=self.fast, precision=self.precision,
                    bf16=self.bf16, tta=self.tta.describe(), runtime=self.runtime_used)
        if self.auto_cosine is not None:
            meta["auto_bf16_cosine"] = round(self.auto_cosine, 7)
        if self.columns is not None:
            meta["columns"] = list(self.columns)
        return meta
