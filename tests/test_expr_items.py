"""Item-level classification from a manifest: row statistics, pooling, the built-in logistic probe, the
head started at the probe, `expr train/evaluate/predict/cv --manifest` (all on planted data, seconds)."""

import json

import numpy as np
import pytest
import torch

from affectfuse.cli import main
from affectfuse.data.items import ItemRows, pool_items, row_norm_stats, standardise_per_group
from affectfuse.data.store import FeatureSet, FeatureSetMeta, VideoFeatures
from affectfuse.training.items import ItemTrainConfig, cross_validate, fit_items
from affectfuse.training.probes import block_scaler


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _rows(rng, n_items, dim, scales):
    return [(rng.standard_normal((int(rng.integers(0, 6)), dim)) * scales + 3 * scales).astype(np.float32)
            for _ in range(n_items)]


def test_row_statistics_and_pooling_equal_numpy():
    rng = np.random.default_rng(0)
    scales = np.array([1e-3, 1.0, 1e3, 1e5, 0.0])            # eGeMAPS-like spread, one constant dim
    rows = _rows(rng, 30, 5, scales)
    other = [rng.standard_normal((len(r), 2)).astype(np.float32) for r in rows]
    items = ItemRows([f"i{k}" for k in range(30)], ["a", "b"], [rows, other], np.zeros(30, np.int64))
    norm = row_norm_stats(items)
    stacked = np.concatenate(rows).astype(np.float64)
    assert np.allclose(norm["a"]["mean"], stacked.mean(0), rtol=1e-6)
    assert np.allclose(norm["a"]["std"][:4], stacked.std(0)[:4], rtol=1e-5) and norm["a"]["std"][4] == 1.0
    pooled = pool_items(items, norm)                          # (N, 2 * 5 + 2 * 2)
    assert pooled.shape == (30, 14) and np.isfinite(pooled).all()
    k = next(i for i, r in enumerate(rows) if len(r) >= 2)
    z = (rows[k].astype(np.float64) - stacked.mean(0)) / norm["a"]["std"]
    assert np.allclose(pooled[k, :5], z.mean(0), atol=1e-5) and np.allclose(pooled[k, 5:10], z.std(0), atol=1e-5)
    assert not pooled[[i for i, r in enumerate(rows) if len(r) == 0]].any()   # no rows -> zeros
    mean, scale = block_scaler(pooled, [10, 4])
    z = (pooled - mean) / scale
    assert np.allclose(z[:, :10].var(0).sum(), (pooled[:, :10].std(0) > 1e-12).sum() / 10, atol=1e-4)


def test_per_group_standardisation_uses_each_groups_rows():
    rng = np.random.default_rng(1)
    rows = [rng.standard_normal((3, 2)).astype(np.float32) + (10 if k < 4 else -5) for k in range(8)]
    items = ItemRows([str(k) for k in range(8)], ["a"], [rows], np.zeros(8, np.int64), ["g1"] * 4 + ["g2"] * 4)
    out = standardise_per_group(items)
    for g in (slice(0, 4), slice(4, 8)):
        stacked = np.concatenate(out.rows[0][g])
        assert np.allclose(stacked.mean(0), 0, atol=1e-5) and np.allclose(stacked.std(0), 1, atol=1e-4)


def planted_items(n_per_group=40, groups=6, seed=0):
    """3 classes: class 0 vs 1 lives in a sign product (xor, invisible to a linear probe), class 2 in a
    shift of dim 2; 12 noise dims; a few rows per item; every group (speaker) has its own offset."""
    rng = np.random.default_rng(seed)
    ids, rows, labels, names = [], [], [], []
    for g in range(groups):
        offset = rng.standard_normal(16) * 0.5
        for k in range(n_per_group):
            c = k % 3
            a, b = rng.choice([-1.0, 1.0], 2)
            if c < 2:
                b = a * (1 if c == 0 else -1)
            centre = np.concatenate([[a * 1.5, b * 1.5, 2.0 * (c == 2)], np.zeros(13)]) + offset
            rows.append((centre + 0.4 * rng.standard_normal((int(rng.integers(2, 5)), 16))).astype(np.float32))
            ids.append(f"g{g}_{k}"), labels.append(c), names.append(f"s{g}")
    return ItemRows(ids, ["planted"], [rows], np.asarray(labels), names)


def test_head_learns_what_its_probe_cannot_and_never_loses_on_validation():
    items = planted_items()
    fit, val = np.arange(160), np.arange(160, 240)
    config = ItemTrainConfig(hidden=128, epochs=100, patience=100, lr=1e-2, probe_cs=[1.0])
    run = fit_items(items.subset(fit), items.subset(val), config, ["c0", "c1", "c2"])
    assert run.probe["val"]["uar"] < 0.75 and run.val["uar"] > run.probe["val"]["uar"] + 0.1, (run.probe["val"], run.val)
    assert run.best_epoch > 0
    linear_only = fit_items(items.subset(fit), items.subset(val),
                            ItemTrainConfig(hidden=0, epochs=5, probe_cs=[1.0]), ["c0", "c1", "c2"])
    assert linear_only.val["uar"] >= linear_only.probe["val"]["uar"]        # started at the probe
    default = fit_items(items.subset(fit), items.subset(val), ItemTrainConfig(probe_cs=[1.0]), ["c0", "c1", "c2"])
    assert default.best_epoch == 0 and default.val == default.probe["val"]  # default hidden=0: the probe itself
    epoch0 = fit_items(items.subset(fit), items.subset(val), ItemTrainConfig(hidden=128, epochs=0, probe_cs=[1.0]),
                       ["c0", "c1", "c2"])
    assert epoch0.best_epoch == 0 and abs(epoch0.val["uar"] - epoch0.probe["val"]["uar"]) < 1e-9


