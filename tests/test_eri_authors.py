"""The authors' ERI model (``eri_authors``) against the facts measured from their code, and their recipe."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from affectfuse.data.sequences import from_arrays
from affectfuse.data.synthetic import make_eri_arrays
from affectfuse.labels import ERI_EMOTIONS
from affectfuse.models.eri import count_parameters, create_eri_model
from affectfuse.models.eri_authors import ERIAuthors, ERIAuthorsArgs, load_authors_weights
from affectfuse.training.config import ConfigError, resolve_config, shipped_recipes
from affectfuse.training.eri import class_targets, early_stopping_update, fit
from affectfuse.training.step import optimizer_step

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "eri_authors_reference.json"


@pytest.fixture(scope="module")
def reference() -> dict:
    if not REFERENCE.is_file():
        pytest.skip(f"reference facts {REFERENCE} are absent")
    return json.loads(REFERENCE.read_text())


def _fill_golden(model: torch.nn.Module) -> None:
    """The reference's weights rule (``golden.weights_rule``)."""
    with torch.no_grad():
        for i, (name, p) in enumerate(model.named_parameters()):
            z = torch.randn(p.shape, generator=torch.Generator().manual_seed(1000 + i))
            if name.endswith("weight_g"):
                p.copy_(1 + 0.1 * z)
            elif p.dim() >= 2:
                p.copy_(z * 0.5 / math.sqrt(p[0].numel()))
            else:
                p.copy_(0.01 * z + (1.0 if "norm" in name and name.endswith("weight") else 0.0))


@pytest.fixture(scope="module")
def golden_model(reference) -> ERIAuthors:
    model = ERIAuthors().eval()
    _fill_golden(model)
    return model


def _golden_inputs():
    audio = torch.randn(2, 30, 1024, generator=torch.Generator().manual_seed(1))
    visual = torch.randn(2, 30, 1536, generator=torch.Generator().manual_seed(2))
    return audio, visual


def test_parameter_count_and_state_dict_names_are_the_authors(reference):
    model = ERIAuthors()
    assert count_parameters(model) == reference["parameters"] == 33_450_510
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert ours == [(e["key"], e["shape"]) for e in reference["state_dict"]]
    assert [n for n, _ in model.named_parameters()] == reference["golden"]["parameter_order"]


def test_reproduces_the_golden_outputs(reference, golden_model):
    model = golden_model
    audio, visual = _golden_inputs()
    with torch.no_grad():
        out = model([audio, visual])
        by_name = model({"audio": audio, "visual": visual})
    golden = reference["golden"]
    torch.testing.assert_close(out["intensity"], torch.tensor(golden["intensity_sigmoid"]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out["logits"], torch.tensor(golden["class_logits"]), atol=1e-5, rtol=0)
    torch.testing.assert_close(by_name["logits"], out["logits"])


def test_loads_lightning_checkpoints_strictly_and_names_a_wrong_file(tmp_path, reference, golden_model):
    source = golden_model
    raw = {k: torch.zeros_like(v) for k, v in source.state_dict().items()}
    ckpt = {"state_dict": {**{f"model.{k}": v for k, v in raw.items()},
                           **{f"model_ema.{k}": v for k, v in source.state_dict().items()}}, "epoch": 3}
    path = tmp_path / "epoch=3.ckpt"
    torch.save(ckpt, path)
    audio, visual = _golden_inputs()
    model = load_authors_weights(ERIAuthors(), path)                 # the EMA copy by default
    with torch.no_grad():
        torch.testing.assert_close(model([audio, visual])["logits"],
                                   torch.tensor(reference["golden"]["class_logits"]), atol=1e-5, rtol=0)
    zeros = load_authors_weights(ERIAuthors(), path, weights="raw")
    assert float(zeros.regress[1].weight.detach().abs().sum()) == 0.0
    broken = dict(source.state_dict())
    broken.pop("class_layer.bias")
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match=r"broken\.pt: does not match eri_authors.*class_layer\.bias"):
        load_authors_weights(ERIAuthors(), tmp_path / "broken.pt")
    with pytest.raises(ValueError, match=r"wrong_dims\.pt: does not match"):
        torch.save(source.state_dict(), tmp_path / "wrong_dims.pt")
        load_authors_weights(ERIAuthors(input_dims={"audio": 64, "visual": 1536}), tmp_path / "wrong_dims.pt")


def test_tcn_is_causal_and_length_is_fixed():
    args = ERIAuthorsArgs(input_dims={"audio": 8, "visual": 6}, d_model=16, ff_dim=32, proj_dim=8, seq_len=12,
                          head_dim=8)
    model = ERIAuthors(args).eval()
    x = torch.randn(1, 12, 8)
    later = x.clone()
    later[:, 7:] += 5.0
    embed = model.input[0]
    with torch.no_grad():
        a, b = embed(x), embed(later)
    torch.testing.assert_close(a[:, :7], b[:, :7])                  # steps before 7 never see steps >= 7
    assert not torch.allclose(a[:, 7:], b[:, 7:])
    with pytest.raises(ValueError, match="exactly 12 steps.*data.seq_len=12"):
        model({"audio": torch.randn(1, 10, 8), "visual": torch.randn(1, 10, 6)})


