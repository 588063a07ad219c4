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
    input_norm    {modality: {"mean", "std"}} of the training split's valid rows, or absent (no standardisation)
    probe         the ridge probe fitted on the same split (pooled features) and its validation score
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
    """Atomically write ``payload`` (a crash leaves the previous file intact).

    torch writes through a Python file handle, so a full disk or a read-only folder comes out as an
    ``OSError`` naming ``path``; torch's own writer errors (``RuntimeError: [enforce fail at
    inline_container.cc...] ... file write failed``) are turned into one too."""
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as fh:
                torch.save(payload, fh)
        except RuntimeError as exc:
            raise _write_error(exc, path) from exc
    return path


def _write_error(exc: RuntimeError, path: Path) -> OSError:
    """An ``OSError`` naming ``path`` for torch's writer failure: disk full when the disk has < 64 MiB free."""
    import errno
    import shutil

    detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if free is not None and free < 64 * 2**20:
        return OSError(errno.ENOSPC, f"No space left on device ({free} bytes free; torch: {detail})", str(path))
    return OSError(errno.EIO, f"writing the checkpoint failed (torch: {detail})", str(path))


def read_checkpoint(path: str | Path, fmt: str, what: str, map_location="cpu") -> dict:
    """``torch.load(weights_only=True)`` of a file that must hold a dict whose ``format`` is ``fmt``.

    Every affectfuse checkpoint (ERI, EXPR, EXPR resume, fine-tuning) is read here; errors name the
    file and say what it should have been (``what``, e.g. ``"EXPR checkpoint"``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        detail = " ".join(str(exc).split())  # torch's messages run over many lines: keep one
        detail = detail if len(detail) <= 300 else detail[:297] + "..."
        raise ValueError(f"{path}: unreadable {what} ({type(exc).__name__}: {detail})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path}: not an affectfuse {what} (format {fmt!r} expected, found {found!r})")
    return ckpt


def load_checkpoint(path: str | Path) -> dict:
    """Load an ERI checkpoint (a run folder means its ``best.pt``); a clear error names a wrong or broken file."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    ckpt = read_checkpoint(path, FORMAT, "ERI checkpoint")
    ckpt["path"] = str(path)
    return ckpt


def model_from_checkpoint(ckpt: dict) -> torch.nn.Module:
    """Rebuild the model named in ``ckpt`` and load its weights (eval mode); with ``input_norm`` (the
    training split's feature statistics) the model standardises its inputs itself."""
    from affectfuse.models.eri import create_eri_model
    from affectfuse.models.input_norm import StandardizedInputs

    model = create_eri_model(ckpt["model"]["name"], dict(ckpt["model"]["args"]))
    model.load_state_dict(ckpt["state_dict"])
    if ckpt.get("input_norm"):
        model = StandardizedInputs(model, ckpt["input_norm"])
    return model.eval()
