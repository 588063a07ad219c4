"""One typed config for ERI training: dataclass defaults -> shipped recipe -> YAML -> ``--set key=value``.

The defaults are affectfuse's recipe (``eri_fusion``; the paper's training settings). Shipped recipes
(``training/recipes/<name>.yaml``, :func:`shipped_recipes`) are ``authors`` (the authors' code: their
model ``eri_authors`` and their training details) and ``paper`` (the paper's text); docs/eri.md lists every
difference. The resolved config is saved as ``config.yaml`` in the run folder and inside every checkpoint.

>>> cfg = resolve_config(["authors", "my.yaml"], ["train.lr=3e-4", "model.modality_set=A+V"])
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from affectfuse.models.eri import ERIArchitecture, eri_model_args_class, list_eri_models
from affectfuse.training.resolver import ConfigError, apply_dict, layers, parse_override, read_yaml  # noqa: F401

RECIPES_DIR = Path(__file__).with_name("recipes")
DEFAULT_RECIPE = "affectfuse"


@dataclass
class ModelConfig(ERIArchitecture):
    """Model architecture: the model's name, the modality set (``all``, ``A``, ``V``, ``A+V``,
    ``A+V+AV`` or feature-set names joined by ``+``, see :func:`affectfuse.models.eri.parse_modality_set`)
    and the architecture fields of :class:`~affectfuse.models.eri.ERIArchitecture`. ``pooled_skip`` (eri_fusion
    only): the linear path from pooled statistics, started at the ridge probe (``ERIFusionArgs``)."""

    name: str = "eri_fusion"
    modality_set: str = "all"
    pooled_skip: bool = True


@dataclass
class DataConfig:
    """How tables and feature sets become tensors (see :mod:`affectfuse.data.sequences`).

    ``standardize``: scale every feature dim by the training split's mean and std over valid rows; the
    statistics are stored in the checkpoint and applied by evaluate and predict.
    """

    seq_len: int = 30
    sequence_mode: str = "truncate"
    standardize: bool = True
    train_split: str = "train"
    val_split: str = "val"


@dataclass
class TrainConfig:
    """The paper's recipe. Each trick has an off switch (Table 2): ``class_loss``, ``ema``,
    ``weight_decay: 0`` (no L2), ``clip_norm: 0`` (no clipping), ``step_size: 0`` (no LR schedule).

    ``class_target``: the CE target, ``row_max`` (uniform over the emotions at the row maximum, a
    distribution) or ``multi_hot`` (the authors' ``y == 1``, not normalised). ``ema_timing``: update the EMA
    copy ``after_step`` (of the new weights) or ``before_step`` (the authors': it lags one step and starts
    from the initial weights). Early stopping counts epochs whose validation mean Pearson does not beat the
    best counted one by more than ``min_delta`` (Lightning's rule); ``best.pt`` follows any improvement.

    ``micro_batch``: backward each batch in parts of this many videos (0 = whole batch); the gradient is
    the whole batch's, activation memory that of one part (about 9 MB per video for ``eri_fusion`` at
    d = 256, T = 30, so batch 256 in one part holds ~2.3 GB).

    ``probe``: also fit the ridge probe on pooled features (``training.probes``) and report it beside the model.

    ``stop_after``: end this invocation after that many epochs, leaving a resumable run (for
    time-limited cluster jobs; the tests use it to simulate a killed run).

    ``precision``: ``auto`` (bf16 autocast for the trunk's forward where the CPU or GPU has bf16 units,
    fp32 otherwise), ``fp32`` or ``bf16``; heads, losses, optimizer state and EMA stay fp32 either way
    (:mod:`affectfuse.training.precision`). The precision used is recorded in ``result.json`` and in the
    checkpoints' ``info``.
    """

    alpha: float = 1.0
    beta: float = 0.01
    class_loss: bool = True
    class_target: str = "row_max"
    lr: float = 1e-4
    weight_decay: float = 1e-3
    step_size: int = 30
    gamma: float = 0.5
    clip_norm: float = 0.1
    ema: bool = True
    ema_decay: float = 0.99
    ema_timing: str = "after_step"
    patience: int = 15
    min_delta: float = 0.0
    batch_size: int = 256
    micro_batch: int = 64
    max_epochs: int = 100
    seed: int = 0
    threads: int = 0
    probe: bool = True
    stop_after: int = 0
    progress: bool = True
    tensorboard: bool = True
    precision: str = "auto"


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


CHOICES = {"train.class_target": ("row_max", "multi_hot"), "train.ema_timing": ("after_step", "before_step"),
           "data.sequence_mode": ("truncate", "resample"), "train.precision": ("auto", "fp32", "bf16")}


def shipped_recipes() -> list[str]:
    """Names of the recipes that ship with affectfuse (``affectfuse`` = the dataclass defaults)."""
    return sorted([DEFAULT_RECIPE] + [p.stem for p in RECIPES_DIR.glob("*.yaml")])


def recipe_path(recipe: str | Path) -> Path | None:
    """A shipped recipe's file from its name (``None`` for ``affectfuse``, the defaults); other values are
    taken as paths to YAML files."""
    if str(recipe) == DEFAULT_RECIPE:
        return None
    if str(recipe) in shipped_recipes():
        return RECIPES_DIR / f"{recipe}.yaml"
    if not str(recipe).endswith((".yaml", ".yml")) and not Path(recipe).exists():
        raise ConfigError(f"unknown recipe {str(recipe)!r}: neither a shipped recipe "
                          f"({', '.join(shipped_recipes())}) nor a YAML file")
    return Path(recipe)


def _layers(recipes, overrides: list[str] | None) -> list[tuple[dict, str]]:
    """(dict, source) for each recipe (shipped name or YAML path) and each override, in the order applied."""
    if recipes is None or isinstance(recipes, (str, Path)):
        recipes = [recipes]
    return layers([recipe_path(r) for r in recipes if r is not None], overrides)


def resolve_config(recipe=None, overrides: list[str] | None = None, base: RunConfig | None = None) -> RunConfig:
    """Defaults (or ``base``) -> recipes -> ``key=value`` overrides.

    ``recipe``: a shipped recipe's name (``authors``, ``paper``), a YAML path, or a list of them applied in
    order (``["authors", "mine.yaml"]``). Starting from the defaults, architecture fields that no layer sets
    take the chosen model's own defaults (``model.name=eri_authors`` alone gives the authors' architecture).
    """
    cfg = base or RunConfig()
    explicit: set[str] = set()
    for d, source in _layers(recipe, overrides):
        apply_dict(cfg, d, source)
        model_keys = d.get("model") if isinstance(d.get("model"), dict) else {}
        explicit |= set(model_keys)
    _check_choices(cfg)
    if base is None:
        _fill_model_defaults(cfg.model, explicit)
    return cfg


def _fill_model_defaults(model: ModelConfig, explicit: set[str]) -> None:
    own = eri_model_args_class(model.name)()
    for f in dataclasses.fields(ERIArchitecture):
        if f.name not in explicit:
            setattr(model, f.name, getattr(own, f.name))


def _check_choices(cfg: RunConfig) -> None:
    if cfg.model.name not in list_eri_models():
        raise ConfigError(f"model.name must be one of {', '.join(list_eri_models())}, got {cfg.model.name!r}")
    for key, valid in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in valid:
            raise ConfigError(f"{key} must be one of {', '.join(valid)}, got {value!r}")


def save_config(cfg: RunConfig, path: str | Path) -> None:
    from affectfuse.utils import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# Fields added after configs were first saved, with the value that reproduces a run saved without them.
BEFORE_FIELD = {("model", "pooled_skip"): False, ("data", "standardize"): False, ("train", "micro_batch"): 0,
                ("train", "precision"): "fp32"}


def load_config(path: str | Path) -> RunConfig:
    """A saved ``config.yaml``; fields it predates take the value its run had (``BEFORE_FIELD``), so an
    older run resumes as it started."""
    d = read_yaml(path, "saved config")
    for (section, name), value in BEFORE_FIELD.items():
        if isinstance(d.get(section), dict):
            d[section].setdefault(name, value)
    return RunConfig.from_dict(d, str(path))
