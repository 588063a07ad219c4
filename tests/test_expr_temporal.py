"""Per-frame EXPR on planted Aff-Wild2-layout data: the generator, smoothing chosen on validation and stored,
evaluate applying the stored window, and the default model against its built-in per-frame probe."""

import json

import numpy as np
import pytest
import torch

import affectfuse
from affectfuse.cli import main
from affectfuse.data.affwild2 import load_expr_videos, read_expr_folder
from affectfuse.data.store import FeatureSet
from affectfuse.data.synthetic_affwild2 import make_affwild2_dataset, make_affwild2_people, to_expr_videos
from affectfuse.training.expr import (ExprTrainConfig, centred_videos, evaluate_probabilities, load_checkpoint,
                                      predict_videos, train_expr)
from affectfuse.training.frame_probe import frame_probe
from affectfuse.inference.expr import ExprCheckpointExpressions
from affectfuse.labels import EXPR_CLASSES
from affectfuse.models.expr_decoder import decode, forward_backward, label_statistics, transition_matrix
from affectfuse.training.temporal import (HMM_SCALES, apply_smoothing, choose_smoothing, describe, resolve_smoothing,
                                         smoothing_spec)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _runs(labels: np.ndarray) -> np.ndarray:
    """Lengths of the runs of equal labels."""
    cuts = np.flatnonzero(np.diff(labels)) + 1
    return np.diff(np.r_[0, cuts, len(labels)])


def test_planted_affwild2_people_are_sticky_weak_and_deterministic():
    a, b = make_affwild2_people(12, seed=3), make_affwild2_people(12, seed=3)
    assert [p["id"] for p in a] == [p["id"] for p in b]
    assert all(np.array_equal(p["features"]["face_a"], q["features"]["face_a"]) for p, q in zip(a, b))
    assert not np.array_equal(make_affwild2_people(12, seed=4)[0]["hidden"], a[0]["hidden"])
    hidden = np.concatenate([p["hidden"] for p in a])
    assert np.median(np.concatenate([_runs(p["hidden"]) for p in a])) >= 20   # sticky: runs of ~1.5 s
    assert set(np.unique(hidden)) == set(range(8))
    labels = np.concatenate([p["labels"] for p in a])
    assert 0.02 < (labels == -1).mean() < 0.5                                   # runs of -1 ...
    assert np.array_equal(labels[labels >= 0], hidden[labels >= 0])            # ... over the hidden class
    assert any(p["id"].endswith("_left") for p in a) and any(p["id"].endswith("_right") for p in a)
    assert 0.9 < np.concatenate([p["face"] for p in a]).mean() < 1.0


def test_written_layout_reads_back_as_the_in_memory_videos(tmp_path):
    paths = make_affwild2_dataset(tmp_path / "set", n_train=3, n_val=2, seed=1, frames=(60, 90))
    sets = [FeatureSet.open(p) for p in paths["features"]]
    train = load_expr_videos(read_expr_folder(paths["train"]), sets)
    val = load_expr_videos(read_expr_folder(paths["val"]), sets)
    want = {v.id: v for v in to_expr_videos(make_affwild2_people(5, seed=1, frames=(60, 90)))}
    assert {v.id for v in train + val} == set(want) and not {v.id for v in train} & {v.id for v in val}
    for v in train + val:
        assert np.array_equal(v.labels, want[v.id].labels)
        assert np.allclose(v.features, want[v.id].features) and np.array_equal(v.face, want[v.id].face)


