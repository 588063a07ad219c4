"""The EXPR frame transformer: shapes, masks, gradients, a planted per-frame task learned, checkpoints."""

import numpy as np
import pytest
import torch

from affectfuse.data.affwild2 import ExprVideo
from affectfuse.models.expr import ExprModelConfig, ExprTransformer
from affectfuse.training.expr import (ExprTrainConfig, evaluate_probabilities, load_checkpoint,
                                      predict_videos, save_checkpoint, train_expr)
from affectfuse.training.temporal import apply_smoothing

TINY = dict(d_model=32, n_heads=2, n_layers=1, ff_mult=2, dropout=0.1)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest on a shared machine


def planted_videos(n_videos, rng, protos, noise=1.2, frames=(80, 200)):
    """Videos of constant-class segments; features = class prototype + noise; 10 % frames faceless."""
    videos = []
    for i in range(n_videos):
        n = int(rng.integers(*frames))
        labels, t = np.empty(n, np.int64), 0
        while t < n:
            seg = int(rng.integers(10, 40))
            labels[t:t + seg] = rng.integers(0, 8)
            t += seg
        x = protos[labels] + noise * rng.standard_normal((n, protos.shape[1]))
        face = rng.random(n) > 0.1
        scored = np.where(rng.random(n) < 0.05, -1, labels)
        videos.append(ExprVideo(f"v{i}", x.astype(np.float32), face, scored, np.arange(1, n + 1), face))
    return videos


def test_shapes_padding_and_gradients():
    torch.manual_seed(0)
    model = ExprTransformer(ExprModelConfig(face_dim=10, audio_dim=4, **TINY)).eval()
    x = torch.randn(3, 20, 14)
    valid = torch.rand(3, 20) > 0.2
    pad = torch.zeros(3, 20, dtype=torch.bool)
    pad[0, 15:] = True
    out = model(x, valid, pad)
    assert out.shape == (3, 20, 8) and torch.isfinite(out).all()
    # padded frames do not change the others' outputs
    x2 = x.clone()
    x2[0, 15:] = 100.0
    assert torch.allclose(model(x2, valid, pad)[0, :15], out[0, :15], atol=1e-5)
    # faceless frames use the learned no-face token: their face features do not matter
    x3 = x.clone()
    x3[~valid] = 0.0
    x3[..., 10:] = x[..., 10:]
    assert torch.allclose(model(x3, valid, pad), out, atol=1e-5)
    model.train()
    model(x, valid, pad).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with pytest.raises(ValueError, match="columns"):
        model(torch.randn(1, 5, 9))


def test_planted_task_is_learned_and_checkpoint_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    protos = rng.standard_normal((8, 12)).astype(np.float32)
    train, val = planted_videos(24, rng, protos), planted_videos(8, rng, protos)
    cfg = ExprTrainConfig(window=32, stride=16, predict_stride=16, epochs=8, lr=2e-3, batch_size=16,
                          ema_decay=0.5, model=TINY)
    run = train_expr(train, val, cfg, run_dir=tmp_path / "run", info={"feature_sets": [{"name": "planted", "dim": 12}]})
    assert run.best["macro_f1"] >= 0.9, run.history
    assert run.history[0]["val_macro_f1"] < run.best["macro_f1"]
    assert (tmp_path / "run" / "config.yaml").is_file() and (tmp_path / "run" / "metrics.csv").is_file()
    model, ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    assert ckpt["info"]["class_names"][7] == "Other" and ckpt["info"]["feature_sets"][0]["name"] == "planted"
    assert ckpt["model"]["args"]["face_dim"] == 12 and ckpt["train_config"]["gamma"] == cfg.gamma
    assert ckpt["kind"] == "expr" and ckpt["label_names"][7] == "Other" and ckpt["task"]["level"] == "frame"
    p1 = predict_videos(run.model, val, 32, 16)
    p2 = predict_videos(model, val, 32, 16)
    assert all(np.allclose(p1[v], p2[v], atol=1e-5) for v in p1)
    # the best epoch's score is after the smoothing chosen on validation, stored in the checkpoint
    assert ckpt["info"]["smoothing"] == run.smoothing
    smoothed = apply_smoothing(p2, run.smoothing)
    assert evaluate_probabilities(val, smoothed)["macro_f1"] == pytest.approx(run.best["macro_f1"], abs=1e-9)
    save_checkpoint(tmp_path / "copy.pt", model, cfg, {"class_names": ["a"]})
    assert load_checkpoint(tmp_path / "copy.pt")[1]["info"]["class_names"] == ["a"]


def test_bad_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")
    torch.save({"format": "other"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not an affectfuse EXPR checkpoint"):
        load_checkpoint(tmp_path / "x.pt")
    with pytest.raises(ValueError, match="EXPR training options: unknown key 'bogus'"):
        ExprTrainConfig.from_dict({"lr": 1.0, "bogus": 2})


def test_resumed_run_equals_uninterrupted_and_redoes_nothing(tmp_path, monkeypatch):
    import affectfuse.training.expr as expr_training

    rng = np.random.default_rng(1)
    protos = rng.standard_normal((8, 12)).astype(np.float32)
    train, val = planted_videos(8, rng, protos, frames=(60, 90)), planted_videos(3, rng, protos, frames=(60, 90))
    cfg = ExprTrainConfig(window=32, stride=16, predict_stride=16, epochs=4, patience=10, lr=2e-3, batch_size=16,
                          ema_decay=0.5, model=TINY)
    whole = train_expr(train, val, cfg, run_dir=tmp_path / "whole")

    real, calls = expr_training.smoothed_scores, []  # the validation scorer, called once per epoch

    def crash_in_epoch_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed during epoch 3")
        return real(*args, **kwargs)

    monkeypatch.setattr(expr_training, "smoothed_scores", crash_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train_expr(train, val, cfg, run_dir=tmp_path / "cut")
    monkeypatch.setattr(expr_training, "smoothed_scores", real)
    with pytest.raises(ValueError, match="--resume"):
        train_expr(train, val, cfg, run_dir=tmp_path / "cut")
    with pytest.raises(ValueError, match="config differs"):
        train_expr(train, val, ExprTrainConfig(**{**cfg.__dict__, "lr": 1e-3}), run_dir=tmp_path / "cut", resume=True)
    resumed = train_expr(train, val, cfg, run_dir=tmp_path / "cut", resume=True)
    assert [r["val_macro_f1"] for r in resumed.history] == [r["val_macro_f1"] for r in whole.history]
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in whole.history]
    assert resumed.best_epoch == whole.best_epoch
    for k, v in whole.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    # a finished run resumes to the same result without training again
    monkeypatch.setattr(expr_training, "smoothed_scores", lambda *a, **k: pytest.fail("trained again"))
    again = train_expr(train, val, cfg, run_dir=tmp_path / "cut", resume=True)
    assert again.best_epoch == whole.best_epoch and len(again.history) == 4
