"""The photo defaults of ``affectfuse extract`` and the ``mobilenetv2-face`` extractor they add."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from affectfuse.cli.extract import DEFAULT_EXTRACTORS, extractor_names
from affectfuse.features.inputs import MediaItem
from affectfuse.features.registry import PHOTO_EXTRACTORS, create_extractor, list_extractors


def _items(tmp_path: Path, names: list[str]) -> list[MediaItem]:
    items = []
    for n in names:
        (tmp_path / n).write_bytes(b"x")
        items.append(MediaItem(Path(n).stem, tmp_path / n))
    return items


def test_photos_get_the_photo_extractors_videos_keep_the_default(tmp_path):
    base = DEFAULT_EXTRACTORS.split(",")
    assert extractor_names(None, _items(tmp_path, ["a.mp4", "b.wav"])) == base
    frames = tmp_path / "video_1"
    frames.mkdir()
    assert extractor_names(None, [MediaItem("video_1", frames)]) == base   # a frame folder is a video
    both = extractor_names(None, _items(tmp_path, ["c.mp4", "d.JPG"]))
    assert both == base + list(PHOTO_EXTRACTORS) and len(set(both)) == len(both)
    assert extractor_names("faceexpressionnet", _items(tmp_path, ["e.png"])) == ["faceexpressionnet"]
    assert all(n in list_extractors() for n in both)


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
