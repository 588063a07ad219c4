"""``classify cv`` with the default item classifier (hidden=0, the frozen probe): the model is its probe, and the
epoch-choosing fit that nothing could train is skipped (one fit per fold, not two)."""

from __future__ import annotations

import numpy as np

import affectfuse.training.items as items_mod
from affectfuse.training.items import ItemTrainConfig, cross_validate


def _planted(n_per_group=30, groups=4, seed=0):
    from affectfuse.data.items import ItemRows

    rng = np.random.default_rng(seed)
    rows, labels, names = [], [], []
    for g in range(groups):
        for i in range(n_per_group):
            c = i % 3
            x = rng.normal(0, 1, (int(rng.integers(1, 4)), 8)).astype(np.float32)
            x[:, c] += 1.5                                  # class signal in one dim per class
            rows.append(x)
            labels.append(c)
            names.append(f"s{g}")
    return ItemRows([f"i{k}" for k in range(len(rows))], ["f"], [rows], np.asarray(labels), names)


def test_default_cv_is_its_probe_with_one_fit_per_fold(monkeypatch):
    calls = []
    real = items_mod.fit_items
    monkeypatch.setattr(items_mod, "fit_items", lambda *a, **k: calls.append(k.get("epochs")) or real(*a, **k))
    res = cross_validate(_planted(), ["a", "b", "c"], ItemTrainConfig(probe_cs=[1.0, 10.0]))
    assert len(res["folds"]) == 4 and calls == [0, 0, 0, 0]
    assert all(f["epochs"] == 0 for f in res["folds"])
    np.testing.assert_allclose(res["probabilities"]["model"], res["probabilities"]["probe"], atol=1e-5)
    assert res["model"]["uar"] == res["probe"]["uar"] > 0.6

    calls.clear()   # an mlp can train: the epoch count is chosen on held-out groups first (two fits per fold)
    cross_validate(_planted(), ["a", "b", "c"], ItemTrainConfig(hidden=8, epochs=2, probe_cs=[1.0]))
    assert len(calls) == 8 and calls[0::2] == [None] * 4
