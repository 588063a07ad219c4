"""The Python API (issue 12): the README's Python section runs as written, ``import affectfuse`` stays
light, ``VideoPrediction`` computes apart from writing, and ``load`` reads any model file by its kind."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(text: str) -> list[str]:
    """The contents of every fenced ``python`` block of a Markdown text, in order."""
    return [m.group(1) for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.M | re.S)]


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """Every ``python`` block of README.md, in order, in one namespace, in a fresh folder."""
    import os

    blocks = python_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 2, "README.md lost its Python section"
    work = tmp_path_factory.mktemp("readme")
    here, namespace = os.getcwd(), {"__name__": "__readme__"}
    os.chdir(work)
    try:
        for k, block in enumerate(blocks, 1):
            exec(compile(block, f"README.md python block {k}", "exec"), namespace)
    finally:
        os.chdir(here)
    return work, namespace


def test_readme_python_section_runs_and_says_true_things(readme_run):
    from affectfuse.inference.prediction import VideoPrediction
    from affectfuse.inference.loader import EriPredictor
    from affectfuse.labels import ERI_EMOTIONS, EXPR_CLASSES

    work, ns = readme_run
    p, frames = ns["p"], ns["frames"]
    assert isinstance(p, VideoPrediction) and p.top_emotion in EXPR_CLASSES and 0 < p.confidence <= 1
    assert list(frames.columns) == ["frame", "time_s", "face_found", *EXPR_CLASSES, "top"]
    assert len(frames) == len(p.frame_numbers) and frames["face_found"].mean() > 0.9  # a real face throughout
    step = np.diff(frames["time_s"].to_numpy())
    assert np.allclose(step, 0.2, atol=0.04)  # fps=5: seconds between analysed frames
    assert (work / "predict_out" / "sample_clip" / "report.html").is_file()
    assert sorted(ns["report"].written) == ["egemaps", "faceexpressionnet"]
    assert isinstance(ns["model"], EriPredictor)
    out = ns["intensities"]
    assert list(out.columns) == list(ERI_EMOTIONS) and len(out) == 12  # 20 % of 60 videos
    assert ((out.to_numpy() >= 0) & (out.to_numpy() <= 1)).all()


def test_saved_files_are_the_prediction(readme_run):
    """``save`` writes what the object holds: expressions.csv == to_pandas() (4 decimals), summary.json's
    top emotion and the weights files every network loaded."""
    work, ns = readme_run
    p, folder = ns["p"], work / "predict_out" / "sample_clip"
    csv = pd.read_csv(folder / "expressions.csv")
    frames = p.to_pandas()
    assert csv["frame"].tolist() == frames["frame"].tolist()
    np.testing.assert_allclose(csv["time_s"], frames["time_s"], atol=5e-4)
    np.testing.assert_allclose(csv.iloc[:, 3:].to_numpy(), frames.iloc[:, 3:-1].to_numpy(), atol=5e-5)
    s = json.loads((folder / "summary.json").read_text())
    assert s["top_emotion"] == p.top_emotion and s["video_id"] == "sample_clip"
    assert {"report", "detect"} <= set(s["timings_s"])
    for m in s["models"]:
        w = m["weights"]
        assert Path(w["path"]).is_file() and len(w["sha256"]) == 64, m["role"]


def test_import_affectfuse_loads_no_torch():
    code = ("import sys, affectfuse; affectfuse.__version__; dir(affectfuse); "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'pandas', 'av') "
            "or m in ('affectfuse.api', 'affectfuse.inference')); print(heavy); "
            "assert callable(affectfuse.load) and 'affectfuse.api' in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_predict_options_are_checked_and_analyse_writes_nothing(tmp_path, readme_run):
    import affectfuse

    with pytest.raises(TypeError, match=r"unknown option\(s\) \['frames_per_second'\]"):
        affectfuse.predict(affectfuse.sample_clip(), frames_per_second=5)
    with pytest.raises(AttributeError, match="no attribute 'predcit'"):
        affectfuse.predcit  # noqa: B018
    assert not any(tmp_path.iterdir())


def test_load_names_the_file_it_cannot_read(tmp_path):
    import torch

    import affectfuse

    with pytest.raises(FileNotFoundError, match="missing.pt"):
        affectfuse.load(tmp_path / "missing.pt")
    torch.save({"w": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="plain.pt: not an affectfuse"):
        affectfuse.load(tmp_path / "plain.pt")


def test_load_reads_an_item_checkpoint_and_predicts_its_items(tmp_path):
    """``classify`` end to end through the API: a manifest + features with a planted class signal ->
    train -> load -> ItemPredictor probabilities that find the signal on the val items."""
    import affectfuse
    from affectfuse.data.store import FeatureSet, FeatureSetMeta, VideoFeatures
    from affectfuse.inference.loader import ItemPredictor

    rng = np.random.default_rng(0)
    classes = ["calm", "loud"]
    fs = FeatureSet.create(tmp_path / "f", FeatureSetMeta(name="f", dim=4, random_weights=True))
    rows = []
    for i in range(40):
        y = i % 2
        x = rng.normal(size=(5, 4)).astype(np.float32) + 1.5 * y
        fs.write(VideoFeatures(f"v{i}", x, np.arange(5.0), np.ones(5, bool)))
        rows.append({"id": f"v{i}", "label": classes[y], "split": "train" if i < 28 else "val"})
    fs.write_index()
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    run = affectfuse.train("classify", features=[tmp_path / "f"], manifest=tmp_path / "m.csv", out=tmp_path / "run",
                           overrides={"epochs": 2, "probe_cs": [1.0]})
    model = affectfuse.load(run["checkpoint"])
    assert isinstance(model, ItemPredictor) and model.label_names == tuple(classes)
    ids = [f"v{i}" for i in range(28, 40)]
    probs = model.predict([tmp_path / "f"], ids)
    assert list(probs.columns) == classes and list(probs.index) == ids
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs.to_numpy().argmax(1) == np.arange(28, 40) % 2).mean() >= 0.9


def test_load_reads_a_frame_checkpoint(tmp_path):
    """A per-frame EXPR checkpoint loads as an ExprPredictor with its class names and feature sets."""
    import affectfuse
    from affectfuse.data.affwild2 import ExprVideo
    from affectfuse.inference.loader import ExprPredictor
    from affectfuse.labels import EXPR_CLASSES
    from affectfuse.training.expr import ExprTrainConfig, train_expr

    rng = np.random.default_rng(0)
    def video(i, n=12):
        return ExprVideo(f"v{i}", rng.normal(size=(n, 263)).astype(np.float32), np.ones(n, bool),
                         rng.integers(0, 8, n), np.arange(1, n + 1), np.ones(n, bool))
    cfg = ExprTrainConfig(window=8, stride=4, predict_stride=4, epochs=1, batch_size=4,
                          model={"d_model": 16, "n_heads": 2, "n_layers": 1})
    info = {"feature_sets": [{"name": "faceexpressionnet", "dim": 263, "extractor": "faceexpressionnet"}],
            "fill": "ffill", "class_names": list(EXPR_CLASSES)}
    train_expr([video(0), video(1)], [video(2)], cfg, run_dir=tmp_path / "expr", info=info)
    model = affectfuse.load(tmp_path / "expr")  # a run folder means its best.pt
    assert isinstance(model, ExprPredictor) and model.label_names == tuple(EXPR_CLASSES)
    assert list(model.feature_sets) == ["faceexpressionnet"] and model.describe()["kind"] == "expr"
    with pytest.raises(ValueError, match="last.pt"):
        affectfuse.load(tmp_path / "expr" / "last.pt")
