"""Pretrained weights as data: where a file comes from, how to check it, how to find it offline.

Lookup order for a :class:`WeightsSpec` (first hit wins):

1. an explicit ``path`` argument (``extract --weights NAME=PATH``, ``finetune --weights PATH``);
2. the environment variable named by ``spec.env_var`` (a file path);
3. ``$AFFECTFUSE_WEIGHTS_DIR/<filename>``;
4. the torch hub cache ``<torch.hub.get_dir()>/checkpoints/<filename>`` (where torchvision puts its files);
5. package data shipped with affectfuse (``spec.package_file``);
6. a download from ``spec.url`` into the torch hub cache, unless ``AFFECTFUSE_OFFLINE=1``.

A file found under the declared ``filename`` is checked against ``sha256``; a file the user names
with another name (their own fine-tuned weights) is loaded as is.

When all fail, :class:`WeightsNotFoundError` says which file to get, from where, and where to put it.

Provenance: :func:`resolve` is the one place every loader finds its file, so it notes each file it
returns in the active :func:`recording` block; :func:`describe_loaded` turns that note into what
``meta.json``, ``summary.json`` and checkpoints record (path, file name and sha256 of the file actually
loaded, or ``"random"``), and :func:`check_same_weights` refuses to mix random-weight and real features.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from contextvars import ContextVar
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path


class WeightsNotFoundError(FileNotFoundError):
    """A weights file could not be found; the message says which file and where to put it."""


class WeightsChecksumError(ValueError):
    """A weights file exists but its sha256 differs from the declared one."""


class WeightsMismatchError(ValueError):
    """Features made with random weights used with a model trained on real ones, or the reverse."""


RANDOM = "random"  # path, filename and sha256 of weights that were never loaded (tests only)
_RECORDING: ContextVar[list | None] = ContextVar("affectfuse_weights_recording", default=None)
_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256: each file hashed once


@dataclass(frozen=True)
class WeightsSpec:
    """Declares a pretrained weights file next to the model that uses it.

    Attributes:
        name: short id, e.g. ``"densenet121.imagenet"``.
        filename: file name in caches, e.g. ``"densenet121-a639ec97.pth"``.
        sha256: hex digest of the file, or ``None`` when it is not fixed (user-trained files).
        url: where users download it (``None`` when no public URL exists).
        licence: licence of the weights, e.g. ``"BSD-3-Clause (torchvision)"``.
        source: human description of the origin (paper, repository).
        env_var: environment variable that may point at the file.
        package_file: path inside the ``affectfuse`` package when shipped as package data.
        input_size: (height, width) the network expects, in pixels.
        mean, std: per-channel normalisation the weights were trained with (RGB, 0-1 scale).
        extra: anything else a loader needs (e.g. class names of the head).
    """

    name: str
    filename: str
    sha256: str | None = None
    url: str | None = None
    licence: str = "unknown"
    source: str = ""
    env_var: str | None = None
    package_file: str | None = None
    input_size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    extra: dict = field(default_factory=dict)

    def describe(self) -> dict:
        """Metadata written next to features/checkpoints made with these weights."""
        return {"name": self.name, "filename": self.filename, "sha256": self.sha256,
                "source": self.source or self.url, "licence": self.licence}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file; remembered per (path, size, mtime) for this process (a file is hashed once)."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(chunk):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


@contextlib.contextmanager
def recording():
    """``with recording() as files:`` -> ``files`` lists every weights file :func:`resolve` returned inside
    the block (absolute paths, in order). Blocks nest: an inner block's files also go to the outer one."""
    outer = _RECORDING.get()
    files: list[Path] = []
    token = _RECORDING.set(files)
    try:
        yield files
    finally:
        _RECORDING.reset(token)
        if outer is not None:
            outer.extend(files)


def loaded_file(path: str | os.PathLike) -> dict:
    """``{"path", "filename", "sha256"}`` of a file that was loaded (absolute path)."""
    path = Path(path).resolve()
    return {"path": str(path), "filename": path.name, "sha256": sha256_file(path)}


def describe_loaded(spec: "WeightsSpec | None", files: list | None, random_weights: bool) -> dict | None:
    """What a feature set / summary / checkpoint records about a network's weights.

    ``{"name", "source", "licence", "path", "filename", "sha256", "release"}``: path, filename and sha256
    are those of the file actually loaded (the last one in ``files``, as :func:`recording` collected them),
    ``"random"`` for random weights, ``None`` when the load was not recorded (never the declared file in
    its place); ``release`` is the file the spec declares (``{"filename", "sha256"}``). ``None`` without a spec.
    """
    if spec is None:
        return None
    if random_weights:
        file = {"path": RANDOM, "filename": RANDOM, "sha256": RANDOM}
    elif files:
        file = loaded_file(files[-1])
    else:
        file = {"path": None, "filename": None, "sha256": None}
    return {"name": spec.name, "source": spec.source or spec.url, "licence": spec.licence, **file,
            "release": {"filename": spec.filename, "sha256": spec.sha256}}


