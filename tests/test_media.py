"""Decoding: frame numbering, sampling, timestamps, rotation, audio, and every bad-input case.

All media are written by the tests with PyAV into tmp_path.
"""

from __future__ import annotations

import av
import numpy as np
import pytest

from affectfuse.media import MediaError, iter_audio, iter_frames, probe, read_audio
from affectfuse.media.write import write_video


def gray_frames(n, h=48, w=64):
    """Frame k is uniformly grey with level 20 + 20 * (k % 11): recognisable after lossy coding."""
    return np.stack([np.full((h, w, 3), 20 + 20 * (k % 11), np.uint8) for k in range(n)])


def levels(batch_images):
    return np.round((batch_images.reshape(len(batch_images), -1).mean(1) - 20) / 20).astype(int)


def test_every_frame_numbered_from_one(tmp_path):
    path = write_video(tmp_path / "a.mp4", gray_frames(23), fps=10)
    batches = list(iter_frames(path, batch_size=4))
    assert [len(b) for b in batches] == [4] * 5 + [3]
    nums = np.concatenate([b.frame_numbers for b in batches])
    times = np.concatenate([b.timestamps for b in batches])
    imgs = np.concatenate([b.images for b in batches])
    np.testing.assert_array_equal(nums, np.arange(1, 24))
    np.testing.assert_allclose(times, np.arange(23) / 10, atol=1e-6)
    np.testing.assert_array_equal(levels(imgs), np.arange(23) % 11)
    assert imgs.dtype == np.uint8 and imgs.shape == (23, 48, 64, 3)
    info = probe(path)
    assert (info.n_frames, info.width, info.height, info.rotation) == (23, 64, 48, 0)
    assert info.fps == pytest.approx(10) and info.has_video and not info.has_audio


def test_frame_images_one_at_a_time_equal_the_batches(tmp_path):
    """iter_frame_images (the sparse face path's decoder) gives iter_frames' frames, one at a time."""
    from affectfuse.media.decode import iter_frame_images

    path = write_video(tmp_path / "a.mp4", gray_frames(23), fps=10)
    single = list(iter_frame_images(path, fps=4.0, start_s=0.3))
    batches = list(iter_frames(path, fps=4.0, start_s=0.3, batch_size=3))
    np.testing.assert_array_equal([n for n, *_ in single], np.concatenate([b.frame_numbers for b in batches]))
    np.testing.assert_array_equal([t for _, t, *_ in single], np.concatenate([b.timestamps for b in batches]))
    np.testing.assert_array_equal(np.stack([im for _, _, im, _ in single]), np.concatenate([b.images for b in batches]))
    assert [n for n, *_ in single] == [4, 7, 9, 12, 14, 17, 19, 22]  # t = 0.3, 0.6, 0.8 ... (grid from start_s)


def test_sampling_at_lower_rate_and_above_native(tmp_path):
    path = write_video(tmp_path / "a.mp4", gray_frames(30), fps=10)
    nums = np.concatenate([b.frame_numbers for b in iter_frames(path, fps=2.5)])
    np.testing.assert_array_equal(nums, [1, 5, 9, 13, 17, 21, 25, 29])  # t = 0, 0.4, 0.8 ...
    every = np.concatenate([b.frame_numbers for b in iter_frames(path, fps=100)])
    np.testing.assert_array_equal(every, np.arange(1, 31))  # no frame twice
    with pytest.raises(ValueError):
        next(iter_frames(path, fps=0))


def test_variable_frame_rate_uses_stream_timestamps(tmp_path):
    from fractions import Fraction

    pts_ms = [0, 40, 80, 300, 320, 340, 900, 1000, 1010, 1500]
    path = write_video(tmp_path / "vfr.mkv", gray_frames(len(pts_ms)), fps=25, pts=pts_ms,
                       time_base=Fraction(1, 1000))
    batch = next(iter_frames(path))
    np.testing.assert_allclose(batch.timestamps, np.array(pts_ms) / 1000, atol=1e-3)
    np.testing.assert_array_equal(levels(batch.images), np.arange(len(pts_ms)) % 11)
    # 2 fps grid 0, .5, 1.0, 1.5: first frame at/after each grid point, by time not by index
    sampled = next(iter_frames(path, fps=2))
    np.testing.assert_array_equal(sampled.frame_numbers, [1, 7, 8, 10])