def test_class_target_multi_hot_is_the_authors():
    y = torch.tensor([[0.2, 1.0, 1.0], [0.3, 0.9, 0.1]])
    torch.testing.assert_close(class_targets(y, "multi_hot"), torch.tensor([[0, 1.0, 1.0], [0, 0, 0]]))
    logits = torch.randn(2, 3)
    ce = F.cross_entropy(logits, class_targets(y, "multi_hot"))
    want = -(torch.tensor([[0, 1.0, 1.0], [0, 0, 0]]) * F.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(ce, want)                             # two emotions at 1 weigh twice


def test_ema_before_step_lags_one_step_and_starts_from_the_initial_weights():
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    w0 = model.weight.detach().clone()
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.5), use_buffers=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 3)
    optimizer_step(model, model(x).pow(2).mean(), opt, ema=ema, ema_before_step=True)
    torch.testing.assert_close(ema.module.weight, w0)                 # EMA still at the initial weights
    w1 = model.weight.detach().clone()
    optimizer_step(model, model(x).pow(2).mean(), opt, ema=ema, ema_before_step=True)
    torch.testing.assert_close(ema.module.weight, 0.5 * w0 + 0.5 * w1)


def test_early_stopping_min_delta_counts_like_lightning():
    state = {"epoch": 0, "best": -float("inf"), "best_epoch": 0, "bad": 0, "finished": False, "es_best": -float("inf")}
    saved = []
    for epoch, score in enumerate([0.30, 0.30005, 0.30008, 0.29, float("nan")], 1):
        state["epoch"] = epoch
        saved.append(early_stopping_update(state, score, patience=3, min_delta=1e-4))
    # 0.30005 and 0.30008 are new bests (checkpointed) but not by > 1e-4: they count as bad epochs.
    assert saved == [True, True, True, False, False]
    assert state["best_epoch"] == 3 and state["es_best"] == 0.30 and state["finished"]


def test_shipped_recipes_select_the_authors_model_and_recipe():
    assert {"affectfuse", "authors", "paper"} <= set(shipped_recipes())
    authors = resolve_config("authors")
    assert authors.model.name == "eri_authors" and authors.model.tcn_levels == 5 and authors.model.ff_dim == 512
    assert (authors.train.patience, authors.train.min_delta, authors.train.seed) == (10, 1e-4, 104)
    assert (authors.train.class_target, authors.train.ema_timing) == ("multi_hot", "before_step")
    paper = resolve_config("paper")
    assert paper.model.name == "eri_authors" and (paper.train.patience, paper.train.min_delta) == (15, 0.0)
    default = resolve_config(None)
    assert default.model.name == "eri_fusion" and default.model.tcn_levels == 2
    # The model's own defaults fill what no layer sets; what a layer sets wins.
    alone = resolve_config(None, ["model.name=eri_authors", "model.ff_dim=64"])
    assert (alone.model.tcn_levels, alone.model.tcn_dropout, alone.model.ff_dim) == (5, 0.2, 64)
    with pytest.raises(ConfigError, match="unknown recipe 'autors'"):
        resolve_config("autors")
    with pytest.raises(ConfigError, match="train.class_target must be one of row_max, multi_hot"):
        resolve_config(None, ["train.class_target=soft"])


def test_authors_recipe_learns_a_planted_signal_and_reloads(tmp_path):
    torch.set_num_threads(1)
    dims = {"audio": 16, "visual": 24}
    f, y = make_eri_arrays(400, steps=10, dims=dims, signal="planted", seed=0, noise=0.3)
    fv, yv = make_eri_arrays(150, steps=10, dims=dims, signal="planted", seed=1, noise=0.3)
    train, val = from_arrays(f, y, ERI_EMOTIONS), from_arrays(fv, yv, ERI_EMOTIONS)
    cfg = resolve_config("authors", ["model.d_model=32", "model.ff_dim=64", "model.proj_dim=32",
                                     "model.tcn_levels=2", "model.modality_dropout=0.1", "data.seq_len=10",
                                     "train.lr=3e-3", "train.batch_size=50", "train.ema_decay=0.9",
                                     "train.max_epochs=10", "train.progress=false", "train.tensorboard=false"])
    res = fit(cfg, train, val, tmp_path / "run")
    assert res.best_metric >= 0.55, res.history[-1]                  # 0.667 when written
    from affectfuse.training.checkpoint import load_checkpoint, model_from_checkpoint
    from affectfuse.training.eri import predict

    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt["model"]["name"] == "eri_authors" and ckpt["model"]["args"]["seq_len"] == 10
    np.testing.assert_allclose(predict(model_from_checkpoint(ckpt), val), res.val_predictions, atol=1e-6)


def test_registry_builds_the_authors_model_from_a_checkpoint_dict():
    model = create_eri_model("eri_authors", {"input_dims": {"a": 4}, "interaction": False, "d_model": 8,
                                             "ff_dim": 16, "proj_dim": 4, "head_dim": 4, "seq_len": 5,
                                             "tcn_levels": 2})
    out = model({"a": torch.randn(3, 5, 4)})
    assert out["intensity"].shape == (3, 7) and out["logits"].shape == (3, 7)