def test_choose_smoothing_finds_the_window_that_helps_and_none_when_nothing_does():
    rng = np.random.default_rng(0)
    labels = [np.repeat(rng.integers(0, 8, 20), 40) for _ in range(4)]            # runs of 40 frames
    noisy = [np.eye(8)[y] * 0.6 + rng.random((len(y), 8)) for y in labels]        # one frame: often wrong
    noisy = [p / p.sum(1, keepdims=True) for p in noisy]
    chosen = choose_smoothing(labels, noisy)
    assert chosen["method"] != "none" and chosen["window"] >= 9
    assert chosen["macro_f1"] > chosen["unsmoothed_macro_f1"] + 0.1
    assert chosen["macro_f1"] == chosen["scores"][f"{chosen['method']}:{chosen['window']}"]
    flicker = [np.arange(400) % 8 for _ in range(2)]                               # changes every frame
    exact = [np.eye(8)[y] for y in flicker]
    assert choose_smoothing(flicker, exact)["method"] == "none"
    assert resolve_smoothing(None, {"method": "mean", "window": 9}) == {"method": "mean", "window": 9}
    assert resolve_smoothing("mode:5", {"method": "mean", "window": 9}) == {"method": "mode", "window": 5}
    assert resolve_smoothing(None, None) == {"method": "none", "window": 1}
    with pytest.raises(ValueError, match="unknown smoothing"):
        resolve_smoothing("median:3", None)


def _last_json(capsys):
    return json.loads([ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")][-1])


def test_default_model_beats_its_probe_and_evaluate_load_and_predict_apply_the_stored_smoothing(tmp_path, capsys):
    """Default ``expr train`` (no --set but fewer epochs) on a small planted set: validation macro F1 with the
    smoothing / decoder chosen on validation beats the per-frame probe with its best window; the checkpoint
    stores the smoothing and ``expr evaluate``, ``load()``'s predictor and the raw-video path apply it unless
    --smooth says otherwise."""
    paths = make_affwild2_dataset(tmp_path / "set", n_train=8, n_val=4, seed=0, frames=(200, 300))
    run = tmp_path / "run"
    assert main(["expr", "train", "--features", *map(str, paths["features"]), "--annotations", str(paths["train"]),
                 "--val-annotations", str(paths["val"]), "--set", "epochs=4", "--out", str(run)]) == 0
    result = json.loads((run / "result.json").read_text())
    versus = result["versus_probe"]
    assert versus["model"] >= versus["probe"] + 0.03 and versus["probe"] > 0.2, versus  # 0.31 vs 0.23 when written
    model, ckpt = load_checkpoint(run / "best.pt")
    stored = ckpt["info"]["smoothing"]
    assert stored == result["val"]["smoothing"] and ckpt["info"]["probe"]["macro_f1"] == pytest.approx(versus["probe"], abs=1e-4)
    sets = [FeatureSet.open(p) for p in paths["features"]]
    val = load_expr_videos(read_expr_folder(paths["val"]), sets)
    cfg = ckpt["train_config"]
    raw = predict_videos(model, val, cfg["window"], cfg["predict_stride"])
    want = evaluate_probabilities(val, apply_smoothing(raw, stored))["macro_f1"]
    capsys.readouterr()
    assert main(["expr", "evaluate", "--checkpoint", str(run / "best.pt"), "--annotations", str(paths["val"])]) == 0
    assert _last_json(capsys)["macro_f1"] == pytest.approx(round(want, 4), abs=1e-4)
    assert want == pytest.approx(versus["model"], abs=1e-4)
    other = {"method": "mode", "window": 45} if stored["method"] == "none" else {"method": "none", "window": 1}
    flag = "none" if other["method"] == "none" else "mode:45"
    other_f1 = evaluate_probabilities(val, apply_smoothing(raw, other))["macro_f1"]
    assert abs(other_f1 - want) > 1e-3  # the stored window matters on this set, so the check can fail
    assert main(["expr", "evaluate", "--checkpoint", str(run / "best.pt"), "--annotations", str(paths["val"]),
                 "--smooth", flag]) == 0
    assert _last_json(capsys)["macro_f1"] == pytest.approx(round(other_f1, 4), abs=1e-4)
    # load()'s predictor and the raw-video path (predict) apply the stored smoothing / decoder too
    predictor = affectfuse.load(run / "best.pt")
    assert predictor.smoothing == stored and predictor.describe()["smoothing"] == describe(stored)
    frame_table = predictor.predict(paths["features"], [v.id for v in val])
    got = {vid: frame_table.loc[vid].to_numpy() for vid in frame_table.index.get_level_values("id").unique()}
    assert evaluate_probabilities(val, got)["macro_f1"] == pytest.approx(want, abs=1e-6)
    faces = ExprCheckpointExpressions.__new__(ExprCheckpointExpressions)  # its extractors are not needed here
    faces.model, faces.fill, faces.device = model, "ffill", "cpu"
    faces.window, faces.stride = cfg["window"], cfg["predict_stride"]
    faces.smoothing, faces.checkpoint_classes = resolve_smoothing(None, stored), list(EXPR_CLASSES)
    v = val[0]
    assert np.allclose(faces.finish(v.features, v.face), apply_smoothing(raw, stored)[v.id], atol=1e-5)


def test_smoothing_is_chosen_in_memory_too():
    videos = to_expr_videos(make_affwild2_people(6, seed=2, frames=(120, 160)))
    cfg = ExprTrainConfig.from_dict({"epochs": 1, "probe": False, "model": {"probe_skip": False}})
    run = train_expr(videos[:-2], videos[-2:], cfg)
    assert run.smoothing is not None and run.versus_probe == {"model": run.best["macro_f1"], "probe": None}


def test_skip_path_keeps_the_probe_and_a_run_that_loses_keeps_its_start(caplog):
    """The skip path is the start probe's solution (on centred frames when centring is on) and stays there; a
    run whose training only hurts (a learning rate that wrecks the encoder) ends at its start: epoch 0."""
    videos = to_expr_videos(make_affwild2_people(8, seed=6, frames=(150, 200)))
    train, val = videos[:-3], videos[-3:]
    good = train_expr(train, val, ExprTrainConfig.from_dict({"epochs": 2}))
    skip = good.model.skip.weight.detach().numpy()
    prior = good.model.config.center_prior_frames
    start = (frame_probe(centred_videos(train, prior), centred_videos(val, prior), 8) if good.model.config.video_center
             else frame_probe(train, val, 8))                    # the probe it started from
    assert np.allclose(skip, start["fit"]["coef"], atol=1e-5)   # not trained (train_skip false)
    wrecked = train_expr(train, val, ExprTrainConfig.from_dict({"epochs": 1, "lr": 30.0, "clip_norm": 0.0,
                                                                "model": {"frame_dropout": 0.9}}))
    assert wrecked.best_epoch == 0 and "did not beat its start" in caplog.text
    assert np.allclose(wrecked.model.skip.weight.detach().numpy(), start["fit"]["coef"], atol=1e-5)  # the start
    assert wrecked.versus_probe["model"] >= wrecked.versus_probe["probe"]


def test_synth_writes_the_affwild2_layout(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "s"), "--layout", "affwild2", "--videos", "3", "--seed", "2"]) == 0
    out = _last_json(capsys)
    train, val = read_expr_folder(out["train"]), read_expr_folder(out["val"])
    assert len({i.removesuffix("_left").removesuffix("_right") for i in train}) == 2 and val
    assert [FeatureSet.open(p).meta.extra["fps"] for p in out["features"]] == [30.0, 30.0]