def _weights_text(meta: dict) -> str:
    """"random weights" or "weights /path/file.pth (sha256 1234abcd...)" of a feature-set meta."""
    if meta.get("random_weights"):
        return "random weights (testing only)"
    w = meta.get("weights") or {}
    if not isinstance(w, dict) or not w.get("sha256"):
        return "real weights" if w else "no network weights"
    return f"weights {w.get('path') or w.get('filename')} (sha256 {str(w['sha256'])[:12]}...)"


def check_same_weights(trained: dict, used: dict, trained_where: str, used_where: str) -> None:
    """Raise :class:`WeightsMismatchError` when one side's features come from random weights and the other's
    from real ones. ``trained`` / ``used``: feature-set metas (``random_weights``, ``weights``) of what the
    model was trained on and of what it is given now; ``*_where`` name them in the message (file, set)."""
    if bool(trained.get("random_weights")) == bool(used.get("random_weights")):
        return
    raise WeightsMismatchError(
        f"{used_where} was made with {_weights_text(used)}, but {trained_where} was trained on features made "
        f"with {_weights_text(trained)}; a model trained on random-weight features means nothing on real ones "
        "(and the reverse): extract both with the same weights.")


def weights_dir() -> Path | None:
    value = os.environ.get("AFFECTFUSE_WEIGHTS_DIR")
    return Path(value) if value else None


def hub_checkpoints_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def offline() -> bool:
    return os.environ.get("AFFECTFUSE_OFFLINE", "").lower() in ("1", "true", "yes")


def candidate_paths(spec: WeightsSpec, path: str | os.PathLike | None = None) -> list[Path]:
    """Every place the file is looked for, in order (used for the lookup and the error message)."""
    out: list[Path] = []
    if path is not None:
        return [Path(path)]
    if spec.env_var and os.environ.get(spec.env_var):
        out.append(Path(os.environ[spec.env_var]))
    if weights_dir() is not None:
        out.append(weights_dir() / spec.filename)
    out.append(hub_checkpoints_dir() / spec.filename)
    if spec.package_file:
        out.append(Path(str(resources.files("affectfuse").joinpath(spec.package_file))))
    return out


def _missing_message(spec: WeightsSpec, tried: list[Path], reason: str = "") -> str:
    lines = [f"weights '{spec.name}' not found: need file {spec.filename!r}."]
    if reason:
        lines.append(reason)
    if spec.url:
        lines.append(f"Download it from {spec.url}")
    elif spec.source:
        lines.append(f"Source: {spec.source}")
    where = [f"  - {p}" for p in tried]
    lines.append("Put it in one of these places (looked there, in this order):")
    lines.extend(where)
    hints = []
    if spec.env_var:
        hints.append(f"set {spec.env_var}=/path/to/{spec.filename}")
    hints.append("or name the file on the command line: `affectfuse extract --weights EXTRACTOR=PATH`, "
                 "`affectfuse finetune --weights PATH` (in Python: `weights=PATH`)")
    lines.append("Or " + ", ".join(hints) + ".")
    return "\n".join(lines)


def resolve(spec: WeightsSpec, path: str | os.PathLike | None = None, check: bool = True) -> Path:
    """Return the local path of ``spec``'s file, downloading only when allowed and possible."""
    tried = candidate_paths(spec, path)
    for candidate in tried:
        if candidate.is_file():
            # A file under the declared name claims to be that release and is hash-checked; a file the
            # user names otherwise (e.g. their fine-tuned export) is their own and is taken as is.
            if check and spec.sha256 and candidate.name == spec.filename:
                digest = sha256_file(candidate)
                if digest != spec.sha256:
                    raise WeightsChecksumError(
                        f"{candidate}: sha256 {digest} does not match the expected {spec.sha256} for "
                        f"weights '{spec.name}'; the file is corrupt or a different release.")
            return _note(candidate)
    if path is not None:
        raise WeightsNotFoundError(_missing_message(spec, tried, f"The given path {path} does not exist."))
    if spec.url and not offline():
        target = hub_checkpoints_dir() / spec.filename
        try:
            import torch

            target.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(spec.url, str(target), hash_prefix=None, progress=True)
        except Exception as exc:  # network down, 404, proxy ...
            raise WeightsNotFoundError(_missing_message(spec, tried, f"Download failed: {exc}")) from exc
        return resolve(spec, check=check)
    raise WeightsNotFoundError(_missing_message(spec, tried))


def _note(path: Path) -> Path:
    """Record ``path`` in the active :func:`recording` block (if any); returns it unchanged."""
    files = _RECORDING.get()
    if files is not None:
        files.append(path.resolve())
    return path


def load_state_dict(spec: WeightsSpec, path: str | os.PathLike | None = None, check: bool = True) -> dict:
    """Resolve ``spec`` and load its tensors with ``torch.load(weights_only=True)``."""
    import torch

    file = resolve(spec, path, check=check)
    state = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state
