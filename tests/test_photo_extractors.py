"""The default extractors of ``affectfuse extract`` per kind of input, and ``mobilenetv2-face``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from affectfuse.cli.extract import DEFAULT_EXTRACTORS, extractor_names
from affectfuse.features.inputs import MediaItem
from affectfuse.features.registry import (AUDIO_EXTRACTORS, PHOTO_EXTRACTORS, create_extractor,
                                         default_extractors, list_extractors)


def _items(tmp_path: Path, names: list[str]) -> list[MediaItem]:
    items = []
    for n in names:
        (tmp_path / n).write_bytes(b"x")
        items.append(MediaItem(Path(n).stem, tmp_path / n))
    return items


def test_each_kind_of_input_gets_its_default_extractors(tmp_path):
    base = DEFAULT_EXTRACTORS.split(",")
    assert extractor_names(None, _items(tmp_path, ["a.mp4", "b.MKV"])) == base
    frames = tmp_path / "video_1"
    frames.mkdir()
    assert extractor_names(None, [MediaItem("video_1", frames)]) == base   # a frame folder is a video
    assert extractor_names(None, _items(tmp_path, ["s.wav", "t.FLAC"])) == list(AUDIO_EXTRACTORS)
    assert extractor_names(None, _items(tmp_path, ["p.jpg", "q.PNG"])) == list(PHOTO_EXTRACTORS)
    mixed = extractor_names(None, _items(tmp_path, ["d.JPG", "c.mp4", "e.wav"]))
    assert mixed == list(dict.fromkeys(base + list(AUDIO_EXTRACTORS) + list(PHOTO_EXTRACTORS)))
    assert len(set(mixed)) == len(mixed) and "faceexpressionnet" in PHOTO_EXTRACTORS
    assert all(n in list_extractors() for n in mixed)
    assert extractor_names("faceexpressionnet", _items(tmp_path, ["e.png"])) == ["faceexpressionnet"]
    with pytest.raises(ValueError, match="empty"):
        extractor_names(" , ", _items(tmp_path, ["f.png"]))
    with pytest.raises(ValueError, match="unknown input kind"):
        default_extractors(base, {"hologram"})


def test_extract_without_options_uses_the_audio_default(tmp_path, monkeypatch):
    """``affectfuse extract`` with no --extractors on a folder of wav files runs the audio default only."""
    import affectfuse.features.build as build
    from affectfuse.cli import main

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.wav").write_bytes(b"RIFF")
    asked = []

    def stop(names, *args, **kwargs):
        asked.extend(names)
        raise SystemExit(0)

    monkeypatch.setattr(build, "build_extractors", stop)
    with pytest.raises(SystemExit):
        main(["extract", str(tmp_path / "in"), "--out", str(tmp_path / "feats"), "--no-progress"])
    assert asked == list(AUDIO_EXTRACTORS)


def test_mobilenetv2_face_plan_shapes_and_flip_views():
    ext = create_extractor("mobilenetv2-face", random_weights=True)
    assert ext.input.size == 224 and ext.input.template == "mtcnn_box" and ext.tta.flip
    crops = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    out = ext(crops)
    assert out.shape == (2, 1280) == (2, ext.dim) and out.dtype == np.float32 and np.isfinite(out).all()
    # flip views: a crop and its mirror image give the same features
    np.testing.assert_allclose(ext(np.ascontiguousarray(crops[:, :, ::-1])), out, rtol=1e-4, atol=1e-5)
    one = create_extractor("mobilenetv2-face", random_weights=True, tta="none")
    with torch.no_grad():
        ref = one.model(one.preprocess(crops)).numpy()
    np.testing.assert_allclose(one(crops), ref, rtol=1e-5, atol=1e-5)
