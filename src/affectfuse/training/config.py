"""One typed config for ERI training: dataclass defaults -> YAML recipe -> ``--set key=value``.

The defaults are the paper's recipe (SPEC Part A, the authors' code in brackets there). The resolved
config is saved as ``config.yaml`` in the run folder and inside every checkpoint.

>>> cfg = resolve_config("recipe.yaml", ["train.lr=3e-4", "model.modality_set=A+V"])
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from affectfuse.models.eri import ERIArchitecture
from affectfuse.utils import parse_value


@dataclass
class ModelConfig(ERIArchitecture):
    """Model architecture: the model's name, the modality set (``all``, ``A``, ``V``, ``A+V``,
    ``A+V+AV`` or feature-set names joined by ``+``, see :func:`affectfuse.models.eri.parse_modality_set`)
    and the architecture fields of :class:`~affectfuse.models.eri.ERIArchitecture`."""

    name: str = "eri_fusion"
    modality_set: str = "all"


@dataclass
class DataConfig:
    """How tables and feature sets become tensors (see :mod:`affectfuse.data.sequences`)."""

    seq_len: int = 30
    sequence_mode: str = "truncate"
    train_split: str = "train"
    val_split: str = "val"


@dataclass
class TrainConfig:
    """The paper's recipe. Each trick has an off switch (Table 2): ``class_loss``, ``ema``,
    ``weight_decay: 0`` (no L2), ``clip_norm: 0`` (no clipping), ``step_size: 0`` (no LR schedule).

    ``stop_after``: end this invocation after that many epochs, leaving a resumable run (for
    time-limited cluster jobs; the tests use it to simulate a killed run).
    """

    alpha: float = 1.0
    beta: float = 0.01
    class_loss: bool = True
    lr: float = 1e-4
    weight_decay: float = 1e-3
    step_size: int = 30
    gamma: float = 0.5
    clip_norm: float = 0.1
    ema: bool = True
    ema_decay: float = 0.99
    patience: int = 15
    batch_size: int = 256
    max_epochs: int = 100
    seed: int = 0
    threads: int = 0
    stop_after: int = 0
    progress: bool = True
    tensorboard: bool = True


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "RunConfig":
        cfg = cls()
        apply_dict(cfg, d or {}, source)
        return cfg


class ConfigError(ValueError):
    """An unknown key or a value of the wrong type in a recipe or an override."""


def _coerce(value, current, key: str, source: str):
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {key} must be true/false, got {value!r}")
    if isinstance(current, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
    if isinstance(current, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
    if isinstance(current, str):
        return str(value)
    return value


def apply_dict(cfg, d: dict, source: str, prefix: str = "") -> None:
    """Set fields of a (nested) dataclass from a nested dict, checking names and types."""
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: {prefix or 'top level'} must be a mapping, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cfg)}
    for key, value in d.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{source}: unknown key {full!r}; valid: {', '.join(sorted(prefix + n for n in names))}")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            apply_dict(current, value, source, full + ".")
        else:
            setattr(cfg, key, _coerce(value, current, full, source))


def parse_override(text: str) -> dict:
    """``"train.lr=3e-4"`` -> ``{"train": {"lr": 3e-4}}`` (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value")
    key, raw = text.split("=", 1)
    value = parse_value(raw)
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def resolve_config(recipe: str | Path | None = None, overrides: list[str] | None = None,
                   base: RunConfig | None = None) -> RunConfig:
    """Defaults (or ``base``) -> YAML recipe -> overrides."""
    cfg = base or RunConfig()
    if recipe is not None:
        path = Path(recipe)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: config recipe does not exist")
        try:
            d = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        apply_dict(cfg, d, str(path))
    for o in overrides or []:
        apply_dict(cfg, parse_override(o), f"--set {o}")
    return cfg


def save_config(cfg: RunConfig, path: str | Path) -> None:
    from affectfuse.utils import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def load_config(path: str | Path) -> RunConfig:
    return RunConfig.from_dict(yaml.safe_load(Path(path).read_text()), str(path))
