"""ONNX Runtime for an extractor network's forward pass on CPU, where it beats PyTorch eager.

Which networks run here is decided by measurement (``benchmarks/bench_runtimes.py``, docs/benchmarks.md):
networks of depthwise-separable convolutions (FaceExpressionNet, MobileNetV2) spend much of their PyTorch time
in per-operator overhead and memory traffic that ONNX Runtime's fused CPU kernels avoid (2-3.7x here); the
networks whose export fails at another batch size (fer-mini-xception, POSTER V2) keep PyTorch, as does every
bf16 path.

The network is exported once (``torch.onnx.export``, the TorchScript exporter, opset 17, batch axis dynamic)
from its current weights to ``$AFFECTFUSE_CACHE_DIR/onnx`` (default ``~/.cache/affectfuse/onnx``), named by a
digest of the weights, input shape and torch version, so later processes load the file instead of exporting
(0.5-1.7 CPU-s); a weight change (fine-tuning, ``load_state_dict``) is noticed through the parameters' version
counters and exports again. Float32 only: outputs equal PyTorch's to ~1e-5.
"""

from __future__ import annotations

import hashlib
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from affectfuse.utils import atomic_path, cache_root

OPSET = 17


RUNTIMES = ("torch", "onnxruntime", "auto")


def check_runtime(runtime: str, name: str) -> str:
    """``runtime`` of an extractor: ``"torch"``; ``"onnxruntime"`` (float32 on CPU); ``"auto"``: ONNX Runtime
    where it is installed and the network runs fp32 on CPU, else torch."""
    if runtime not in RUNTIMES:
        raise ValueError(f"{name}: unknown runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
    return runtime


def onnx_forward(model: nn.Module, name: str, runtime: str, device: torch.device) -> OnnxForward | None:
    """The :class:`OnnxForward` of ``model`` that ``runtime`` asks for on ``device``, or None for PyTorch."""
    if check_runtime(runtime, name) == "torch":
        return None
    if device.type == "cpu" and onnxruntime_available():
        return OnnxForward(model, name)
    if runtime == "onnxruntime":
        raise RuntimeError(f"{name}: runtime 'onnxruntime' needs the packages onnxruntime and onnx on a CPU "
                           f"device (pip install onnxruntime onnx); runtime 'auto' falls back to torch")
    return None


def runtime_name(onnx: OnnxForward | None) -> str:
    """``"onnxruntime"`` while ``onnx`` (an extractor's :func:`onnx_forward`) is there and has not failed,
    else ``"torch"``: what an extractor's float32 forward pass runs on now (its ``describe()["runtime"]``)."""
    return "onnxruntime" if onnx is not None and not onnx.failed else "torch"


def onnxruntime_available() -> bool:
    """Whether ``onnxruntime`` and ``onnx`` (the exporter's dependency) are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def cache_dir() -> Path:
    return cache_root() / "onnx"


class OnnxForward:
    """``model``'s forward pass through an ONNX Runtime session: (N, ...) float32 tensor -> its outputs as a
    float32 tensor (one output only). ``threads``: the session's intra-op threads (default: torch's)."""

    def __init__(self, model: nn.Module, name: str, threads: int | None = None):
        self.model, self.name, self.threads = model, name, threads
        self.session, self.stamp, self.failed = None, None, False

    def maybe(self, x: torch.Tensor) -> torch.Tensor | None:
        """:meth:`__call__`, or None once an export or session has failed (warned once): the caller runs PyTorch,
        since a runtime problem must not stop an extraction."""
        if self.failed:
            return None
        try:
            return self(x)
        except Exception as exc:
            self.failed = True
            warnings.warn(f"{self.name}: ONNX Runtime not used ({type(exc).__name__}: {exc}); running PyTorch")
            return None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        stamp = (tuple(p._version for p in self.model.parameters()), tuple(x.shape[1:]))
        fresh = self.session is None or stamp != self.stamp
        if fresh:
            self.session, self.stamp = self._session(x), stamp
        out = torch.from_numpy(self.session.run(None, {"x": x.detach().cpu().contiguous().numpy()})[0])
        if fresh:  # a new export answers its first batch as PyTorch does, or is not used
            with torch.inference_mode():
                check_outputs(self.model(x).float().cpu().numpy(), out.numpy(), self.name)
        return out

    def _session(self, x: torch.Tensor):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        return ort.InferenceSession(str(self._exported(x)), options, providers=["CPUExecutionProvider"])

    def _exported(self, x: torch.Tensor) -> Path:
        """The ONNX file of the model's current weights for inputs shaped like ``x`` (exported if missing)."""
        digest = hashlib.sha256(f"{type(self.model).__name__}|{tuple(x.shape[1:])}|{torch.__version__}|{OPSET}".encode())
        for key, value in self.model.state_dict().items():
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        path = cache_dir() / f"{self.name}-{digest.hexdigest()[:20]}.onnx"
        if path.is_file():
            return path
        example = x[:1].detach().cpu().float().contiguous()
        was_training = self.model.training
        try:  # whole file or none: a concurrent process finds a finished export
            with atomic_path(path) as tmp, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # shape arithmetic traced as constants: the input size is fixed
                torch.onnx.export(self.model.eval(), (example,), str(tmp), dynamo=False, opset_version=OPSET,
                                  input_names=["x"], output_names=["y"],
                                  dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
        finally:
            self.model.train(was_training)
        return path


def check_outputs(reference: np.ndarray, onnx: np.ndarray, name: str, atol: float = 1e-4) -> None:
    """Raise if ONNX Runtime's outputs differ from PyTorch's by more than ``atol`` (a broken export)."""
    worst = float(np.abs(reference - onnx).max()) if reference.size else 0.0
    if worst > atol:
        raise RuntimeError(f"{name}: ONNX Runtime output differs from PyTorch's by {worst:.2e} (> {atol:g})")
