"""``affectfuse predict`` video mode: end to end on small generated videos and on the bundled clip."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from affectfuse.cli import main
from affectfuse.inference.fusion import late_fusion
from affectfuse.inference.voice import cut_audio_windows, rms_dbfs
from affectfuse.labels import EXPR_CLASSES
from affectfuse.media import write as media_write


def _sample_frames(n=10, size=(240, 180)):
    """n real frames (a talking face) from the bundled clip, downscaled: (n, H, W, 3) uint8."""
    import av

    from affectfuse.inference.video import sample_clip_path

    out = []
    with av.open(str(sample_clip_path())) as c:
        for k, frame in enumerate(c.decode(video=0)):
            if k % 6 == 0:
                out.append(frame.to_image().resize(size))
            if len(out) == n:
                break
    return np.stack([np.asarray(im) for im in out])


def write_video(path, frames, fps=10, tone_hz=220.0, audio=True):
    """Write (T, H, W, 3) uint8 frames (+ a voiced 16 kHz tone) as H.264/AAC mp4 with PyAV."""
    wave = None
    if audio:
        t = np.arange(int(16000 * len(frames) / fps)) / 16000
        wave = (0.2 * np.sin(2 * np.pi * tone_hz * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return media_write.write_video(path, frames, fps=fps, audio=wave, audio_rate=16000)


@pytest.fixture(scope="module")
def face_video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("v") / "talk.mp4", _sample_frames())


def _rows(path):
    return list(csv.reader(open(path)))


def test_end_to_end_files_columns_and_names(face_video, tmp_path):
    out = tmp_path / "out"
    assert main(["predict", str(face_video), "--out", str(out)]) == 0
    folder = out / "talk"
    assert {p.name for p in folder.iterdir()} >= {"expressions.csv", "summary.json", "timeline.png", "report.html"}
    rows = _rows(folder / "expressions.csv")
    assert rows[0] == ["frame", "time_s", "face_found", *EXPR_CLASSES]
    assert [int(r[0]) for r in rows[1:]] == list(range(1, 11))  # every frame, 1-based
    with_face = [r for r in rows[1:] if r[2] == "1"]
    assert len(with_face) >= 8  # a real face in every frame
    probs = np.array([[float(x) for x in r[3:]] for r in with_face])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-3)
    s = json.loads((folder / "summary.json").read_text())
    assert s["expressions"]["classes"] == list(EXPR_CLASSES) and "probability" in s["expressions"]["scale"]
    assert s["top_emotion"] in EXPR_CLASSES
    assert s["voice"]["available"] and s["voice"]["voiced_windows"] >= 1
    # a 220 Hz tone is heard but is unlike the voice head's training speech: it may count for nothing
    assert "face" in s["fused"]["modalities"] and s["fused"]["reliability"]["voice"] is not None
    assert s["label"] in (*EXPR_CLASSES, "uncertain") and s["segments"]
    assert {m["role"] for m in s["models"]} >= {"face expressions", "voice"}
    assert all(m["random_weights"] is False for m in s["models"])
    for m in s["models"]:  # the weights file each network actually loaded, with its hash
        assert Path(m["weights"]["path"]).is_file() and len(m["weights"]["sha256"]) == 64, m["role"]
    extractors = next(m for m in s["models"] if m["role"] == "voice")["extractors"]
    assert all(e["weights"] is None or Path(e["weights"]["path"]).is_file() for e in extractors)
    assert {"detect", "align", "face_model", "report"} <= set(s["timings_s"])
    html = (folder / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2  # the plot and at least one face thumbnail
    assert (out / "index.html").is_file() and not (out / "failures.csv").exists()
    # a second run finds the finished video and does not redo it
    before = (folder / "summary.json").stat().st_mtime_ns
    assert main(["predict", str(face_video), "--out", str(out)]) == 0
    assert (folder / "summary.json").stat().st_mtime_ns == before


def test_bad_video_among_good_ones(face_video, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    out = tmp_path / "out"
    code = main(["predict", str(bad), str(tmp_path / "missing.mp4"), str(face_video), "--out", str(out)])
    assert code == 1
    assert (out / "talk" / "report.html").is_file()  # the good one still finished
    failed = _rows(out / "failures.csv")
    assert failed[0] == ["item", "error"]
    assert {r[0] for r in failed[1:]} == {str(bad), str(tmp_path / "missing.mp4")}
    assert all("MediaError" in r[1] for r in failed[1:])
    assert "broken.mp4" in (out / "index.html").read_text()


def test_no_face_video_renders(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 40, (8, 96, 128, 3), dtype=np.uint8)  # dark noise: no face
    video = write_video(tmp_path / "noface.mp4", frames, audio=False)
    out = tmp_path / "out"
    assert main(["predict", str(video), "--out", str(out)]) == 0
    rows = _rows(out / "noface" / "expressions.csv")
    assert len(rows) == 9 and {r[2] for r in rows[1:]} == {"0"}
    s = json.loads((out / "noface" / "summary.json").read_text())
    assert s["expressions"]["face_found_frames"] == 0 and s["top_emotion"] is None
    assert s["voice"]["available"] is False
    assert "<html>" in (out / "noface" / "report.html").read_text()


def test_late_fusion_rule():
    face = {"Neutral": 0.1, "Anger": 0.1, "Happiness": 0.2, "Surprise": 0.6}
    voice = {"Neutral": 0.2, "Anger": 0.7, "Happiness": 0.0, "Other": 0.1}
    fused = late_fusion(face, voice, face_classes=["Neutral", "Anger", "Happiness", "Surprise"],
                        voice_classes=["Neutral", "Anger", "Happiness", "Other"], weights=(0.5, 0.5), rule="linear")
    assert fused["classes"] == ["Neutral", "Anger", "Happiness"]
    # face over shared: .25 .25 .5; voice: 2/9 7/9 0 -> mean
    np.testing.assert_allclose([fused["probabilities"][c] for c in fused["classes"]],
                               [(0.25 + 2 / 9) / 2, (0.25 + 7 / 9) / 2, 0.25])
    assert fused["top_emotion"] == "Anger"
    only_face = late_fusion(face, None, face_classes=list(face), voice_classes=[])
    assert only_face["top_emotion"] == "Surprise" and only_face["modalities"] == ["face"]
    assert late_fusion(None, None, face_classes=[], voice_classes=[])["top_emotion"] is None


def test_audio_windows_and_silence():
    audio = np.zeros(int(2.5 * 16000), np.float32)
    audio[:16000] = 0.1
    windows, times = cut_audio_windows(audio, 1.0, 1.0)
    np.testing.assert_allclose(times, [[0, 1], [1, 2], [1.5, 2.5]])  # the last window ends on the last sample
    level = rms_dbfs(windows)
    np.testing.assert_allclose(level[0], 20 * np.log10(0.1), atol=1e-4)
    assert np.isneginf(level[1])
    short, t = cut_audio_windows(audio[:8000], 1.0, 0.5)  # shorter than a window: one padded window
    assert short.shape == (1, 16000) and t.tolist() == [[0.0, 0.5]]


@pytest.mark.slow
def test_bundled_clip_runs(tmp_path):
    out = tmp_path / "out"
    assert main(["predict", "--out", str(out)]) == 0
    s = json.loads((out / "sample_clip" / "summary.json").read_text())
    assert s["expressions"]["face_found_frames"] > 0.9 * s["expressions"]["frames"]
    assert s["voice"]["voiced_windows"] >= 3 and s["top_emotion"] in EXPR_CLASSES


def _eri_checkpoint(tmp_path):
    """A tiny real ERI checkpoint trained for 2 epochs on random features of the two shipped extractors."""
    from affectfuse.data.sequences import from_arrays
    from affectfuse.labels import ERI_EMOTIONS
    from affectfuse.training.config import RunConfig
    from affectfuse.training.eri import fit

    rng = np.random.default_rng(0)
    dims = {"audio": 88, "visual": 263}
    def data(n):
        feats = {k: rng.normal(size=(n, 6, d)).astype(np.float32) for k, d in dims.items()}
        return from_arrays(feats, rng.uniform(size=(n, 7)), ERI_EMOTIONS)
    cfg = RunConfig()
    cfg.model.d_model, cfg.model.ff_dim, cfg.model.proj_dim, cfg.model.interaction_heads = 16, 32, 16, 2
    cfg.data.seq_len = 6
    cfg.train.max_epochs, cfg.train.batch_size, cfg.train.progress, cfg.train.tensorboard = 2, 8, False, False
    meta = {"audio": {"name": "egemaps", "dim": 88, "extractor": "egemaps", "rate": 2.0,
                      "extra": {"input": {"sample_rate": 16000, "window_s": 1.0, "hop_s": 0.5}}},
            "visual": {"name": "faceexpressionnet", "dim": 263, "extractor": "faceexpressionnet", "rate": 5.0}}
    fit(cfg, data(16), data(8), run_dir=tmp_path / "eri", feature_meta=meta)
    return tmp_path / "eri" / "best.pt"


def test_eri_checkpoint_adds_named_intensities(face_video, tmp_path):
    from affectfuse.labels import ERI_EMOTIONS

    ckpt = _eri_checkpoint(tmp_path)
    out = tmp_path / "out"
    assert main(["predict", str(face_video), "--out", str(out), "--eri-checkpoint", str(ckpt),
                 "--voice-head", "none"]) == 0
    s = json.loads((out / "talk" / "summary.json").read_text())
    eri = s["eri"]
    assert list(eri["intensities"]) == list(ERI_EMOTIONS) and eri["emotions"] == list(ERI_EMOTIONS)
    assert all(0.0 <= v <= 1.0 for v in eri["intensities"].values())
    assert eri["valid_rows"]["visual"] >= 4 and eri["valid_rows"]["audio"] >= 1  # 1 s video at 5 rows/s
    assert "Empathic-Pain" in (out / "talk" / "report.html").read_text()
    assert any(m["role"] == "ERI intensities" for m in s["models"])


def test_checkpoint_trained_on_random_weight_features_refuses_real_ones(tmp_path):
    """An ERI checkpoint whose visual features came from random weights stops predict before any video,
    naming the checkpoint and the real weights file the extractor loaded (was a warning)."""
    import torch

    from affectfuse.inference.video import PredictOptions, VideoPredictor
    from affectfuse.weights import WeightsMismatchError

    ckpt_path = _eri_checkpoint(tmp_path)
    ckpt = torch.load(ckpt_path, weights_only=True)
    ckpt["feature_sets"]["visual"]["random_weights"] = True
    torch.save(ckpt, ckpt_path)
    with pytest.raises(WeightsMismatchError) as err:
        VideoPredictor(PredictOptions(eri_checkpoint=str(ckpt_path), voice_head="none"))
    msg = str(err.value)
    assert str(ckpt_path) in msg and "random weights" in msg and "face_expression_net.pt" in msg


def test_checkpoint_features_cut_with_another_crop_get_that_crop(tmp_path):
    """An ERI checkpoint whose face features were cut with another margin than faceexpressionnet declares now
    (a declaration that changed) has them cut the same way in predict, next to the zero-shot face model's
    declared crop: the checkpoint describes itself."""
    import torch

    from affectfuse.faces.plan import CropSpec
    from affectfuse.features.faceapi import FACE_EXPRESSION_PLAN
    from affectfuse.inference.video import PredictOptions, VideoPredictor

    ckpt_path = _eri_checkpoint(tmp_path)
    ckpt = torch.load(ckpt_path, weights_only=True)
    ckpt["feature_sets"]["visual"]["extra"] = {"input": {"size": 112, "template": "mtcnn_box", "margin": 0.2}}
    torch.save(ckpt, ckpt_path)
    predictor = VideoPredictor(PredictOptions(eri_checkpoint=str(ckpt_path), voice_head="none"))
    recorded = CropSpec(112, "mtcnn_box", 0.2)
    assert FACE_EXPRESSION_PLAN.crop != recorded
    assert predictor.eri_model.face_plans[0].crop == recorded
    assert {p.crop for p in predictor.face_plans} == {recorded, FACE_EXPRESSION_PLAN.crop}


def test_sparse_detection_interpolates_landmarks(face_video):
    """Detecting at 5 of 10 frames/s: in-between landmarks are interpolated and close to detected ones."""
    from affectfuse.faces import load_mtcnn
    from affectfuse.inference.faces import iter_faces_sparse

    det = load_mtcnn()
    dense = [b for b in iter_faces_sparse(face_video, det, detect_fps=None)]
    sparse = [b for b in iter_faces_sparse(face_video, det, detect_fps=5.0)]
    lm_d = np.concatenate([b.landmarks for b in dense])
    lm_s = np.concatenate([b.landmarks for b in sparse])
    ok = np.concatenate([b.found for b in dense]) & np.concatenate([b.found for b in sparse])
    assert ok.sum() >= 7
    err = np.abs(lm_d[ok] - lm_s[ok]).max(axis=(1, 2))  # pixels, 240x180 frames
    assert np.median(err) < 3.0 and err.max() < 12.0


def test_expr_checkpoint_gives_per_frame_expressions(face_video, tmp_path):
    """An EXPR checkpoint (tiny, trained here on random faceexpressionnet-sized features) drives the CSV."""
    from affectfuse.data.affwild2 import ExprVideo
    from affectfuse.training.expr import ExprTrainConfig, train_expr

    rng = np.random.default_rng(0)
    def video(i, n=12):
        labels = rng.integers(0, 8, n)
        return ExprVideo(f"v{i}", rng.normal(size=(n, 263)).astype(np.float32), np.ones(n, bool), labels,
                         np.arange(1, n + 1), np.ones(n, bool))
    cfg = ExprTrainConfig(window=8, stride=4, predict_stride=4, epochs=1, batch_size=4,
                          model={"d_model": 16, "n_heads": 2, "n_layers": 1})
    info = {"feature_sets": [{"name": "faceexpressionnet", "dim": 263, "extractor": "faceexpressionnet",
                              "input": {"size": 112, "template": "mtcnn_box", "margin": 0.2}}],   # its crop
            "fill": "ffill"}
    train_expr([video(0), video(1)], [video(2)], cfg, run_dir=tmp_path / "expr", info=info)
    from affectfuse.inference.expr import ExprCheckpointExpressions

    model = ExprCheckpointExpressions(tmp_path / "expr" / "best.pt")
    assert [p.margin for p in model.face_plans] == [0.2]   # predict cuts the crop the features were cut with
    out = tmp_path / "out"
    assert main(["predict", str(face_video), "--out", str(out), "--voice-head", "none",
                 "--expr-checkpoint", str(tmp_path / "expr" / "best.pt")]) == 0
    rows = _rows(out / "talk" / "expressions.csv")
    assert rows[0][3:] == list(EXPR_CLASSES)
    probs = np.array([[float(x) for x in r[3:]] for r in rows[1:] if r[2] == "1"])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-3)
    s = json.loads((out / "talk" / "summary.json").read_text())
    assert s["expressions"]["source"] == "expr-checkpoint:faceexpressionnet"
    assert s["top_emotion"] in EXPR_CLASSES and s["fused"]["modalities"] == ["face"]


def test_voice_domain_check_flags_unfamiliar_speech(shared_data):
    """The shipped voice head knows its training speech (EmoDB) from other corpora: an EmoDB utterance is
    inside its domain, a CREMA-D clip (English, MP3) outside; summary.json and report.html say so."""
    from affectfuse.inference.models import load_voice_model
    from affectfuse.inference.video import _voice_summary
    from affectfuse.media import read_audio
    from affectfuse.outputs.report import VideoReport, render_html

    model = load_voice_model("default")
    assert model.head.domain_threshold == pytest.approx(1.0067)
    german = model(read_audio(shared_data / "emodb" / "wav" / "03a01Fa.wav", 16000))
    english = model(read_audio(shared_data / "crema-d" / "clips" / "1001_DFA_SAD_XX.flv", 16000))
    assert german.voiced.any() and not german.outside_domain().any()
    assert english.voiced.any() and english.outside_domain()[english.voiced].all()
    assert np.isnan(english.typicality[~english.voiced]).all()

    summary = _voice_summary(english, model)
    check = summary["domain_check"]
    assert check["windows_outside"] == check["voiced_windows"] == int(english.voiced.sum())
    assert all(w["outside_domain"] for w in summary["windows"] if w["voiced"])
    report = VideoReport("clip", np.arange(1, 3), np.zeros(2), np.zeros(2, bool), np.zeros((2, 8)),
                         tuple(EXPR_CLASSES), {"voice": summary})
    assert "unlike the voice head's training speech" in render_html(report, None)
    report.summary = {"voice": _voice_summary(german, model)}
    assert "unlike the voice head" not in render_html(report, None)
