"""Aff-Wild2 EXPR layouts: annotation files, frame lists, rows -> frames, fill policies, windows, smoothing."""

import numpy as np
import pytest

from affectfuse.data.affwild2 import (AffWild2Error, align_to_frames, cropped_aligned_frames, fill_faceless,
                                      load_expr_videos, media_id, read_expr_annotation, read_expr_folder,
                                      read_frame_list, row_frames)
from affectfuse.data.store import FeatureSet, FeatureSetMeta, FeatureStoreError, VideoFeatures
from affectfuse.data.windows import (cut_windows, overlap_average, parse_smoothing, smooth_probabilities,
                                     window_starts)
from affectfuse.labels import EXPR_CLASSES

HEADER = ",".join(EXPR_CLASSES)


def test_read_annotation_and_errors(tmp_path):
    f = tmp_path / "video1.txt"
    f.write_text(HEADER + "\n0\n-1\n7\n3\n\n")
    assert read_expr_annotation(f).tolist() == [0, -1, 7, 3]
    (tmp_path / "bad.txt").write_text(HEADER + "\n0\n9\n")
    with pytest.raises(AffWild2Error, match=r"bad.txt: line 3: label 9"):
        read_expr_annotation(tmp_path / "bad.txt")
    (tmp_path / "hdr.txt").write_text("Neutral,Anger\n0\n")
    with pytest.raises(AffWild2Error, match=r"hdr.txt: line 1: header"):
        read_expr_annotation(tmp_path / "hdr.txt")
    with pytest.raises(AffWild2Error, match="2 bad annotation file"):
        read_expr_folder(tmp_path)
    (tmp_path / "bad.txt").unlink(), (tmp_path / "hdr.txt").unlink()
    (tmp_path / "video10_1_left.txt").write_text(HEADER + "\n1\n")
    assert list(read_expr_folder(tmp_path)) == ["video1", "video10_1_left"]
    assert media_id("video10_1_left") == "video10_1" and media_id("video10_1") == "video10_1"


def test_cropped_aligned_and_frame_list(tmp_path):
    crops = tmp_path / "cropped_aligned" / "v1"
    crops.mkdir(parents=True)
    for k in (1, 2, 5):
        (crops / f"{k:05d}.jpg").write_bytes(b"")
    assert cropped_aligned_frames(crops).tolist() == [1, 2, 5]
    lst = tmp_path / "example.txt"
    lst.write_text("image_location,Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n"
                   "v1/00001.jpg,\nv1/00002.jpg,\nv2_left/00003.jpg,\n")
    frames = read_frame_list(lst)
    assert list(frames) == ["v1", "v2_left"] and frames["v1"].tolist() == [1, 2]
    lst.write_text("v1/x.png\n")
    with pytest.raises(AffWild2Error, match="line 1"):
        read_frame_list(lst)


def test_rows_to_frames_dense_and_sampled():
    fps = 30.0
    dense = VideoFeatures("v", np.arange(10, dtype=np.float32)[:, None], np.arange(10) / fps)
    assert row_frames(dense.timestamps, fps).tolist() == list(range(1, 11))  # row k-1 = frame k
    values, face = align_to_frames(dense, 10, fps)
    assert values[:, 0].tolist() == list(range(10)) and face.all()
    # sampled at 5 fps (every 6th frame): each frame takes the nearest row in time
    sampled = VideoFeatures("v", np.array([[0.], [1.], [2.]], np.float32), np.array([0.0, 0.2, 0.4]))
    values, face = align_to_frames(sampled, 15, fps)
    expected = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2]  # frame k at (k-1)/30 s; ties go earlier
    assert values[:, 0].tolist() == expected and face.all()
    # rows far from a frame (gap > 1.5 row spacings) or masked rows leave the frame faceless
    masked = VideoFeatures("v", np.ones((3, 1), np.float32), np.array([0.0, 1 / fps, 2 / fps]),
                           np.array([True, False, True]))
    _, face = align_to_frames(masked, 6, fps)
    assert face.tolist() == [True, False, True, False, False, False]


def test_fill_policies():
    values = np.array([[0.], [9.], [2.], [9.], [9.], [8.], [9.]], np.float32)
    face = np.array([False, False, True, False, False, True, False])
    ff, valid = fill_faceless(values, face, "ffill")
    assert ff[:, 0].tolist() == [2, 2, 2, 2, 2, 8, 8] and valid.all()
    ip, _ = fill_faceless(values, face, "interpolate")
    assert ip[:, 0].tolist() == pytest.approx([2, 2, 2, 4, 6, 8, 8])
    mk, valid = fill_faceless(values, face, "mask")
    assert mk[:, 0].tolist() == [0, 0, 2, 0, 0, 8, 0] and valid.tolist() == face.tolist()
    none, valid = fill_faceless(values, np.zeros(7, bool), "ffill")
    assert not none.any() and not valid.any()
    with pytest.raises(ValueError, match="valid"):
        fill_faceless(values, face, "zero")