def _sticky(rng, n_runs: int) -> np.ndarray:
    """Labels of ``n_runs`` runs of 20-80 frames, classes drawn at random (a class may follow itself)."""
    return np.repeat(rng.integers(0, 8, n_runs), rng.integers(20, 80, n_runs))


def test_hmm_decoder_learns_stickiness_and_batches_like_one_by_one():
    stats = label_statistics([np.array([0, 0, 0, -1, -1, 1, 1, 1, 1, 0])], 2)
    assert stats["mean_run"].tolist() == [2.0, 4.0]                    # runs 3 and 1 of class 0, -1 ends a run
    assert stats["changes"].tolist() == [[0.0, 1.0], [2.0, 0.0]]       # 1 -> 0 once (+1 each), none across -1
    a = transition_matrix(stats)
    assert np.allclose(a.sum(1), 1) and a[0, 0] == pytest.approx(0.5) and a[1, 1] == pytest.approx(0.75)
    rng = np.random.default_rng(0)
    labels = [_sticky(rng, 12) for _ in range(6)]
    noisy = [np.eye(8)[y] * 0.15 + rng.random((len(y), 8)) for y in labels]
    noisy = [p / p.sum(1, keepdims=True) for p in noisy]
    trans = [transition_matrix(label_statistics(labels[:3], 8), r) for r in (1.0, 0.5)]
    batched = forward_backward(noisy[3:], trans, [0.5, 1.0])
    for g, (t, scale) in enumerate(zip(trans, [0.5, 1.0])):
        for i, p in enumerate(noisy[3:]):
            alone = decode(p, t, scale)
            assert np.allclose(batched[g * 3 + i], alone, atol=1e-5) and np.allclose(alone.sum(1), 1, atol=1e-5)
    chosen = choose_smoothing(labels[3:], noisy[3:], label_stats=label_statistics(labels[:3], 8))
    windows = choose_smoothing(labels[3:], noisy[3:])
    other = choose_smoothing(labels[3:], noisy[3:], label_stats=label_statistics(labels[:3], 8), run_scales=(3.0,))
    assert {k for k in other["scores"] if k.startswith("hmm")} == {f"hmm(scale {s:g}, runs x3)" for s in HMM_SCALES}
    assert chosen["method"] == "hmm" and chosen["macro_f1"] > windows["macro_f1"] + 0.02, (chosen["macro_f1"], windows)
    spec = resolve_smoothing(None, {k: chosen[k] for k in ("method", "window", "scale", "run_scale", "transitions")})
    assert np.allclose(apply_smoothing(noisy[3], spec), decode(noisy[3], np.array(spec["transitions"]), spec["scale"]))
    with pytest.raises(ValueError, match="transitions"):
        smoothing_spec("hmm", scale=0.5)


