import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from affectfuse.data.sequences import from_arrays
from affectfuse.data.synthetic import make_eri_arrays
from affectfuse.labels import ERI_EMOTIONS
from affectfuse.training.checkpoint import load_checkpoint, model_from_checkpoint
from affectfuse.training.config import ConfigError, RunConfig, resolve_config
from affectfuse.training.eri import class_targets, eri_loss, fit, predict

DIMS = {"audio": 64, "visual": 96}
# A small but complete model: every part of the paper's architecture, narrower (a few seconds to train).
SMALL = ["model.d_model=32", "model.ff_dim=128", "model.proj_dim=64", "model.modality_dropout=0.0",
         "model.interaction_dropout=0.0", "model.tcn_dropout=0.0", "data.seq_len=10", "train.lr=5e-3",
         "train.batch_size=64", "train.ema_decay=0.9", "train.threads=1", "train.progress=false",
         "train.tensorboard=false"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _data(n_train, signal="planted", steps=10, noise=1.0):
    f, y = make_eri_arrays(n_train, steps=steps, dims=DIMS, signal=signal, seed=0, noise=noise)
    fv, yv = make_eri_arrays(200, steps=steps, dims=DIMS, signal="planted", seed=1, noise=noise)
    return from_arrays(f, y, ERI_EMOTIONS), from_arrays(fv, yv, ERI_EMOTIONS)


def test_class_target_is_the_emotions_at_one_and_loss_is_alpha_mse_plus_beta_ce():
    y = torch.tensor([[0.2, 1.0, 0.5], [1.0, 1.0, 0.1]])
    torch.testing.assert_close(class_targets(y), torch.tensor([[0, 1.0, 0], [0.5, 0.5, 0]]))
    out = {"intensity": torch.tensor([[0.1, 0.8, 0.5], [0.9, 0.7, 0.3]]), "logits": torch.randn(2, 3)}
    cfg = RunConfig().train
    loss, mse, ce = eri_loss(out, y, cfg)
    want_ce = -(class_targets(y) * F.log_softmax(out["logits"], 1)).sum(1).mean()
    torch.testing.assert_close(loss, F.mse_loss(out["intensity"], y) + 0.01 * want_ce)
    cfg.class_loss = False
    loss, _, ce = eri_loss(out, y, cfg)
    torch.testing.assert_close(loss, F.mse_loss(out["intensity"], y))
    assert ce == 0.0


def test_config_layers_defaults_yaml_overrides(tmp_path):
    cfg = RunConfig()
    assert (cfg.train.alpha, cfg.train.beta, cfg.train.lr, cfg.train.weight_decay) == (1.0, 0.01, 1e-4, 1e-3)
    assert (cfg.train.step_size, cfg.train.gamma, cfg.train.clip_norm, cfg.train.ema_decay) == (30, 0.5, 0.1, 0.99)
    assert (cfg.train.patience, cfg.train.batch_size, cfg.train.max_epochs, cfg.data.seq_len) == (15, 256, 100, 30)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"train": {"lr": "3e-4", "ema": False}, "model": {"d_model": 64}}))
    cfg = resolve_config(recipe, ["train.lr=1e-3", "model.modality_set=A+V"])
    assert cfg.train.lr == 1e-3 and cfg.train.ema is False and cfg.model.d_model == 64
    assert cfg.model.modality_set == "A+V" and cfg.train.beta == 0.01
    with pytest.raises(ConfigError, match="unknown key 'train.lrr'"):
        resolve_config(None, ["train.lrr=1"])
    with pytest.raises(ConfigError, match="train.batch_size must be an integer"):
        resolve_config(None, ["train.batch_size=big"])


def test_planted_signal_is_learned_and_shuffled_labels_are_not():
    # Every emotion is planted (affectfuse.data.synthetic); Fear needs both modalities. The network alone
    # (no probe-started path) must learn it, interaction included.
    train, val = _data(600, noise=0.3)
    cfg = resolve_config(None, SMALL + ["train.max_epochs=6", "train.weight_decay=0", "train.clip_norm=0",
                                        "model.pooled_skip=false"])
    res = fit(cfg, train, val)
    best = res.history[res.best_epoch - 1]
    assert res.best_metric >= 0.9, best
    assert min(best[f"r_{e}"] for e in ERI_EMOTIONS) >= 0.7, best
    pred = predict(model_from_checkpoint(res.checkpoint), val)
    np.testing.assert_allclose(pred, res.val_predictions, atol=1e-6)

    train_s, _ = _data(400, signal="shuffled", noise=0.3)
    res_s = fit(resolve_config(None, SMALL + ["train.max_epochs=3"]), train_s, val)
    last = res_s.history[-1]["val_mean_pearson"]
    assert abs(last) < 0.1 and res_s.best_metric < 0.2