def test_load_videos_stitches_sets_and_names_missing(tmp_path):
    a = FeatureSet.create(tmp_path / "a", FeatureSetMeta("a", 2, rate=None))  # one row per frame: fps from spacing
    b = FeatureSet.create(tmp_path / "b", FeatureSetMeta("b", 3, rate=None, extra={"fps": {"v1": 30.0}}))
    for fs, d in ((a, 2), (b, 3)):
        fs.write(VideoFeatures("v1", np.ones((6, d)) * d, np.arange(6) / 30.0, np.array([1, 1, 0, 1, 1, 1], bool)))
        fs.write(VideoFeatures("v2", np.ones((4, d)), np.arange(4) / 30.0))
    labels = {"v1": np.array([0, 1, 2, 3, -1, 5, 6, 7]), "v2": np.zeros(4, int)}
    videos = load_expr_videos(labels, [a, b], fill="mask")
    v1 = videos[0]
    assert v1.features.shape == (8, 5) and v1.frames.tolist() == list(range(1, 9))
    assert v1.face.tolist() == [True, True, False, True, True, True, False, False]
    assert v1.valid.tolist() == v1.face.tolist() and v1.features[0].tolist() == [2, 2, 3, 3, 3]
    labels["v3_left"] = np.zeros(3, int)
    b.write(VideoFeatures("v3", np.ones((3, 3)), np.arange(3) / 30.0))
    a.write(VideoFeatures("v3", np.ones((3, 2)), np.arange(3) / 30.0))
    with pytest.raises(FeatureStoreError, match="v3_left.*per person"):
        load_expr_videos(labels, [a, b])
    assert [v.id for v in load_expr_videos(labels, [a, b], on_missing="skip")] == ["v1", "v2"]
    unlabelled = load_expr_videos(["v2"], [a])[0]
    assert unlabelled.n_frames == 4 and (unlabelled.labels == -1).all()
    sampled = FeatureSet.create(tmp_path / "s", FeatureSetMeta("s", 1, rate=5.0))
    sampled.write(VideoFeatures("v1", np.arange(3, dtype=np.float32)[:, None], np.array([0.0, 0.2, 0.4])))
    with pytest.raises(FeatureStoreError, match="frame rate .* unknown"):
        load_expr_videos(labels, [sampled])
    v = load_expr_videos({"v1": np.zeros(15, int)}, [sampled], fps=30.0)[0]  # nearest row per frame
    assert v.features[:, 0].tolist() == [0] * 4 + [1] * 6 + [2] * 5


def test_windows_cover_and_average():
    for n, length, stride in ((100, 32, 16), (10, 32, 16), (33, 32, 32), (64, 32, 32)):
        starts = window_starts(n, length, stride)
        covered = np.zeros(n, bool)
        for s in starts:
            covered[s:s + length] = True
        assert covered.all() and (starts + length <= max(n, length)).all()
    x = np.arange(10, dtype=np.float32)[:, None]
    starts = window_starts(10, 4, 3)
    windows, pad = cut_windows(x, starts, 4)
    assert not pad.any() and windows.shape == (3, 4, 1) and starts.tolist() == [0, 3, 6]
    assert np.array_equal(overlap_average(windows, starts, 10), x)  # consistent windows average to the input
    short, pad = cut_windows(x[:3], np.array([0]), 5)
    assert pad.tolist() == [[False, False, False, True, True]] and short[0, 3:].sum() == 0
    win = np.zeros((2, 4, 1), np.float32)
    win[1] = 1.0
    assert overlap_average(win, np.array([0, 2]), 6)[:, 0].tolist() == [0, 0, 0.5, 0.5, 1, 1]


def test_smoothing():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(8), size=50).astype(np.float32)
    mean = smooth_probabilities(probs, "mean", 5)
    assert np.allclose(mean.sum(1), 1) and np.allclose(mean[10], probs[8:13].mean(0), atol=1e-6)
    labels = np.array([1] * 10 + [3] + [1] * 10)
    mode = smooth_probabilities(np.eye(8)[labels], "mode", 5)
    assert (mode.argmax(1) == 1).all() and np.allclose(mode.sum(1), 1)
    assert smooth_probabilities(probs, "none", 9) is not None and parse_smoothing("mode:7") == ("mode", 7)
    with pytest.raises(ValueError):
        parse_smoothing("median:3")


def test_audio_stream_aligned_to_frames(tmp_path):
    face = FeatureSet.create(tmp_path / "f", FeatureSetMeta("f", 2, rate=None, extra={"fps": 10.0}))
    audio = FeatureSet.create(tmp_path / "a", FeatureSetMeta("a", 1, rate=2.0, modality="audio"))
    face.write(VideoFeatures("v_left", np.ones((20, 2)), np.arange(20) / 10.0, np.arange(20) % 4 != 0))
    audio.write(VideoFeatures("v", np.array([[0.], [1.], [2.], [3.]]), np.array([0.0, 0.5, 1.0, 1.5])))
    (v,) = load_expr_videos({"v_left": np.zeros(20, int)}, [face], audio_set=audio, fill="mask")
    assert v.features.shape == (20, 3)  # face columns then audio columns; audio shared by _left/_right
    assert v.features[:, 2].tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3]
    assert v.valid.tolist() == (np.arange(20) % 4 != 0).tolist()
