"""One typed config resolver for every task (issue 12 item 3): defaults -> YAML -> ``--set``, the same coercion
for ERI, EXPR, items and fine-tuning, errors naming key, value, expected type and source."""

import argparse

import numpy as np
import pytest
import torch

from affectfuse.data.affwild2 import ExprVideo
from affectfuse.training.config import resolve_config
from affectfuse.training.expr import ExprTrainConfig, train_expr
from affectfuse.training.finetune import FinetuneConfig
from affectfuse.training.items import ItemTrainConfig
from affectfuse.training.resolver import ConfigError, resolve_dataclass


@pytest.fixture
def lr_yaml(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("lr: 1e-4\n")  # PyYAML (YAML 1.1) reads 1e-4 as the string "1e-4"
    return path


@pytest.mark.parametrize("cls", [ExprTrainConfig, ItemTrainConfig, FinetuneConfig])
def test_yaml_lr_without_a_dot_is_a_float_for_every_task(cls, lr_yaml, tmp_path):
    cfg = resolve_dataclass(cls, files=lr_yaml)
    assert type(cfg.lr) is float and cfg.lr == 1e-4
    eri = tmp_path / "eri.yaml"
    eri.write_text("train:\n  lr: 1e-4\n")
    assert type(resolve_config(eri).train.lr) is float


def test_cli_expr_config_from_yaml_trains_with_adamw(lr_yaml):
    """The regression: EXPR passed ``lr: 1e-4`` on as a string until AdamW crashed."""
    from affectfuse.cli.classify import item_config
    from affectfuse.cli.common import frame_config

    cfg = frame_config(str(lr_yaml), ["window=8", "stride=8", "predict_stride=8", "epochs=1", "batch_size=4",
                                 "model.d_model=16", "model.n_heads=2", "model.n_layers=1", "probe=false"])
    assert type(cfg.lr) is float and cfg.model["d_model"] == 16
    rng = np.random.default_rng(0)

    def video(i):
        y = rng.integers(0, 8, 24)
        return ExprVideo(f"v{i}", rng.standard_normal((24, 6)).astype(np.float32), np.ones(24, bool), y,
                         np.arange(1, 25), np.ones(24, bool))

    run = train_expr([video(0), video(1)], [video(2)], cfg)
    assert len(run.history) == 1 and np.isfinite(run.history[0]["train_loss"])
    assert type(item_config(str(lr_yaml), []).lr) is float


def test_cli_finetune_config_from_yaml(lr_yaml, tmp_path):
    from affectfuse.cli.finetune import add_arguments, resolve_config as finetune_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = finetune_config(parser.parse_args(["--out", str(tmp_path), "--data", "d.csv", "--config", str(lr_yaml)]))
    assert type(cfg.lr) is float and cfg.lr == 1e-4
    # the option given on the command line wins over the file
    cfg = finetune_config(parser.parse_args(["--out", str(tmp_path), "--data", "d.csv", "--config", str(lr_yaml),
                                             "--lr", "3e-4"]))
    assert cfg.lr == 3e-4


def test_errors_name_key_value_expected_type_and_source(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: fast\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: lr must be a number, got 'fast' \(str\)"):
        resolve_dataclass(ExprTrainConfig, files=bad)
    bad.write_text("epochs: 3\nbogus: 1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key 'bogus'; valid: .*epochs"):
        resolve_dataclass(ItemTrainConfig, files=bad)
    with pytest.raises(ConfigError, match=r"--set batch_size=2\.5: batch_size must be an integer, got 2\.5"):
        resolve_dataclass(ExprTrainConfig, overrides=["batch_size=2.5"])
    with pytest.raises(ConfigError, match=r"--set model\.d_modle=8: unknown key 'model\.d_modle'"):
        resolve_dataclass(ExprTrainConfig, overrides=["model.d_modle=8"])
    with pytest.raises(ConfigError, match=r"model\.d_model must be an integer, got 'wide'"):
        resolve_dataclass(ExprTrainConfig, overrides=["model.d_model=wide"])
    with pytest.raises(ConfigError, match=r"option --fold: fold must be an integer, got 'two'"):
        resolve_dataclass(FinetuneConfig, options={"fold": "two"})
    with pytest.raises(ConfigError, match=r"amp must be true/false, got 'yes please'"):
        resolve_dataclass(FinetuneConfig, overrides=["amp=yes please"])
    with pytest.raises(ConfigError, match=r"probe_cs\[1\] must be a number, got 'x'"):
        resolve_dataclass(ItemTrainConfig, overrides=["probe_cs=[0.1, x]"])
    with pytest.raises(ConfigError, match=r"balance must be one of loss, sampler, none, got 'both'"):
        resolve_dataclass(FinetuneConfig, overrides=["balance=both"])
    with pytest.raises(ConfigError, match=r"metric must be one of uar, macro_f1, got 'f2'"):
        ItemTrainConfig.from_dict({"metric": "f2"})
    bad.write_text("- lr\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: a config recipe must be a mapping"):
        resolve_dataclass(ExprTrainConfig, files=bad)


def test_layers_apply_in_order_and_optional_fields_take_null(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("epochs: 5\nlr: 1e-3\nfold: 2\n")
    b.write_text("epochs: 7\nmax_items: null\n")
    cfg = resolve_dataclass(FinetuneConfig, files=[a, b], overrides=["epochs=9"], options={"seed": 3})
    assert (cfg.epochs, cfg.lr, cfg.fold, cfg.max_items, cfg.seed) == (9, 1e-3, 2, None, 3)
    assert resolve_dataclass(FinetuneConfig, overrides=["fold=null"]).fold is None
    # the defaults are untouched (each resolve starts from a fresh instance); model keys merge into the defaults
    cfg = resolve_dataclass(ExprTrainConfig, overrides=["model.d_model=8"])
    default = ExprTrainConfig().model
    assert cfg.model == {**default, "d_model": 8} and default["d_model"] != 8 and FinetuneConfig().epochs == 10
    cfg = resolve_dataclass(ItemTrainConfig, overrides=["probe_cs=[1, 1e-2]"])
    assert cfg.probe_cs == [1.0, 0.01] and all(type(c) is float for c in cfg.probe_cs)
    assert torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=cfg.lr)  # a float AdamW accepts
