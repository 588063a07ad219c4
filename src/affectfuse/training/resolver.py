"""One typed config resolver for every task: dataclass defaults -> YAML file(s) -> ``--set key=value``.

Every training config (ERI's :class:`~affectfuse.training.config.RunConfig`, EXPR's ``ExprTrainConfig``,
the item classifier's ``ItemTrainConfig``, fine-tuning's ``FinetuneConfig``) goes through
:func:`resolve_dataclass`, so a value means the same thing everywhere: the field's declared type decides
the coercion (``lr: 1e-4`` in YAML, which PyYAML reads as the string ``"1e-4"``, is a float for every task),
and an unknown key or a wrong type is one :class:`ConfigError` naming the key, the value, the expected type
and the source (the YAML file, ``--set KEY=VALUE`` or the command-line option).

A ``dict`` field may name the dataclass its keys belong to with ``field(metadata={"schema": Cls})``
(EXPR's ``model`` overrides are ``ExprModelConfig`` fields): its keys and values are checked the same way.

>>> cfg = resolve_dataclass(ExprTrainConfig, files=["mine.yaml"], overrides=["lr=3e-4", "model.d_model=128"])
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from pathlib import Path

import yaml

from affectfuse.utils import parse_value


class ConfigError(ValueError):
    """An unknown key or a value of the wrong type in a recipe, an override or an option."""


_TYPE_WORDS = {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list",
               dict: "a mapping"}


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _split_optional(tp) -> tuple[object, bool]:
    """(inner type, whether None is allowed) of ``X | None`` / ``Optional[X]``; other types unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


def _fail(source: str, key: str, value, expected: str) -> ConfigError:
    return ConfigError(f"{source}: {key} must be {expected}, got {value!r} ({type(value).__name__})")


def coerce(value, tp, key: str, source: str):
    """``value`` as the declared type ``tp`` of field ``key`` (``source`` names where it came from).

    bool: true/false only; int: integers (and integral floats); float: numbers and number strings
    (``"1e-4"``); str: strings (numbers are turned into their text); ``X | None``: None or X; ``list[X]``:
    a list whose items are X; ``dict``: a mapping. Any other annotation passes the value through."""
    tp, optional = _split_optional(tp)
    if value is None:
        if optional or tp is typing.Any:
            return None
        raise _fail(source, key, value, _TYPE_WORDS.get(tp, str(tp)))
    origin = typing.get_origin(tp) or tp
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _fail(source, key, value, "true/false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _fail(source, key, value, "an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise _fail(source, key, value, "a number")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _fail(source, key, value, "a string")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _fail(source, key, value, "a list")
        args = typing.get_args(tp)
        return [coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)] if args else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(source, key, value, "a mapping")
        return dict(value)
    return value


def apply_dict(cfg, d: dict, source: str, prefix: str = "") -> None:
    """Set fields of a (nested) dataclass instance from a nested dict, checking names and types."""
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'top level'} must be a mapping, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    hints = _hints(type(cfg))
    for key, value in d.items():
        full = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{source}: unknown key {full!r}; valid: {', '.join(sorted(prefix + n for n in fields))}")
        current = getattr(cfg, key)
        schema = fields[key].metadata.get("schema")
        if dataclasses.is_dataclass(current):
            apply_dict(current, value, source, full + ".")
        elif schema is not None:
            setattr(cfg, key, _apply_schema_dict(dict(current or {}), schema, value, full, source))
        else:
            setattr(cfg, key, coerce(value, hints[key], full, source))


def _apply_schema_dict(current: dict, schema, d, key: str, source: str) -> dict:
    """``current`` updated with ``d``, whose keys must be fields of the dataclass ``schema``."""
    if not isinstance(d, dict):
        raise _fail(source, key, d, f"a mapping of {schema.__name__} fields")
    names = {f.name for f in dataclasses.fields(schema)}
    hints = _hints(schema)
    for k, v in d.items():
        if k not in names:
            raise ConfigError(f"{source}: unknown key '{key}.{k}'; valid: {', '.join(sorted(f'{key}.{n}' for n in names))}")
        current[k] = coerce(v, hints[k], f"{key}.{k}", source)
    return current


def parse_override(text: str) -> dict:
    """``"train.lr=3e-4"`` -> ``{"train": {"lr": 3e-4}}`` (value parsed as YAML, ``1e-4`` as a float)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: use KEY=VALUE")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set {text!r}: the key is empty")
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = parse_value(raw)
    return out


def read_yaml(path: str | Path, what: str = "config recipe") -> dict:
    """A YAML mapping from ``path``; a missing file, invalid YAML or a non-mapping is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} does not exist")
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: a {what} must be a mapping of fields, got {type(d).__name__}")
    return d


def layers(files=None, overrides=None, options: dict | None = None) -> list[tuple[dict, str]]:
    """(dict, source) for each YAML file, then each ``--set`` override, then the command-line options
    (``{field: value}`` of the options given; each named ``--option``), in the order they apply."""
    if files is None or isinstance(files, (str, Path)):
        files = [files]
    out = [(read_yaml(p), str(p)) for p in files if p is not None]
    out += [(parse_override(o), f"--set {o}") for o in overrides or []]
    out += [({k: v}, f"option --{k.replace('_', '-')}") for k, v in (options or {}).items()]
    return out


def resolve_dataclass(cls, files=None, overrides=None, options: dict | None = None, base=None):
    """An instance of the dataclass ``cls``: its defaults (or a copy of ``base``), then the YAML ``files``
    (one path or a list, applied in order), then ``overrides`` (``KEY=VALUE`` strings, dotted keys for
    nested fields), then ``options`` (``{field: value}`` from command-line flags). A class may define
    ``validate(self)`` for cross-field checks (choices); it runs on the result."""
    cfg = copy.deepcopy(base) if base is not None else cls()
    for d, source in layers(files, overrides, options):
        apply_dict(cfg, d, source)
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def from_dict(cls, d: dict | None, source: str):
    """``cls`` from a (nested) dict with the resolver's checks and coercion (``source`` names the dict)."""
    cfg = cls()
    apply_dict(cfg, d or {}, source)
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def check_choice(value, valid, key: str, source: str = "config") -> None:
    """A ConfigError naming ``key`` unless ``value`` is one of ``valid``."""
    if value not in valid:
        raise ConfigError(f"{source}: {key} must be one of {', '.join(map(str, valid))}, got {value!r}")


def dump_yaml(cfg) -> str:
    """The resolved config as YAML text (plain types), as saved in run folders."""
    from affectfuse.training.checkpoint import plain

    return yaml.safe_dump(plain(dataclasses.asdict(cfg)), sort_keys=False)