@pytest.mark.parametrize("rotation,expect_corner", [(-90, "top_right"), (90, "bottom_left"), (180, "bottom_right")])
def test_rotation_metadata_is_honoured(tmp_path, rotation, expect_corner):
    img = np.zeros((32, 64, 3), np.uint8)
    img[:8, :8] = 255  # white square top-left of the stored picture
    path = write_video(tmp_path / "phone.mp4", np.stack([img] * 3), rotation=rotation)
    info = probe(path)
    assert info.rotation == rotation
    out = next(iter_frames(path)).images[0]
    assert out.shape[:2] == ((64, 32) if rotation in (90, -90) else (32, 64))
    h, w = out.shape[:2]
    corners = {"top_left": out[:8, :8], "top_right": out[:8, w - 8:], "bottom_left": out[h - 8:, :8],
               "bottom_right": out[h - 8:, w - 8:]}
    assert max(corners, key=lambda k: corners[k].mean()) == expect_corner
    assert (info.width, info.height) == (w, h)


def test_max_side_downscales_at_decode(tmp_path):
    path = write_video(tmp_path / "big.mp4", gray_frames(2, h=216, w=384))
    batch = next(iter_frames(path, max_side=96))
    assert batch.images.shape == (2, 54, 96, 3) and batch.scale == pytest.approx(0.25)


def test_audio_resampled_to_mono_16k(tmp_path):
    sr, dur = 44100, 1.5
    t = np.arange(int(sr * dur)) / sr
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = write_video(tmp_path / "av.mp4", gray_frames(15), fps=10, audio=tone, audio_rate=sr)
    info = probe(path)
    assert info.has_audio and info.audio_rate == sr
    wave = read_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - dur * 16000) < 0.05 * 16000
    assert np.abs(wave).max() <= 1.0
    spectrum = np.abs(np.fft.rfft(wave[2000:18000]))
    assert np.fft.rfftfreq(16000, 1 / 16000)[np.argmax(spectrum)] == pytest.approx(440, abs=2)
    assert 0.3 < np.abs(wave[2000:18000]).max() < 0.7
    chunks = list(iter_audio(path, chunk_s=0.25))
    assert all(len(c) == 4000 for c in chunks[:-1]) and 0 < len(chunks[-1]) <= 4000
    np.testing.assert_array_equal(np.concatenate(chunks), wave)


def test_no_audio_stream_is_reported_absent(tmp_path):
    path = write_video(tmp_path / "silent.mp4", gray_frames(5))
    assert read_audio(path) is None
    assert list(iter_audio(path)) == []
    assert not probe(path).has_audio


def test_no_video_stream(tmp_path):
    path = tmp_path / "voice.wav"
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=16000, layout="mono")
        af = av.AudioFrame.from_ndarray(np.zeros((1, 1600), np.int16), format="s16", layout="mono")
        af.sample_rate = 16000
        for p in list(s.encode(af)) + list(s.encode()):
            c.mux(p)
    info = probe(path)
    assert not info.has_video and info.has_audio
    with pytest.raises(MediaError, match="no video stream") as err:
        next(iter_frames(path))
    assert str(path) in str(err.value)
    assert len(read_audio(path)) == 1600


def test_zero_frames(tmp_path):
    path = tmp_path / "empty.avi"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        c.start_encoding()  # header with a video stream, then not a single frame
        for p in s.encode():
            c.mux(p)
    assert probe(path).n_frames == 0
    with pytest.raises(MediaError, match="zero decodable frames") as err:
        list(iter_frames(path))
    assert err.value.path == str(path)


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty", "missing", "folder"])
def test_bad_files_raise_media_error_naming_file(tmp_path, kind):
    path = tmp_path / f"{kind}.mp4"
    if kind == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        full = write_video(tmp_path / "full.mp4", gray_frames(20)).read_bytes()
        path.write_bytes(full[: len(full) // 2])  # mp4 index (moov) is at the end: cut off
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    causes = {"garbage": "not a readable media file", "truncated": "not a readable media file",
              "empty": "empty", "missing": "does not exist", "folder": "directory"}
    from affectfuse.media.decode import iter_frame_images

    for call in (probe, lambda p: list(iter_frames(p)), lambda p: list(iter_frame_images(p)), read_audio):
        with pytest.raises(MediaError, match=causes[kind]) as err:
            call(path)
        assert str(path) in str(err.value)


def test_truncated_stream_container_keeps_decodable_prefix(tmp_path):
    """Documented: a cut mkv (no index needed) yields the frames before the cut, numbered as usual."""
    full = write_video(tmp_path / "full.mkv", gray_frames(40), codec="mjpeg").read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(full[: len(full) * 6 // 10])
    batches = list(iter_frames(cut))
    nums = np.concatenate([b.frame_numbers for b in batches])
    assert 10 < len(nums) < 40
    np.testing.assert_array_equal(nums, np.arange(1, len(nums) + 1))
    np.testing.assert_array_equal(levels(np.concatenate([b.images for b in batches])), np.arange(len(nums)) % 11)
