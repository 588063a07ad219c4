"""One checkpoint schema for every task, written by :func:`write_checkpoint`, read by :func:`read_checkpoint`
and :func:`read_any_checkpoint` (``torch.load(..., weights_only=True)``): everything ``predict`` needs is in
the file. A checkpoint is a dict of plain types and tensors::

    format        "affectfuse-checkpoint"
    version       2
    kind          "eri" | "expr" | "items" | "finetune"   (which code rebuilds the model)
    role          "best" (a model) | "last" (adds ``training``, for --resume)
    task          the task spec (data.tasks.TaskSpec.to_dict: name, level, kind, label_names, metric, scale)
    model         {"name", "args"}: the registered model and its constructor arguments
    state_dict    the (EMA) weights of the selected epoch
    label_names   output column / class names, in order
    scale         what the output values mean (units, range)
    input_norm    {feature set: {"mean", "std"}} of the training split, or absent (no standardisation)
    feature_sets  {name: feature-set meta (name, dim, extractor, weights, random_weights, path, ...)}
    train_config  the resolved training config
    versions      affectfuse, torch, numpy, python
    epoch, metrics
    info          task-specific description (EXPR: fill, fps, audio set, class weights; items: groups)
    training      (role "last") raw and EMA weights, optimizer, scheduler, RNG states, early-stopping
                  counters and history (see training.engine)

ERI checkpoints also hold ``data`` ({"seq_len", "sequence_mode"}), ``probe`` and ``config`` (= train_config).
Files written before this schema (``affectfuse-eri-checkpoint``, ``affectfuse-expr/1``, its ``-last``,
``affectfuse-expr-items/1``, ``affectfuse.finetune/1``) still load: the reader upgrades each old format to
this one (:data:`LEGACY`), keeping their old keys too.
"""

from __future__ import annotations

import csv
import io
import platform
from pathlib import Path

import numpy as np
import torch

from affectfuse.utils import atomic_path, write_text_atomic

SCHEMA = "affectfuse-checkpoint"
VERSION = 2
KINDS = ("eri", "expr", "items", "finetune")
FORMAT = "eri"  # ERI's kind, under its old constant name (training.run and the cli pass it to read_checkpoint)


def versions() -> dict[str, str]:
    """Versions of affectfuse (its installed metadata: no import of the package root), torch, numpy, python."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        own = version("affectfuse")
    except PackageNotFoundError:  # a source tree that is not installed
        own = "unknown"
    return {"affectfuse": own, "torch": str(torch.__version__), "numpy": str(np.__version__),
            "python": platform.python_version()}


def plain(obj):
    """numpy scalars/arrays and tuples -> python types, so checkpoints load with ``weights_only=True``."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def checkpoint_payload(kind: str, *, model_name: str, model_args: dict, state_dict: dict, task: dict,
                       train_config: dict, feature_sets: dict | None = None, input_norm: dict | None = None,
                       info: dict | None = None, epoch: int | None = None, metrics: dict | None = None,
                       **extra) -> dict:
    """The schema's dict of a model (role ``best``); ``task`` (a TaskSpec dict) gives label names and scale.
    ``extra``: further task-specific entries (plain types or tensors)."""
    if kind not in KINDS:
        raise ValueError(f"checkpoint kind must be one of {', '.join(KINDS)}, got {kind!r}")
    payload = {"format": SCHEMA, "version": VERSION, "kind": kind, "role": "best", "task": plain(task),
               "model": {"name": model_name, "args": plain(model_args)},
               "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
               "label_names": list(task.get("label_names") or []), "scale": task.get("scale", ""),
               "feature_sets": plain(feature_sets or {}), "train_config": plain(train_config),
               "info": plain(info or {}), "versions": versions(), "epoch": epoch, "metrics": plain(metrics)}
    if input_norm:
        payload["input_norm"] = input_norm
    payload.update(extra)
    return payload


def write_checkpoint(payload: dict, path: str | Path) -> Path:
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


save_checkpoint = write_checkpoint  # the name the rest of the package and the tests know


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


def _load(path: Path, what: str, map_location) -> object:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        detail = " ".join(str(exc).split())  # torch's messages run over many lines: keep one
        detail = detail if len(detail) <= 300 else detail[:297] + "..."
        raise ValueError(f"{path}: unreadable {what} ({type(exc).__name__}: {detail})") from exc


def read_any_checkpoint(path: str | Path, map_location="cpu", what: str = "checkpoint") -> tuple[str, dict]:
    """``(kind, payload)`` of any affectfuse checkpoint file, in the current schema (old formats upgraded).

    ``kind`` is one of :data:`KINDS`; ``payload["role"]`` says whether it is a model (``best``) or a resume
    state (``last``). A missing file is a ``FileNotFoundError``, a corrupt or foreign one a ``ValueError``,
    each naming the file. The inference loader dispatches on ``kind``."""
    from affectfuse.training.checkpoint_legacy import LEGACY, upgrade

    path = Path(path)
    ckpt = _load(path, what, map_location)
    found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
    if isinstance(ckpt, dict) and found in LEGACY:
        ckpt = upgrade(ckpt, SCHEMA, VERSION)
    elif not isinstance(ckpt, dict) or found != SCHEMA:
        raise ValueError(f"{path}: not an affectfuse {what} (format {SCHEMA!r} expected, found {found!r})")
    elif int(ckpt.get("version", 0)) > VERSION:
        raise ValueError(f"{path}: checkpoint schema version {ckpt.get('version')} is newer than this affectfuse "
                         f"reads ({VERSION}); update affectfuse")
    return ckpt["kind"], ckpt


def read_checkpoint(path: str | Path, kind: str, what: str, map_location="cpu", role: str | None = None) -> dict:
    """The payload of a checkpoint that must be of ``kind`` (one of :data:`KINDS`, or an old format's name,
    e.g. ``"affectfuse-expr-items/1"``) and, when given, ``role``; errors name the file and say what it
    should have been (``what``, e.g. ``"EXPR checkpoint"``)."""
    from affectfuse.training.checkpoint_legacy import LEGACY

    want = LEGACY.get(kind, (kind, None))
    kind, role = want[0], role or want[1]
    found, ckpt = read_any_checkpoint(path, map_location, what)
    if found != kind or (role is not None and ckpt.get("role") != role):
        raise ValueError(f"{path}: not an affectfuse {what} (kind {kind!r}{f', role {role!r}' if role else ''} "
                         f"expected, found {found!r}, role {ckpt.get('role')!r})")
    return ckpt


def load_checkpoint(path: str | Path) -> dict:
    """Load an ERI model checkpoint (a run folder means its ``best.pt``); a clear error names a wrong file."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    ckpt = read_checkpoint(path, "eri", "ERI checkpoint")
    ckpt["path"] = str(path)
    return ckpt


def model_from_checkpoint(ckpt: dict) -> torch.nn.Module:
    """Rebuild the ERI model named in ``ckpt`` and load its weights (eval mode); with ``input_norm`` (the
    training split's feature statistics) the model standardises its inputs itself."""
    from affectfuse.models.eri import create_eri_model
    from affectfuse.models.input_norm import StandardizedInputs

    model = create_eri_model(ckpt["model"]["name"], dict(ckpt["model"]["args"]))
    model.load_state_dict(ckpt["state_dict"])
    if ckpt.get("input_norm"):
        model = StandardizedInputs(model, ckpt["input_norm"])
    return model.eval()


def write_history(path: str | Path, history: list[dict]) -> None:
    """One CSV row per epoch (columns of the first row), written atomically; nothing when empty."""
    if not history:
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    write_text_atomic(path, buf.getvalue())