def test_killed_run_resumes_to_the_same_result(tmp_path):
    train, val = _data(300)
    args = SMALL + ["train.max_epochs=4", "train.patience=0", "train.step_size=2"]
    full = fit(resolve_config(None, args), train, val, tmp_path / "full")
    part = fit(resolve_config(None, args + ["train.stop_after=2"]), train, val, tmp_path / "cut")
    assert part.epochs == 2 and not part.finished
    resumed = fit(resolve_config(None, args), train, val, tmp_path / "cut", resume=True)
    assert resumed.epochs == 4 and resumed.finished
    for a, b in zip(full.history, resumed.history):
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    sd_full = load_checkpoint(tmp_path / "full")["state_dict"]
    sd_res = load_checkpoint(tmp_path / "cut")["state_dict"]
    assert all(torch.equal(sd_full[k], sd_res[k]) for k in sd_full)
    assert (tmp_path / "cut" / "metrics.csv").read_text().count("\n") == 5  # header + 4 epochs, no duplicates


def test_checkpoint_is_self_describing_and_holds_the_ema_weights(tmp_path):
    train, val = _data(128)
    cfg = resolve_config(None, SMALL + ["train.max_epochs=1", "train.ema_decay=0.5"])
    fit(cfg, train, val, tmp_path, feature_meta={"audio": {"name": "synthetic-audio", "dim": 64,
                                                           "random_weights": False}})
    ckpt = torch.load(tmp_path / "best.pt", weights_only=True)
    assert ckpt["model"]["name"] == "eri_fusion" and ckpt["model"]["args"]["input_dims"] == DIMS
    assert ckpt["label_names"] == list(ERI_EMOTIONS) and ckpt["data"] == {"seq_len": 10, "sequence_mode": "truncate"}
    assert ckpt["feature_sets"]["audio"]["name"] == "synthetic-audio" and ckpt["feature_sets"]["visual"]["dim"] == 96
    assert ckpt["config"]["train"]["ema_decay"] == 0.5 and "torch" in ckpt["versions"]
    last = torch.load(tmp_path / "last.pt", weights_only=True)["training"]
    assert ckpt["epoch"] == 1  # one epoch: best.pt holds the EMA weights of that epoch, not the raw ones
    # the model trains behind its input standardisation (StandardizedInputs.model)
    ema = {k[len("module.model."):]: v for k, v in last["ema"].items() if k.startswith("module.model.")}
    assert all(torch.equal(ckpt["state_dict"][k], ema[k]) for k in ckpt["state_dict"])
    assert any(not torch.equal(ckpt["state_dict"][k], last["model"]["model." + k]) for k in ckpt["state_dict"])
    assert set(ckpt["input_norm"]) == set(DIMS) and ckpt["input_norm"]["visual"]["std"].shape == (96,)
    with pytest.raises(ValueError, match="not an affectfuse ERI checkpoint"):
        torch.save({"x": 1}, tmp_path / "bad.pt")
        load_checkpoint(tmp_path / "bad.pt")


def test_micro_batches_give_the_whole_batch_gradient():
    from affectfuse.training.eri import backward_batch, build_model, model_args

    train, _ = _data(64)
    cfg = resolve_config(None, SMALL + ["model.modality_dropout=0", "model.interaction_dropout=0"])
    grads = []
    for part in (0, 10):
        torch.manual_seed(0)
        cfg.train.micro_batch = part
        model, _ = build_model(cfg, model_args(cfg, train.dims(), 7), train)
        sums = backward_batch(model, train, torch.arange(40), cfg.train)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        assert sums.shape == (3,) and sums[0] > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_a_config_saved_before_new_fields_resumes_as_it_ran(tmp_path):
    from affectfuse.training.config import load_config, save_config

    cfg = RunConfig()
    saved = cfg.to_dict()
    for section, name in (("model", "pooled_skip"), ("data", "standardize"), ("train", "micro_batch")):
        del saved[section][name]
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(saved))
    old = load_config(tmp_path / "old.yaml")
    assert (old.model.pooled_skip, old.data.standardize, old.train.micro_batch) == (False, False, 0)
    save_config(cfg, tmp_path / "new.yaml")
    new = load_config(tmp_path / "new.yaml")
    assert (new.model.pooled_skip, new.data.standardize, new.train.micro_batch) == (True, True, 64)
