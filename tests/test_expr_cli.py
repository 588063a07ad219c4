"""``affectfuse expr`` in-process: Aff-Wild2 train -> evaluate -> predict -> submit -> validate; ``affectfuse classify``
on manifests; the old item spellings under ``expr`` (train --manifest, evaluate/predict with an item checkpoint, cv,
probe) with their deprecation line."""

import json

import numpy as np
import pytest
import torch

from affectfuse.cli import main
from affectfuse.data.store import FeatureSet, FeatureSetMeta, VideoFeatures
from affectfuse.labels import EXPR_CLASSES
from affectfuse.outputs.expr_files import read_probabilities
from repo_scripts import load_script

TINY = ["--set", "model.d_model=16", "--set", "model.n_heads=2", "--set", "model.n_layers=1",
        "--set", "model.ff_mult=2", "--set", "lr=0.003", "--set", "batch_size=8",
        "--set", "window=16", "--set", "stride=8", "--set", "predict_stride=8"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _last_json(capsys):
    return json.loads([ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")][-1])


@pytest.fixture
def affwild(tmp_path):
    """Annotation folders, a per-frame feature set (30 fps, some faceless frames) and a frame list."""
    rng = np.random.default_rng(0)
    protos = rng.standard_normal((8, 6)) * 2
    fs = FeatureSet.create(tmp_path / "feats", FeatureSetMeta("planted", 6, rate=None, extra={"fps": 30.0}))
    header = ",".join(EXPR_CLASSES)
    for split, ids in (("Train_Set", [f"t{i}" for i in range(6)]), ("Validation_Set", ["va", "vb_left"])):
        (tmp_path / split).mkdir()
        for vid in ids:
            n = int(rng.integers(40, 70))
            labels = np.repeat(rng.integers(0, 8, n // 10 + 1), 10)[:n]
            labels[:2] = -1
            (tmp_path / split / f"{vid}.txt").write_text(header + "\n" + "\n".join(map(str, labels)) + "\n")
            x = protos[labels.clip(0)] + 0.3 * rng.standard_normal((n, 6))
            mask = rng.random(n) > 0.1
            rows = n - 3  # the features stop 3 frames early: those frames are filled
            fs.write(VideoFeatures(vid, x[:rows], np.arange(rows) / 30.0, mask[:rows]))
    frame_list = tmp_path / "example.txt"
    lines = ["image_location," + header]
    for vid in ("va", "vb_left"):
        n = len((tmp_path / "Validation_Set" / f"{vid}.txt").read_text().splitlines()) - 1
        lines += [f"{vid}/{k:05d}.jpg," for k in range(1, n + 1)]
    frame_list.write_text("\n".join(lines) + "\n")
    return tmp_path


def test_affwild2_train_evaluate_predict_submit_validate(affwild, capsys):
    d = affwild
    run = d / "run"
    assert main(["expr", "train", "--features", str(d / "feats"), "--annotations", str(d / "Train_Set"),
                 "--val-annotations", str(d / "Validation_Set"), "--set", "epochs=6", *TINY, "--out", str(run)]) == 0
    trained = _last_json(capsys)
    assert (run / "best.pt").is_file() and trained["macro_f1"] > 0.2
    assert main(["expr", "evaluate", "--checkpoint", str(run / "best.pt"), "--annotations", str(d / "Validation_Set"),
                 "--smooth", "mean:5", "--out", str(d / "eval")]) == 0
    scores = _last_json(capsys)
    assert 0 <= scores["macro_f1"] <= 1 and (d / "eval" / "confusion.png").is_file()
    assert json.loads((d / "eval" / "scores.json").read_text())["class_names"] == list(EXPR_CLASSES)
    assert main(["expr", "predict", "--checkpoint", str(run / "best.pt"), "--frame-list", str(d / "example.txt"),
                 "--out", str(d / "probs.csv")]) == 0
    (d / "partial.txt").write_text("v_gone/00001.jpg\nva/00001.jpg\n")  # one video without features
    assert main(["expr", "predict", "--checkpoint", str(run / "best.pt"), "--frame-list", str(d / "partial.txt"),
                 "--out", str(d / "partial.csv")]) == 1
    assert "v_gone" in (d / "partial.failures.csv").read_text() and "va/00001.jpg" in (d / "partial.csv").read_text()
    probs_header = (d / "probs.csv").read_text().splitlines()[0]
    assert probs_header.endswith(",".join(EXPR_CLASSES) + ",predicted")
    # `affectfuse ensemble` recognises EXPR probability files and scores the ensemble on annotations
    assert main(["expr", "predict", "--checkpoint", str(run / "best.pt"), "--frame-list", str(d / "example.txt"),
                 "--smooth", "mean:9", "--out", str(d / "probs2.csv")]) == 0
    capsys.readouterr()
    assert main(["ensemble", str(d / "probs.csv"), str(d / "probs2.csv"), "--ensemble-weights", "3,1",
                 "--out", str(d / "ens.csv"), "--table", str(d / "Validation_Set")]) == 0
    ens = _last_json(capsys)
    assert ens["videos"] == 2 and len(ens["members"]) == 2 and 0 <= ens["macro_f1"] <= 1
    a, b, e = (read_probabilities(d / f) for f in ("probs.csv", "probs2.csv", "ens.csv"))
    assert np.allclose(e["va"][1], 0.75 * a["va"][1] + 0.25 * b["va"][1], atol=2e-6)
    # two runs' probabilities averaged into one submission with a row for every listed frame
    assert main(["expr", "submit", "--probabilities", str(d / "probs.csv"), str(d / "probs.csv"),
                 "--frame-list", str(d / "example.txt"), "--smooth", "mode:3", "--out", str(d / "sub.txt")]) == 0
    listed = len((d / "example.txt").read_text().splitlines())
    assert len((d / "sub.txt").read_text().splitlines()) == listed
    assert main(["expr", "validate", str(d / "sub.txt"), "--frame-list", str(d / "example.txt")]) == 0
    lines = (d / "sub.txt").read_text().splitlines()
    (d / "sub.txt").write_text("\n".join(lines[:5] + lines[6:]) + "\n")
    capsys.readouterr()
    assert main(["expr", "validate", str(d / "sub.txt"), "--frame-list", str(d / "example.txt")]) == 1
    assert "listed frame(s) missing" in capsys.readouterr().out
    assert main(["expr", "submit", "--probabilities", str(d / "probs.csv"), "--frame-list", str(d / "example.txt"),
                 "--format", "txt", "--out", str(d / "txt")]) == 0
    assert main(["expr", "validate", str(d / "txt"), "--frame-list", str(d / "example.txt")]) == 0
    assert (d / "txt" / "vb_left.txt").read_text().startswith(",".join(EXPR_CLASSES) + "\n")


def test_clear_errors(affwild, capsys):
    assert main(["expr", "evaluate", "--checkpoint", str(affwild / "none.pt"),
                 "--annotations", str(affwild / "Validation_Set")]) == 1
    assert "none.pt: EXPR checkpoint does not exist" in capsys.readouterr().err
    (affwild / "Train_Set" / "t0.txt").write_text("Neutral\n0\n")
    assert main(["expr", "train", "--features", str(affwild / "feats"), "--annotations", str(affwild / "Train_Set"),
                 "--val-annotations", str(affwild / "Validation_Set"), "--out", str(affwild / "r")]) == 1
    assert "t0.txt: line 1: header" in capsys.readouterr().err


@pytest.fixture
def items(tmp_path):
    """A manifest of 'images' (one feature row each) with planted faceexpressionnet-like 263-d features."""
    pytest.importorskip("affectfuse.data.layouts")
    rng = np.random.default_rng(1)
    faceapi = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
    to_abaw = dict(zip(faceapi, ("Neutral", "Happiness", "Sadness", "Anger", "Fear", "Disgust", "Surprise")))
    fs = FeatureSet.create(tmp_path / "fx", FeatureSetMeta("faceexpressionnet", 263, extractor="faceexpressionnet"))
    protos = rng.standard_normal((8, 256)) * 0.5
    rows = ["id,label,split,group"]
    for i in range(160):
        c = i % 8
        emb = protos[c] + rng.standard_normal(256)
        p = np.full(7, 0.02)
        if EXPR_CLASSES[c] != "Other":
            p[[to_abaw[n] for n in faceapi].index(EXPR_CLASSES[c])] = 0.88
        fs.write(VideoFeatures(f"img{i}", np.concatenate([emb, p])[None], np.zeros(1), np.array([i % 17 != 0])))
        rows.append(f"img{i},{EXPR_CLASSES[c]},{'val' if i % 5 == 0 else 'train'},s{i % 10}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_probe_and_manifest_path(items, capsys):
    d = items
    assert main(["expr", "probe", "--manifest", str(d / "manifest.csv"), "--features", str(d / "fx"),
                 "--folds", "3", "--group", "--zero-shot", *TINY, "--set", "epochs=8", "--set", "batch_size=32",
                 "--out", str(d / "probe")]) == 0
    printed = capsys.readouterr()
    res = json.loads(printed.out.strip().splitlines()[-1])
    assert res["logreg"]["macro_f1"] > 0.8 and res["transformer"]["macro_f1"] > 0.6, res
    zero = json.loads((d / "probe" / "zero_shot_scores.json").read_text())
    assert zero["per_class"]["Happiness"]["recall"] > 0.8 and zero["per_class"]["Other"]["f1"] == 0.0
    assert (d / "probe" / "logreg_confusion.png").is_file()
    assert [line for line in printed.err.splitlines() if "deprecated" in line] == [
        "affectfuse: `affectfuse expr probe` is deprecated; use `affectfuse classify cv`"]
    run = d / "run"  # a manifest trains the item classifier (pooled rows -> head started at its probe)
    item_set = ["--set", "epochs=8", "--set", "probe_cs=[1.0]", "--set", "group_norm=false"]
    assert main(["classify", "train", "--features", str(d / "fx"), "--manifest", str(d / "manifest.csv"), *item_set,
                 "--out", str(run)]) == 0
    assert main(["classify", "evaluate", "--checkpoint", str(run / "best.pt"), "--manifest", str(d / "manifest.csv"),
                 "--split", "val"]) == 0
    scores = _last_json(capsys)
    assert scores["n"] == 32
    assert main(["classify", "predict", "--checkpoint", str(run / "best.pt"), "--manifest", str(d / "manifest.csv"),
                 "--split", "val", "--out", str(d / "items.csv")]) == 0
    assert (d / "items.csv").read_text().splitlines()[0] == "id," + ",".join(EXPR_CLASSES) + ",predicted"
    assert "deprecated" not in capsys.readouterr().err
    # a file that is not an item checkpoint: one clear line
    assert main(["classify", "evaluate", "--checkpoint", str(d / "items.csv"), "--manifest",
                 str(d / "manifest.csv")]) == 1
    assert "not an item checkpoint" in capsys.readouterr().err


def _deprecated_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if "deprecated" in line]


def test_old_item_spellings_run_classify_after_one_deprecation_line(items, capsys):
    d = items
    item_set = ["--set", "epochs=4", "--set", "probe_cs=[1.0]", "--set", "group_norm=false"]
    assert main(["expr", "train", "--features", str(d / "fx"), "--manifest", str(d / "manifest.csv"), *item_set,
                 "--out", str(d / "old")]) == 0
    assert _deprecated_lines(capsys) == ["affectfuse: `affectfuse expr train --manifest` is deprecated; use "
                                         "`affectfuse classify train --manifest` (same options)"]
    assert (d / "old" / "best.pt").is_file()
    assert main(["classify", "evaluate", "--checkpoint", str(d / "old" / "best.pt"), "--manifest",
                 str(d / "manifest.csv")]) == 0
    new = _last_json(capsys)
    for verb, extra in (("evaluate", []), ("predict", ["--out", str(d / "old.csv")])):
        assert main(["expr", verb, "--checkpoint", str(d / "old" / "best.pt"), "--manifest", str(d / "manifest.csv"),
                     "--split", "val", *extra]) == 0
        out = capsys.readouterr()
        assert [line for line in out.err.splitlines() if "deprecated" in line] == [
            f"affectfuse: `affectfuse expr {verb} --checkpoint ITEM_CHECKPOINT` is deprecated; use "
            f"`affectfuse classify {verb} --checkpoint ITEM_CHECKPOINT` (same options)"]
        if verb == "evaluate":
            assert json.loads(out.out.splitlines()[-1]) == new  # the same scores as classify evaluate
    assert len((d / "old.csv").read_text().splitlines()) == 33
    assert main(["expr", "cv", "--manifest", str(d / "manifest.csv"), "--features", str(d / "fx"), "--folds", "2",
                 *item_set]) == 0
    assert _deprecated_lines(capsys) == ["affectfuse: `affectfuse expr cv` is deprecated; use `affectfuse classify cv` "
                                         "(same options)"]


@pytest.mark.slow
def test_real_faces_zero_shot_and_probe(shared_data, tmp_path, capsys):
    """Real photos (../shared/data/faces, 5 per class): MTCNN + alignment + faceexpressionnet, then the probe.

    The full-data figures (all 1,357 photos, 5 folds) are in docs/faces.md (scripts/faces_cv.py)."""
    from pathlib import Path

    probe = load_script("benchmarks/expr_faces_probe.py")
    rows = probe.read_labels(shared_data / "faces", per_class=5)
    fs = probe.extract_photos([shared_data / "faces" / "images" / n for n, _ in rows], tmp_path / "fx")
    found = np.mean([fs.read(Path(n).stem).mask[0] for n, _ in rows])
    assert len(rows) == 40 and found >= 0.85
    manifest = probe.write_manifest(rows, tmp_path / "manifest.csv")
    assert main(["expr", "probe", "--manifest", str(manifest), "--features", str(fs.path), "--folds", "3",
                 "--classifier", "logreg", "--zero-shot", "--out", str(tmp_path / "out")]) == 0
    res = _last_json(capsys)
    zero = json.loads((tmp_path / "out" / "zero_shot_scores.json").read_text())
    # chance is 1/8; the pretrained network recognises happiness on real photos
    assert res["zero_shot"]["macro_f1"] > 0.2 and zero["per_class"]["Happiness"]["recall"] >= 0.5, res
    assert 0.0 <= res["logreg"]["macro_f1"] <= 1.0


@pytest.mark.slow
def test_manifest_of_real_clips_through_extract(shared_data, tmp_path, capsys):
    """The generic path on real video: manifest -> `affectfuse extract` (faceexpressionnet, 5 fps) ->
    `classify train` -> `classify evaluate` / `classify predict` (6 CREMA-D clips, one per class)."""
    codes = {"ANG": "Anger", "DIS": "Disgust", "FEA": "Fear", "HAP": "Happiness", "NEU": "Neutral", "SAD": "Sadness"}
    clips = sorted((shared_data / "crema-d" / "clips").glob("1001_DFA_*_XX.flv"))
    rows = ["path,label,split"] + [f"{c},{codes[c.stem.split('_')[2]]},{'val' if i % 3 == 2 else 'train'}"
                                   for i, c in enumerate(clips)]
    (tmp_path / "clips.csv").write_text("\n".join(rows) + "\n")
    assert main(["extract", str(tmp_path / "clips.csv"), "--extractors", "faceexpressionnet", "--fps", "5",
                 "--no-progress", "--out", str(tmp_path / "feats")]) == 0
    fx = FeatureSet.open(tmp_path / "feats" / "faceexpressionnet")
    assert len(fx) == 6 and all(fx.read(i).mask.mean() > 0.9 for i in fx.ids())
    assert main(["classify", "train", "--manifest", str(tmp_path / "clips.csv"), "--features", str(fx.path),
                 "--set", "epochs=2", "--set", "probe_cs=[1.0]", "--out", str(tmp_path / "run")]) == 0
    assert main(["classify", "evaluate", "--checkpoint", str(tmp_path / "run" / "best.pt"),
                 "--manifest", str(tmp_path / "clips.csv"), "--split", "val"]) == 0
    assert _last_json(capsys)["n"] == 2
    assert main(["classify", "predict", "--checkpoint", str(tmp_path / "run" / "best.pt"),
                 "--manifest", str(tmp_path / "clips.csv"), "--split", "train", "--out", str(tmp_path / "p.csv")]) == 0
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 5