def test_group_norm_only_for_groups_big_enough_to_have_statistics():
    """Photos of one-off people (faces: median 1 photo per person) keep global statistics: per-person
    standardisation of one row would map every such item to zeros and the probe to chance."""
    from affectfuse.training.items import median_group_size

    speakers = planted_items(n_per_group=30, groups=4, seed=3)          # groups of 30 items: standardised
    run = fit_items(speakers, None, ItemTrainConfig(probe_cs=[1.0]), ["c0", "c1", "c2"], epochs=0)
    assert median_group_size(speakers.groups) == 30 and run.classifier.group_norm
    rng = np.random.default_rng(4)
    y = np.arange(120) % 3
    rows = [(np.eye(16)[c] * 3 + 0.5 * rng.standard_normal(16))[None].astype(np.float32) for c in y]
    people = ItemRows([f"p{k}" for k in range(120)], ["face"], [rows], y,
                      [f"person{k}" for k in range(100)] + ["twin"] * 20)   # median 1 photo per person
    fit, val = np.arange(0, 120, 2), np.arange(1, 120, 2)
    run = fit_items(people.subset(fit), people.subset(val), ItemTrainConfig(probe_cs=[1.0]), ["c0", "c1", "c2"])
    assert median_group_size(people.groups) == 1 and not run.classifier.group_norm
    assert run.val["uar"] > 0.9, run.val
    forced = fit_items(people.subset(fit), people.subset(val), ItemTrainConfig(probe_cs=[1.0], min_group_size=1),
                       ["c0", "c1", "c2"])
    assert forced.classifier.group_norm and forced.val["uar"] < run.val["uar"] - 0.3, forced.val


def test_cross_validation_leaves_groups_out_and_beats_the_probe():
    items = planted_items(n_per_group=60, groups=4, seed=2)
    res = cross_validate(items, ["c0", "c1", "c2"], ItemTrainConfig(hidden=128, epochs=100, patience=100, lr=1e-2,
                                                                    probe_cs=[1.0, 10.0]))
    assert [f["held_out"] for f in res["folds"]] == [["s0"], ["s1"], ["s2"], ["s3"]]
    assert res["model"]["uar"] > res["probe"]["uar"] + 0.05, res["folds"]


def _write_manifest(tmp_path, items: ItemRows, val_groups=("s4", "s5")):
    fs = FeatureSet.create(tmp_path / "fx", FeatureSetMeta("planted", 16, rate=2.0))
    lines = ["id,label,split,group"]
    for vid, r, c, g in zip(items.ids, items.rows[0], items.labels, items.groups):
        fs.write(VideoFeatures(vid, r, np.arange(len(r)) / 2.0, np.ones(len(r), bool)))
        lines.append(f"{vid},{['calm', 'glad', 'mad'][c]},{'val' if g in val_groups else 'train'},{g}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def _last_json(capsys):
    return json.loads([ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")][-1])


def test_manifest_train_evaluate_predict_cv(tmp_path, capsys):
    items = planted_items(n_per_group=24)
    d = _write_manifest(tmp_path, items)
    fast = ["--set", "hidden=128", "--set", "epochs=100", "--set", "patience=100", "--set", "lr=0.01",
            "--set", "probe_cs=[1.0,10.0]"]
    assert main(["expr", "train", "--manifest", str(d / "m.csv"), "--features", str(d / "fx"), *fast,
                 "--out", str(d / "run")]) == 0
    out = _last_json(capsys)
    result = json.loads((d / "run" / "result.json").read_text())
    assert out["beats_probe"] is True and result["model"]["uar"] >= result["probe"]["uar"]
    ckpt = torch.load(d / "run" / "best.pt", weights_only=True)
    train = standardise_per_group(items.subset([i for i, g in enumerate(items.groups) if g not in ("s4", "s5")]))
    train_rows = np.concatenate(train.rows[0]).astype(np.float64)          # each speaker standardised first
    assert np.allclose(ckpt["input_norm"]["planted"]["mean"].numpy(), train_rows.mean(0), atol=1e-5)
    assert np.allclose(ckpt["input_norm"]["planted"]["std"].numpy(), train_rows.std(0), rtol=1e-4)
    assert main(["expr", "evaluate", "--checkpoint", str(d / "run" / "best.pt"), "--manifest", str(d / "m.csv"),
                 "--split", "val", "--out", str(d / "ev")]) == 0
    scores = _last_json(capsys)
    assert scores["n"] == 48 and abs(scores["uar"] - result["model"]["uar"]) < 1e-3
    assert (d / "ev" / "probabilities.csv").is_file()
    assert main(["expr", "predict", "--checkpoint", str(d / "run" / "best.pt"), "--manifest", str(d / "m.csv"),
                 "--split", "val", "--out", str(d / "p.csv")]) == 0
    assert (d / "p.csv").read_text().splitlines()[0] == "id,calm,glad,mad,predicted"
    assert main(["expr", "train", "--manifest", str(d / "m.csv"), "--features", str(d / "fx"),
                 "--out", str(d / "run")]) == 1                                    # exists: --resume
    assert main(["expr", "cv", "--manifest", str(d / "m.csv"), "--features", str(d / "fx"), *fast,
                 "--folds", "3", "--out", str(d / "cv")]) == 0
    cv = _last_json(capsys)
    assert cv["beats_probe"], cv
    saved = json.loads((d / "cv" / "cv.json").read_text())
    assert len(saved["folds"]) == 3 and (d / "cv" / "model_confusion.png").is_file()
    assert len((d / "cv" / "probabilities.csv").read_text().splitlines()) == len(items) + 1