def test_auto_centring_is_decided_by_the_probes_on_validation():
    """``auto`` keeps centring when the probe on centred frames wins validation, drops it when that probe loses
    (a 'centring' that wipes the signal), ``on`` / ``off`` are not decided; the start probe follows the choice."""
    from dataclasses import replace

    from affectfuse.training.frame_probe import choose_centring

    videos = to_expr_videos(make_affwild2_people(9, seed=8, frames=(150, 200)))
    train, val = videos[:-3], videos[-3:]
    raw = frame_probe(train, val, 8)
    centre = lambda vs: centred_videos(vs, 150.0)  # noqa: E731
    on, start, summary = choose_centring(train, val, "auto", 150.0, raw, 8, 0, centre)
    assert on and summary["centred_probe"] > summary["raw_probe"] == round(raw["macro_f1"], 4)  # identity removed
    assert start is not raw and summary["centred_probe"] == round(start["macro_f1"], 4)
    wipe = lambda vs: [replace(v, features=np.random.default_rng(0).standard_normal(v.features.shape)  # noqa: E731
                                .astype(np.float32)) for v in vs]
    on, start, summary = choose_centring(train, val, "auto", 150.0, raw, 8, 0, wipe)
    assert not on and start is raw and summary["centred_probe"] < summary["raw_probe"]
    assert choose_centring(train, val, "on", 150.0, raw, 8, 0, wipe)[0]
    on, start, summary = choose_centring(train, val, "off", 150.0, raw, 8, 0, wipe)
    assert not on and start is raw and summary["centred_probe"] is None


def test_video_center_on_off_read_as_yaml_are_accepted(tmp_path):
    """YAML 1.1 reads an unquoted on / off as true / false: ``--set video_center=off`` and a recipe's
    ``video_center: on`` still mean off / on; other values are errors naming the field."""
    from affectfuse.training.resolver import ConfigError, resolve_dataclass

    assert [resolve_dataclass(ExprTrainConfig, overrides=[f"video_center={v}"]).video_center
            for v in ("off", "on", "auto", "false")] == ["off", "on", "auto", "off"]
    (tmp_path / "r.yaml").write_text("video_center: on\n")
    assert resolve_dataclass(ExprTrainConfig, files=tmp_path / "r.yaml").video_center == "on"
    with pytest.raises(ConfigError, match="video_center"):
        resolve_dataclass(ExprTrainConfig, overrides=["video_center=sometimes"])
