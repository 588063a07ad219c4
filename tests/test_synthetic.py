import json

import numpy as np
import pytest

from affectfuse.data.layouts import load_table
from affectfuse.data.store import FeatureSet
from affectfuse.data.synthetic import make_eri_arrays, make_eri_dataset
from affectfuse.labels import ERI_EMOTIONS
from affectfuse.metrics.regression import pearson_per_column

DIMS = {"audio": 32, "visual": 48}


def _ridge_r(train_x, train_y, test_x, test_y, lam=1.0):
    """Per-emotion Pearson of a closed-form ridge fit (a simple reader of the planted signal)."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mu) / sd, (test_x - mu) / sd
    a, b = np.c_[a, np.ones(len(a))], np.c_[b, np.ones(len(b))]
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ train_y)
    return pearson_per_column(test_y, b @ w)


def test_arrays_shapes_and_label_rows():
    feats, labels = make_eri_arrays(64, steps=30, seed=3)
    assert feats["audio"].shape == (64, 30, 1024) and feats["visual"].shape == (64, 30, 1536)
    assert all(f.dtype == np.float32 for f in feats.values()) and labels.dtype == np.float32
    assert labels.shape == (64, 7)
    assert (labels.max(axis=1) == 1.0).all()  # exactly 1, as Hume-Reaction's normalised rows
    assert labels.min() > 0.0 and labels.max() <= 1.0
    assert np.isfinite(feats["visual"]).all()
    # temporal structure: neighbouring steps correlate far more than i.i.d. noise would
    x = feats["audio"] - feats["audio"].mean(axis=(0, 1))
    lag1 = (x[:, 1:] * x[:, :-1]).sum() / np.sqrt((x[:, 1:] ** 2).sum() * (x[:, :-1] ** 2).sum())
    assert lag1 > 0.3


def test_deterministic_and_shared_feature_space():
    f1, y1 = make_eri_arrays(20, dims=DIMS, seed=5)
    f2, y2 = make_eri_arrays(20, dims=DIMS, seed=5)
    np.testing.assert_array_equal(f1["visual"], f2["visual"])
    np.testing.assert_array_equal(y1, y2)
    f3, y3 = make_eri_arrays(20, dims=DIMS, seed=6)
    assert not np.allclose(y1, y3)
    steps = {"audio": 12, "visual": 40}
    f4, _ = make_eri_arrays(5, steps=steps, dims=DIMS, seed=1)
    assert f4["audio"].shape == (5, 12, 32) and f4["visual"].shape == (5, 40, 48)


def test_planted_signal_is_per_modality_and_shuffled_has_none():
    n, cut = 1500, 1200
    feats, labels = make_eri_arrays(n, steps=16, dims=DIMS, seed=0)
    pooled = {m: f.mean(axis=1) for m, f in feats.items()}
    both = np.c_[pooled["audio"], pooled["visual"]]
    r_av = _ridge_r(both[:cut], labels[:cut], both[cut:], labels[cut:])
    r_a = _ridge_r(pooled["audio"][:cut], labels[:cut], pooled["audio"][cut:], labels[cut:])
    r_v = _ridge_r(pooled["visual"][:cut], labels[:cut], pooled["visual"][cut:], labels[cut:])
    e = {name: i for i, name in enumerate(ERI_EMOTIONS)}
    # audio carries Amusement and Anxiety, visual Adoration, Disgust and Empathic-Pain
    for name in ("Amusement", "Anxiety"):
        assert r_a[e[name]] > 0.6 and abs(r_v[e[name]]) < 0.2
    for name in ("Adoration", "Disgust", "Empathic-Pain"):
        assert r_v[e[name]] > 0.6 and abs(r_a[e[name]]) < 0.2
    # Surprise and Fear draw on both modalities: both together beat either alone
    for name in ("Surprise", "Fear"):
        assert r_av[e[name]] > max(r_a[e[name]], r_v[e[name]]) + 0.1
    # a third of Fear is the a3 x v4 product, which a linear reader cannot see
    assert r_av[e["Fear"]] < min(r_av[e[name]] for name in ("Amusement", "Adoration", "Surprise")) - 0.05
    assert r_av.mean() > 0.55

    _, shuffled = make_eri_arrays(n, steps=16, dims=DIMS, seed=0, signal="shuffled")
    assert sorted(map(tuple, shuffled)) == sorted(map(tuple, labels))  # same rows, permuted
    r_s = _ridge_r(both[:cut], shuffled[:cut], both[cut:], shuffled[cut:])
    assert abs(r_s.mean()) < 0.1


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown signal 'random'"):
        make_eri_arrays(4, signal="random")


def test_dataset_on_disk_loads_as_abaw5(tmp_path):
    data_info = make_eri_dataset(tmp_path / "syn", n_videos=30, dims={"audio": 8, "visual": 12},
                                 steps={"audio": 20, "visual": 30}, rates={"audio": 2.0, "visual": 3.0}, seed=2)
    header = data_info.read_text().splitlines()[0]
    assert header == "File_ID,Split,Adoration,Amusement,Anxiety,Disgust,Empathic-Pain,Fear,Surprise,Age,Country"
    table = load_table(data_info)
    assert table.file_ids[0] == "[00001]" and table.ids[0] == "00001"
    assert {"train", "val", "test"} == set(table.splits) and table.splits.count("train") == 18
    test = table.subset("test")
    assert np.isnan(test.labels).all()
    assert (table.subset(["train", "val"]).labels.max(axis=1) == 1.0).all()
    sets = {m: FeatureSet.open(tmp_path / "syn" / "features" / m) for m in ("audio", "visual")}
    table.check_features(sets)
    assert sets["visual"].meta.dim == 12 and sets["audio"].meta.rate == 2.0
    assert sets["audio"].meta.extra["synthetic"]["signal"] == "planted"
    steps = [sets["visual"][vid].steps for vid in table.ids]
    assert min(steps) >= 24 and max(steps) <= 30 and len(set(steps)) > 1
    vf = sets["visual"]["00001"]
    assert (vf.values[~vf.mask] == 0).all()
    np.testing.assert_allclose(vf.timestamps[:3], [0.0, 1 / 3, 2 / 3])


def test_synth_command(tmp_path, capsys):
    from affectfuse.cli import main

    out = tmp_path / "syn"
    assert main(["synth", str(out), "--videos", "12", "--audio-dim", "6", "--visual-dim", "10",
                 "--signal", "shuffled", "--seed", "4"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["data_info"] == str(out / "data_info.csv")
    table = load_table(out / "data_info.csv")
    assert len(table) == 12
    assert FeatureSet.open(out / "features" / "visual").meta.dim == 10
    assert main(["synth", str(tmp_path / "bad"), "--videos", "2"]) == 1
