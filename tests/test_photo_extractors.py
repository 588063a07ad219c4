"""The default extractors of ``affectfuse extract`` per kind of input, and ``mobilenetv2-face``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from affectfuse.cli.extract import DEFAULT_EXTRACTORS
from affectfuse.features.inputs import MediaItem
from affectfuse.features.registry import (AUDIO_EXTRACTORS, PHOTO_EXTRACTORS, PHOTO_TTA, create_extractor,
                                         default_extractors, extractor_plan, list_extractors)


def extractor_names(given, items) -> list[str]:
    """The names `affectfuse extract` runs (its ``--extractors`` value, ``None`` when not given)."""
    return extractor_plan(given, items)[0]


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
        default_extractors({"hologram"})


def _asked(tmp_path, monkeypatch, files: list[str], extra: list[str] = (), api: bool = False
           ) -> list[tuple[str, str | None]]:
    """(extractor, tta option) pairs ``affectfuse extract`` (or ``affectfuse.extract(..., None, ...)`` with
    ``api``) asks build_extractors for on ``files``."""
    import affectfuse.features.build as build
    from affectfuse.cli import main

    (tmp_path / "in").mkdir(parents=True)
    for f in files:
        (tmp_path / "in" / f).write_bytes(b"x")
    asked = []

    def record(names, *args, per_name=None, **kwargs):   # options given to all win over per-name ones
        asked.extend((n, kwargs.get("tta", (per_name or {}).get(n, {}).get("tta"))) for n in names)
        return []

    def stop(*args, **kwargs):
        raise SystemExit(0)

    monkeypatch.setattr(build, "build_extractors", record)
    monkeypatch.setattr("affectfuse.features.pipeline.extract", stop)
    with pytest.raises(SystemExit):
        if api:
            import affectfuse

            affectfuse.extract(tmp_path / "in", None, tmp_path / "feats")
        else:
            main(["extract", str(tmp_path / "in"), "--out", str(tmp_path / "feats"), "--no-progress", *extra])
    return asked


def test_extract_without_options_uses_each_kinds_default_and_the_photo_views(tmp_path, monkeypatch):
    assert _asked(tmp_path / "a", monkeypatch, ["a.wav"]) == [(n, None) for n in AUDIO_EXTRACTORS]
    photos = _asked(tmp_path / "p", monkeypatch, ["p.jpg", "q.png"])
    assert photos == [(n, PHOTO_TTA.get(n)) for n in PHOTO_EXTRACTORS] and PHOTO_TTA
    mixed = dict(_asked(tmp_path / "m", monkeypatch, ["p.jpg", "v.mp4"]))
    assert set(mixed) >= set(PHOTO_EXTRACTORS) and not any(mixed.values())   # a video: each network's own views
    named = _asked(tmp_path / "n", monkeypatch, ["p.jpg"], ["--extractors", "faceexpressionnet"])
    assert named == [("faceexpressionnet", None)]
    # the Python API without extractor names: the same defaults and views as the command
    for kind, files in {"a": ["a.wav"], "p": ["p.jpg", "q.png"], "m": ["p.jpg", "v.mp4"]}.items():
        assert _asked(tmp_path / f"api_{kind}", monkeypatch, files, api=True) == \
            _asked(tmp_path / f"cli_{kind}", monkeypatch, files)


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


def test_mobilenetv2_face_missing_weights_names_where_to_put_them(tmp_path):
    from affectfuse.weights import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError) as err:
        create_extractor("mobilenetv2-face", weights=str(tmp_path / "missing.pth"))
    msg = str(err.value)
    assert "missing.pth" in msg and "AFFECTFUSE_MOBILENETV2" in msg and "mobilenet_v2-b0353104.pth" in msg


def test_per_name_options_reach_their_factory_and_shared_options_win():
    from affectfuse.features.build import build_extractors

    views = {"faceexpressionnet": {"tta": "flip"}}
    (plain,) = build_extractors(["faceexpressionnet"], random_weights=True)
    (viewed,) = build_extractors(["faceexpressionnet"], random_weights=True, per_name=views)
    (shared,) = build_extractors(["faceexpressionnet"], random_weights=True, per_name=views, tta="none")
    assert not plain.tta.flip and viewed.tta.flip and not shared.tta.flip


def test_random_weights_are_the_same_in_every_build_and_leave_the_callers_rng_alone():
    """Random weights (tests only) come out the same whatever torch's random state (a Ray worker or a
    decoding process builds the same network as the main process), and the caller's state is not moved."""
    crops = np.random.default_rng(1).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    torch.manual_seed(123)
    first = create_extractor("faceexpressionnet", random_weights=True, runtime="torch")
    after = torch.rand(3)
    torch.manual_seed(123)
    torch.rand(7)   # a different state before the second build
    second = create_extractor("faceexpressionnet", random_weights=True, runtime="torch")
    np.testing.assert_array_equal(first(crops), second(crops))
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), after)   # building did not draw from the caller's generator
