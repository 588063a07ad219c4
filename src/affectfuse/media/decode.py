"""Streaming decode of video frames and audio with PyAV (anything ffmpeg reads).

Conventions (every function here follows them):

- Frame numbers are 1-based and count *decoded* frames in stream order, as Aff-Wild2 does:
  frame ``k`` is the k-th frame of the video stream and matches ``cropped_aligned/<video>/<k:05d>.jpg``
  and line ``k`` (after the header) of an EXPR annotation file.
- Timestamps are seconds from the frame's presentation time stamp (pts) minus the stream's start
  time, so the first frame is at (about) 0.0 s; with variable frame rate they are irregular.
- Images are ``(H, W, 3)`` uint8 RGB as displayed: a rotation stored in the container's display
  matrix (phone videos) is applied, so ``H, W`` are those of the upright picture.
- Audio is mono float32 in [-1, 1] at the requested sample rate (default 16 kHz).

Nothing holds a whole video in memory: :func:`iter_frames` and :func:`iter_audio` stream, and
memory stays flat in video length.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

logger = logging.getLogger(__name__)


# Frame-threaded decoding pays in wall time on large pictures; up to 720p one decoder thread costs least CPU
# (640x360 H.264: 0.28-0.30 CPU-s a pass of 472 frames against 0.34-0.38 with frame threads, docs/benchmarks.md).
FRAME_THREADS_ABOVE = 1280 * 720


class MediaError(ValueError):
    """A media file cannot be read as asked; the message names the file and the cause."""

    def __init__(self, path: str | os.PathLike, cause: str):
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")


@dataclass
class MediaInfo:
    """What :func:`probe` learns about a file without decoding it whole.

    Attributes:
        path: the file.
        duration_s: container duration in seconds (0.0 when unknown).
        fps: nominal video frame rate in frames/s (average rate; 0.0 without video).
        n_frames: number of video frames: from the container header when it has one, else
            estimated as ``round(duration_s * fps)`` (see ``n_frames_exact``).
        width, height: size of the upright (rotation applied) picture in pixels.
        rotation: display rotation in degrees counter-clockwise (ffprobe's ``rotation`` side
            data, PyAV's ``VideoFrame.rotation``), one of 0, 90, -90, 180. Frames returned by
            :func:`iter_frames` are already rotated by it.
        has_video, has_audio: whether the file has such a stream.
        audio_rate: native sample rate of the first audio stream in Hz (0 without audio).
        n_frames_exact: False when ``n_frames`` is an estimate (flv, mkv, webm headers lack it).
        video_codec, audio_codec: codec names ('' when absent).
    """

    path: str
    duration_s: float
    fps: float
    n_frames: int
    width: int
    height: int
    rotation: int
    has_video: bool
    has_audio: bool
    audio_rate: int
    n_frames_exact: bool = True
    video_codec: str = ""
    audio_codec: str = ""


@dataclass
class FrameBatch:
    """Up to ``batch_size`` decoded frames.

    Attributes:
        images: (B, H, W, 3) uint8 RGB, rotation applied.
        frame_numbers: (B,) int64, 1-based (Aff-Wild2 numbering).
        timestamps: (B,) float64 seconds from the stream's pts.
        scale: image pixels per original pixel (< 1 when decoded with ``max_side``).
    """

    images: np.ndarray
    frame_numbers: np.ndarray
    timestamps: np.ndarray
    scale: float = 1.0

    def __len__(self) -> int:
        return len(self.frame_numbers)


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    path = Path(path)
    if not path.exists():
        raise MediaError(path, "file does not exist")
    if path.is_dir():
        raise MediaError(path, "is a directory, not a media file")
    if path.stat().st_size == 0:
        raise MediaError(path, "file is empty (0 bytes)")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise MediaError(path, f"not a readable media file (corrupt, truncated or unknown format): {exc}") from exc


def _rotation_of(frame: av.VideoFrame) -> int:
    """Display rotation of a decoded frame, counter-clockwise degrees snapped to a multiple of 90."""
    try:
        rot = float(frame.rotation)
    except Exception:  # older PyAV or no display matrix
        return 0
    if not math.isfinite(rot):
        return 0
    return int(round(rot / 90.0)) * 90 % 360 if rot else 0


def _normalise_rotation(rot: int) -> int:
    """Map 270 -> -90 so values read like ffprobe's (0, 90, -90, 180)."""
    rot %= 360
    return -90 if rot == 270 else rot


def apply_rotation(image: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate an (H, W, C) image counter-clockwise by ``rotation`` degrees (a multiple of 90)."""
    k = int(round(rotation / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(image, k=k)) if k else image


def probe(path: str | os.PathLike) -> MediaInfo:
    """Read a file's streams and header (decodes at most one video frame, for the rotation).

    Raises:
        MediaError: missing, empty, corrupt file, or no video and no audio stream.
    """
    with _open(path) as container:
        vstreams, astreams = container.streams.video, container.streams.audio
        if not vstreams and not astreams:
            raise MediaError(path, "no video and no audio stream")
        duration = container.duration / 1e6 if container.duration else 0.0
        info = MediaInfo(str(path), duration, 0.0, 0, 0, 0, 0, bool(vstreams), bool(astreams), 0)
        if astreams:
            info.audio_rate = int(astreams[0].rate or astreams[0].codec_context.sample_rate or 0)
            info.audio_codec = astreams[0].codec_context.name
        if vstreams:
            vs = vstreams[0]
            rate = vs.average_rate or vs.guessed_rate or vs.base_rate
            info.fps = float(rate) if rate else 0.0
            info.video_codec = vs.codec_context.name
            width, height = vs.codec_context.width, vs.codec_context.height
            if not duration and vs.duration and vs.time_base:
                info.duration_s = float(vs.duration * vs.time_base)
            info.n_frames = int(vs.frames or 0)
            if not info.n_frames:
                info.n_frames_exact = False
                info.n_frames = int(round(info.duration_s * info.fps))
            try:
                first = next(container.decode(vs), None)
            except av.error.FFmpegError:
                first = None
            if first is not None:
                info.rotation = _normalise_rotation(_rotation_of(first))
                width, height = first.width, first.height
            if info.rotation in (90, -90):
                width, height = height, width
            info.width, info.height = int(width), int(height)
        return info


class FrameSampler:
    """Chooses frames at a target rate from their timestamps (works with variable frame rate).

    The first frame at or after each grid time ``0, 1/fps, 2/fps, ...`` is kept; a frame is
    never kept twice, so asking for more than the native rate gives every frame.
    """

    def __init__(self, fps: float | None):
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be positive or None, got {fps}")
        self.step = None if fps is None else 1.0 / fps
        self.next_t = 0.0

    def keep(self, t: float) -> bool:
        if self.step is None:
            return True
        if t + 1e-6 < self.next_t:
            return False
        # next grid point strictly after t
        self.next_t = (math.floor(t / self.step + 1e-6) + 1) * self.step
        return True


_Sampler = FrameSampler  # the former private name


def _to_rgb(frame, size: dict) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a decoded frame at ``size`` (swscale). One scaling thread: swscale's default
    (one per core) gives the same pixels for 2-7x the CPU on a 640x360 frame (0.35-0.5 ms more per frame
    on 2 cores; docs/benchmarks.md), and parallel work belongs to the workers, one video each."""
    global _ONE_THREAD
    try:
        return frame.to_ndarray(format="rgb24", **size, **_ONE_THREAD)
    except TypeError:  # a PyAV without reformat(threads=...)
        if not _ONE_THREAD:
            raise
        _ONE_THREAD = {}
        return frame.to_ndarray(format="rgb24", **size)


_ONE_THREAD = {"threads": 1}


def _pack(images: list, numbers: list, times: list, scale: float) -> FrameBatch:
    return FrameBatch(np.stack(images), np.asarray(numbers, np.int64), np.asarray(times, np.float64), scale)


def iter_frames(path: str | os.PathLike, fps: float | None = None, batch_size: int = 32,
                start_s: float = 0.0, end_s: float | None = None,
                max_side: int | None = None) -> Iterator[FrameBatch]:
    """Decode a video stream in batches, streaming (memory flat in video length).

    Args:
        path: any file ffmpeg reads (mp4, avi, mkv, webm, flv, mov ...).
        fps: sample at this rate (frames/s, by timestamp); ``None`` keeps every frame.
        batch_size: frames per yielded :class:`FrameBatch` (the last one may be shorter).
        start_s, end_s: keep only frames with ``start_s <= t < end_s`` (numbering stays global).
        max_side: when the picture's longer side exceeds this, frames are converted straight to a
            smaller size (longer side = ``max_side``, swscale area filter; ``FrameBatch.scale`` < 1).
            Cheaper than full-size decoding for e.g. face detection on 4K video.

    Every frame is decoded (frame numbers count all of them), but only kept frames are converted
    to RGB. Frames are (H, W, 3) uint8 RGB with the display rotation applied.

    Raises:
        MediaError: missing/corrupt file, no video stream, a decoding error (the message gives the
            last good frame number), or a video stream without a single frame.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images, numbers, times, scale = [], [], [], 1.0
    for number, t, image, scale in _decoded(path, fps, start_s, end_s, max_side):  # views, copied by the stack
        images.append(image)
        numbers.append(number)
        times.append(t)
        if len(images) == batch_size:
            yield _pack(images, numbers, times, scale)
            images, numbers, times = [], [], []
    if images:
        yield _pack(images, numbers, times, scale)


def iter_frame_images(path: str | os.PathLike, fps: float | None = None, start_s: float = 0.0,
                      end_s: float | None = None,
                      max_side: int | None = None) -> Iterator[tuple[int, float, np.ndarray, float]]:
    """:func:`iter_frames` one frame at a time: ``(frame number, timestamp s, (H, W, 3) uint8 RGB image, scale)``
    per kept frame; the same arguments, frames and errors.

    Each image is its own copy: a view into PyAV's frame would keep that frame's buffers alive while the
    image waits (+285 MB peak RSS against +104 MB for the talking-face clip's one-pass face path, and no faster).
    """
    for number, t, image, scale in _decoded(path, fps, start_s, end_s, max_side):
        yield number, t, np.array(image, order="C"), scale


def _decoded(path, fps, start_s, end_s, max_side) -> Iterator[tuple[int, float, np.ndarray, float]]:
    """The decoding loop of :func:`iter_frames` and :func:`iter_frame_images`, yielding views into PyAV's frames."""
    sampler = FrameSampler(fps)
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(path, "no video stream (audio-only or data file); use read_audio for its sound")
        stream = container.streams.video[0]
        if (stream.codec_context.width or 0) * (stream.codec_context.height or 0) > FRAME_THREADS_ABOVE:
            stream.thread_type = "AUTO"
        tb = stream.time_base or Fraction(1, 1)
        t0 = stream.start_time
        k, rotation, last_t, size, scale = 0, None, -math.inf, {}, 1.0
        try:
            for frame in container.decode(stream):
                k += 1
                if frame.pts is None:  # no timestamp: continue the nominal grid
                    rate = float(stream.average_rate or 25)
                    t = last_t + 1.0 / rate if k > 1 else 0.0
                else:
                    if t0 is None:
                        t0 = frame.pts
                    t = float((frame.pts - t0) * tb)
                last_t = t
                if t < start_s or (end_s is not None and t >= end_s) or not sampler.keep(t - start_s):
                    continue
                if rotation is None:
                    rotation = _rotation_of(frame)
                    if max_side and max(frame.width, frame.height) > max_side:
                        scale = max_side / max(frame.width, frame.height)
                    # fixed output size: a mid-stream resolution change is resized to the first one
                    size = {"width": max(1, round(frame.width * scale)),
                            "height": max(1, round(frame.height * scale)), "interpolation": "AREA"}
                yield k, t, apply_rotation(_to_rgb(frame, size), rotation), scale
        except av.error.InvalidDataError as exc:
            if k == 0:
                raise MediaError(path, f"decoding failed at the first frame (corrupt stream): {exc}") from exc
            # A cut file's last packet is partial: the single-threaded decoder rejects it where frame threads
            # dropped it. The frames before it stand; Coverage reports the short read as partial media.
            logger.warning("%s: decoding stopped after frame %d (corrupt or truncated stream): %s", path, k, exc)
        except av.error.FFmpegError as exc:
            raise MediaError(path, f"decoding failed after frame {k} (corrupt or truncated stream): {exc}") from exc
        if k == 0:
            raise MediaError(path, "video stream has zero decodable frames")


def _audio_frames(path, sample_rate: int):
    """Yield mono float32 chunks (n,) resampled to ``sample_rate``; None first if no audio."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    with _open(path) as container:
        if not container.streams.audio:
            yield None
            return
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        try:
            for frame in container.decode(stream):
                frame.pts = None  # let the resampler keep its own clock (robust to odd pts)
                for out in resampler.resample(frame):
                    yield out.to_ndarray().reshape(-1)
            for out in resampler.resample(None):
                yield out.to_ndarray().reshape(-1)
        except av.error.FFmpegError as exc:
            raise MediaError(path, f"audio decoding failed (corrupt or truncated stream): {exc}") from exc


def iter_audio(path: str | os.PathLike, sample_rate: int = 16000, chunk_s: float = 10.0) -> Iterator[np.ndarray]:
    """Stream the first audio track as mono float32 chunks of ``chunk_s`` seconds.

    Every chunk has ``round(chunk_s * sample_rate)`` samples except the last. A file without an
    audio stream yields nothing (check :func:`probe`'s ``has_audio``), it is not an error.
    """
    size = max(1, int(round(chunk_s * sample_rate)))
    buf: list[np.ndarray] = []
    held = 0
    for chunk in _audio_frames(path, sample_rate):
        if chunk is None:
            return
        buf.append(chunk)
        held += len(chunk)
        while held >= size:
            joined = np.concatenate(buf)
            yield np.clip(joined[:size], -1.0, 1.0).astype(np.float32, copy=False)
            rest = joined[size:]
            buf, held = ([rest] if len(rest) else []), len(rest)
    if held:
        yield np.clip(np.concatenate(buf), -1.0, 1.0).astype(np.float32, copy=False)


def read_audio(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray | None:
    """The whole first audio track as mono float32 in [-1, 1], shape (n_samples,).

    Returns ``None`` when the file has no audio stream (documented behaviour, not an error);
    an audio stream with no samples gives an empty array. Use :func:`iter_audio` for long files.
    """
    chunks = []
    for chunk in _audio_frames(path, sample_rate):
        if chunk is None:
            return None
        chunks.append(chunk)
    if not chunks:
        return np.zeros(0, np.float32)
    return np.clip(np.concatenate(chunks), -1.0, 1.0).astype(np.float32, copy=False)
