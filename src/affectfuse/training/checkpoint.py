"""Self-describing checkpoints: everything ``predict`` needs is in the file.

A model checkpoint (``best.pt``) is a dict of plain types and tensors, loadable with
``torch.load(..., weights_only=True)``::

    format        "affectfuse-eri-checkpoint"
    model         {"name": "eri_fusion", "args": {...ERIFusionArgs...}}
    state_dict    the (EMA) weights
    task          {"name", "level", "kind", "label_names", "metric", "scale"}
    label_names   output column names, in order
    feature_sets  {modality: feature-set meta (name, dim, rate, extractor, weights, random_weights, ...)}
    data          {"seq_len", "sequence_mode"}: how inputs are brought to fixed length
    config        the resolved run config
    versions      affectfuse, torch, numpy, python
    epoch, metrics

The last-epoch checkpoint (``last.pt``) adds ``training``: raw and EMA weights, optimizer,
scheduler, RNG states, early-stopping counters and the metric history, for ``--resume``.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import torch

from affectfuse.utils import atomic_path

FORMAT = "affectfuse-eri-checkpoint"


def versions() -> dict[str, str]:
    from affectfuse import __version__

    return {"affectfuse": __version__, "torch": str(torch.__version__), "numpy": str(np.__version__),
            "python": platform.python_version()}


def save_checkpoint(payload: dict, path: str | Path) -> Path:
    """Atomically write ``payload`` (a crash leaves the previous file intact)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint with ``weights_only=True``; a clear error names a wrong or broken file."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path}: not an affectfuse ERI checkpoint (format {ckpt.get('format') if isinstance(ckpt, dict) else type(ckpt).__name__!r})")
    ckpt["path"] = str(path)
    return ckpt


def model_from_checkpoint(ckpt: dict) -> torch.nn.Module:
    """Rebuild the model named in ``ckpt`` and load its weights (eval mode)."""
    from affectfuse.models.eri import create_eri_model

    model = create_eri_model(ckpt["model"]["name"], dict(ckpt["model"]["args"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()
