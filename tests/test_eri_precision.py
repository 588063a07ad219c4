"""ERI training precision (issue 16): ``train.precision`` auto/fp32/bf16 follows the bf16 detection and its
override, is recorded with the run, keeps the heads in fp32 and the quality of fp32; the ridge probe's own
leave-one-out fit equals scikit-learn's RidgeCV."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from affectfuse.data.sequences import from_arrays
from affectfuse.data.synthetic import make_eri_arrays
from affectfuse.features.face_common import CPU_BF16_ENV
from affectfuse.labels import ERI_EMOTIONS
from affectfuse.training.config import ConfigError, resolve_config
from affectfuse.training.eri import fit
from affectfuse.training.precision import autocast, keep_heads_in_fp32, resolve_precision
from affectfuse.training.probes import RIDGE_ALPHAS, ridge_loo, ridge_predict

DIMS = {"audio": 64, "visual": 96}
SMALL = ["model.d_model=32", "model.ff_dim=128", "model.proj_dim=64", "model.modality_dropout=0.0",
         "model.interaction_dropout=0.0", "model.tcn_dropout=0.0", "data.seq_len=10", "train.lr=5e-3",
         "train.batch_size=64", "train.ema_decay=0.9", "train.threads=1", "train.progress=false",
         "train.tensorboard=false", "train.max_epochs=4"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_auto_follows_the_bf16_detection_and_its_override(monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    assert resolve_precision("auto") == "bf16"
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    assert resolve_precision("auto") == "fp32"
    assert resolve_precision("bf16") == "bf16" and resolve_precision("fp32") == "fp32"
    with pytest.raises(ValueError, match="train.precision must be one of"):
        resolve_precision("fp16")
    with pytest.raises(ConfigError, match="train.precision must be one of auto, fp32, bf16"):
        resolve_config(None, ["train.precision=half"])
    assert resolve_config(None, []).train.precision == "auto"


def test_heads_run_in_fp32_inside_autocast():
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"trunk": torch.nn.Linear(8, 8), "intensity_head": torch.nn.Linear(8, 3)})
    assert keep_heads_in_fp32(model) == ["intensity_head"]
    x = torch.randn(5, 8)
    with autocast("bf16"):
        h = model["trunk"](x)
        out = model["intensity_head"](h)
        assert torch.is_autocast_enabled("cpu")       # restored after the head
        after = model["trunk"](x)
    assert h.dtype == after.dtype == torch.bfloat16 and out.dtype == torch.float32
    torch.testing.assert_close(out, model["intensity_head"](h.float()))
    assert keep_heads_in_fp32(model) == []            # hooked once


@pytest.mark.parametrize("seed", [0, 1])
def test_bf16_training_is_recorded_and_as_good_as_fp32(tmp_path, seed):
    f, y = make_eri_arrays(300, steps=10, dims=DIMS, seed=2 * seed, noise=0.3)
    fv, yv = make_eri_arrays(200, steps=10, dims=DIMS, seed=2 * seed + 1, noise=0.3)
    train, val = from_arrays(f, y, ERI_EMOTIONS), from_arrays(fv, yv, ERI_EMOTIONS)
    scores = {}
    for precision in ("fp32", "bf16"):
        run = tmp_path / precision
        res = fit(resolve_config(None, SMALL + [f"train.seed={seed}", f"train.precision={precision}"]), train, val, run)
        assert res.precision == precision
        assert json.loads((run / "result.json").read_text())["precision"] == precision
        ckpt = torch.load(run / "best.pt", weights_only=True)
        assert ckpt["info"]["precision"] == precision and ckpt["config"]["train"]["precision"] == precision
        assert all(v.dtype == torch.float32 for v in ckpt["state_dict"].values() if v.is_floating_point())
        scores[precision] = res.best_metric
    assert scores["fp32"] > 0.8, scores
    assert abs(scores["bf16"] - scores["fp32"]) < 0.02, scores


@pytest.mark.parametrize("n, p", [(300, 40), (60, 150)])   # primal (N >= P) and dual (N < P)
def test_ridge_loo_equals_sklearn_ridgecv(n, p):
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(n)
    x = (rng.standard_normal((n, p)) @ rng.standard_normal((p, p)) + 3 * rng.standard_normal(p)).astype(np.float32)
    y = x[:, :7] @ rng.standard_normal((7, 7)) * 0.02 + rng.standard_normal((n, 7)) * 0.1
    scaler = StandardScaler().fit(x)
    ref = RidgeCV(alphas=RIDGE_ALPHAS).fit(scaler.transform(x), y)
    ours = ridge_loo(x, y, chunk=32)
    assert ours["alpha"] == ref.alpha_ and ref.alpha_ not in (RIDGE_ALPHAS[0], RIDGE_ALPHAS[-1])
    assert -min(ours["loo_mse"].values()) == pytest.approx(ref.best_score_, rel=1e-6)
    x_new = rng.standard_normal((20, p)).astype(np.float32)
    np.testing.assert_allclose(ridge_predict(ours, x_new), ref.predict(scaler.transform(x_new)), atol=1e-6)
