"""Training precision: bf16 autocast for a model's trunk where the hardware has bf16 units, fp32 elsewhere.

``train.precision`` (ERI) is ``auto`` (default), ``fp32`` or ``bf16``:

- ``auto``: bf16 on a CPU with bf16 units (AVX512-BF16 or AMX; ``AFFECTFUSE_CPU_BF16=1``/``=0`` forces the
  detection, as for the extractors) or a bf16-capable GPU; fp32 otherwise. On a CPU without bf16 units bf16
  matmuls are emulated and slower than fp32, so ``auto`` never picks bf16 there.
- ``bf16``: autocast to bf16 whatever the hardware (slow where emulated, but it runs).
- ``fp32``: no autocast.

Only the forward pass of the trunk runs under autocast (matmuls and convolutions in bf16, accumulation in
fp32); the parameters, gradients, optimizer state and EMA copy stay fp32, and the modules named in
:data:`FP32_MODULES` (the output heads, the probe-started path) run in fp32 on fp32 inputs, as do the
sigmoid/softmax outputs and the losses computed from them. docs/benchmarks.md ("ERI training step") has the
measurements behind the default.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from affectfuse.features.face_common import bf16_supported

TRAIN_PRECISIONS = ("auto", "fp32", "bf16")
# Output layers kept in fp32 under autocast: the heads whose outputs go to the sigmoid and the losses
# (eri_fusion's intensity_head/class_head, eri_authors' intensity_layer/class_layer), and eri_fusion's
# linear path from pooled statistics (started at the ridge probe: its 5,120 inputs would lose their
# precision in bf16).
FP32_MODULES = ("intensity_head", "class_head", "skip", "intensity_layer", "class_layer")


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """``auto`` / ``fp32`` / ``bf16`` -> the precision a run uses on ``device`` (``fp32`` or ``bf16``).

    Raises:
        ValueError: an unknown value.
    """
    if precision not in TRAIN_PRECISIONS:
        raise ValueError(f"train.precision must be one of {', '.join(TRAIN_PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return precision


def autocast(precision: str, device: str | torch.device = "cpu"):
    """The context a forward pass of the trunk runs in: bf16 autocast for ``bf16``, nothing for ``fp32``."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


_saved_states: list[tuple[str, bool]] = []


def _enter_fp32(module: nn.Module, args: tuple):
    """Forward pre-hook: autocast off for this module, its floating inputs as float32."""
    device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
    _saved_states.append((device, torch.is_autocast_enabled(device)))
    torch.set_autocast_enabled(device, False)
    return tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def _leave_fp32(module: nn.Module, args: tuple, output):
    """Forward hook: autocast back as it was before :func:`_enter_fp32`."""
    device, enabled = _saved_states.pop()
    torch.set_autocast_enabled(device, enabled)
    return output


def keep_heads_in_fp32(model: nn.Module) -> list[str]:
    """Run ``model``'s output modules (:data:`FP32_MODULES`, at any depth) in fp32 even inside autocast.

    Hooks, not a change of the model: the weights and state_dict keys stay as they are, and without
    autocast the hooks change nothing (inputs are already fp32). An exception inside a head leaves the
    state to the enclosing ``torch.autocast``, which restores it on exit. Returns the names of the modules
    hooked."""
    hooked = []
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in FP32_MODULES and not getattr(module, "_affectfuse_fp32", False):
            module.register_forward_pre_hook(_enter_fp32)
            module.register_forward_hook(_leave_fp32)
            module._affectfuse_fp32 = True
            hooked.append(name)
    return hooked
