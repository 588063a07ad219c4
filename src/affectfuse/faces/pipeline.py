"""Video -> aligned face crops, streaming: decode, detect (batched), track, align.

Two passes over the file, so memory stays flat however long the video is:

1. :func:`detect_video` decodes the sampled frames at detection resolution (longer side at most
   ``detect_max_side``; swscale area filter), runs MTCNN on batches of frames and the IoU tracker,
   and keeps only boxes, landmarks and track ids (flat arrays, ~100 bytes per sampled frame), then stitches
   broken tracks and picks the main person (see :mod:`affectfuse.faces.track`). Choosing "the most
   persistent, largest" person needs the whole video, hence this pass.
2. :func:`iter_faces` decodes the same frames again at full resolution and cuts the aligned crops
   from the original pixels, yielding :class:`FaceBatch` es. Decoding is much cheaper than
   detection (see docs/benchmarks.md), so the second pass costs little.

Frames where the chosen face is absent are kept, with ``found=False`` and black crops.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from affectfuse.faces.mtcnn import MTCNN, load_mtcnn
from affectfuse.faces.plan import CropSpec, FacePlan, crop_faces, crop_specs
from affectfuse.faces.track import IoUTracker, TrackStats, merge_stats, select_main_track, stitch_tracks
from affectfuse.media.decode import MediaError, iter_frames, probe

# Pixels per detection batch. On CPU, big batches only add cache misses (MTCNN is memory-bound there:
# measured 59-74 ms CPU/frame for 2-4 frames of 640x360 vs 81-88 ms for 16), so batches stay small; on a
# GPU, large batches are what makes it fast.
DETECT_PIXEL_BUDGET = {"cpu": 1_000_000, "other": 16_000_000}
CROP_PIXEL_BUDGET = 16_000_000  # pixels per full-resolution crop batch (uint8 ~48 MB)
KEEP_MODES = ("main", "all")


@dataclass
class FaceBatch:
    """Aligned faces of up to ``batch_size`` frames (one row per frame; with ``keep="all"`` one row
    per face, so a frame with two faces has two rows with the same frame number).

    Attributes:
        frame_numbers: (B,) int64, 1-based (Aff-Wild2 numbering).
        timestamps: (B,) float64 seconds (NaN for image folders without ``fps``).
        found: (B,) bool; False = no (main) face in this frame; its crops are black.
        track_ids: (B,) int64 track (person) id, -1 where not found.
        boxes: (B, 4) float32 ``x1, y1, x2, y2`` pixels of the original frame (NaN where not found).
        landmarks: (B, 5, 2) float32 ``(x, y)`` pixels (NaN where not found or unknown).
        scores: (B,) float32 detector face probability (0 where not found).
        crops: ``{CropSpec: (B, S, S, 3) uint8 RGB}`` aligned crops per requested geometry
            (:mod:`affectfuse.faces.plan`; ``batch.crops[extractor.input.crop]``).
        source: the file or folder these came from.
    """

    frame_numbers: np.ndarray
    timestamps: np.ndarray
    found: np.ndarray
    track_ids: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray
    crops: dict[CropSpec, np.ndarray]
    source: str = ""

    def __len__(self) -> int:
        return len(self.frame_numbers)


class _Rows:
    """Accumulates FaceBatch rows."""

    def __init__(self, specs: Sequence[CropSpec], source: str):
        self.specs, self.source = tuple(specs), source
        self.clear()

    def clear(self):
        self.num, self.t, self.found, self.tid, self.box, self.lm, self.score = [], [], [], [], [], [], []
        self.crops = {s: [] for s in self.specs}

    def add(self, num, t, image=None, box=None, lm=None, score=0.0, tid=-1, crops=None):
        found = box is not None
        self.num.append(num)
        self.t.append(t)
        self.found.append(found)
        self.tid.append(tid if found else -1)
        self.box.append(box if found else np.full(4, np.nan, np.float32))
        self.lm.append(lm if lm is not None else np.full((5, 2), np.nan, np.float32))
        self.score.append(score if found else 0.0)
        for s in self.specs:
            if crops is not None:
                crop = crops[s]
            elif found and image is not None and lm is not None and np.isfinite(lm).all():
                crop = crop_faces(image, lm, s)[0]
            else:
                crop = np.zeros((s.size, s.size, 3), np.uint8)
            self.crops[s].append(crop)

    def __len__(self):
        return len(self.num)

    def pop(self) -> FaceBatch:
        out = FaceBatch(np.asarray(self.num, np.int64), np.asarray(self.t, np.float64),
                        np.asarray(self.found, bool), np.asarray(self.tid, np.int64),
                        np.asarray(self.box, np.float32).reshape(-1, 4),
                        np.asarray(self.lm, np.float32).reshape(-1, 5, 2),
                        np.asarray(self.score, np.float32),
                        {s: np.stack(v) if v else np.zeros((0, s.size, s.size, 3), np.uint8)
                         for s, v in self.crops.items()},
                        self.source)
        self.clear()
        return out


@functools.lru_cache(maxsize=2)
def default_detector(device: str = "cpu") -> MTCNN:
    """The pretrained MTCNN, loaded once per process and device."""
    return load_mtcnn(device=device)


@dataclass
class VideoDetections:
    """Result of the detection pass over one video, stored flat (~100 bytes per sampled frame).

    Attributes:
        path: the video.
        frame_numbers: (N,) int64 sampled frame numbers (1-based); timestamps: (N,) float64 s.
        offsets: (N + 1,) int64; the detections of sampled frame ``i`` are rows ``offsets[i]:offsets[i+1]`` of
        boxes: (K, 4) float32 xyxy, scores: (K,) float32, landmarks: (K, 5, 2) float32 (original-frame
            pixels) and track_ids: (K,) int64 stitched (chain) track ids.
        tracks: per stitched track, :class:`TrackStats`; main_track: the main person's id (None: no face).
    """

    path: str
    frame_numbers: np.ndarray
    timestamps: np.ndarray
    offsets: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray
    track_ids: np.ndarray
    tracks: dict[int, TrackStats] = field(default_factory=dict)
    main_track: int | None = None

    def __len__(self) -> int:
        return len(self.frame_numbers)

    def frame(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(boxes (F, 4), scores (F,), landmarks (F, 5, 2), track_ids (F,)) of sampled frame ``i``."""
        sl = slice(self.offsets[i], self.offsets[i + 1])
        return self.boxes[sl], self.scores[sl], self.landmarks[sl], self.track_ids[sl]

    @property
    def found_fraction(self) -> float:
        """Share of sampled frames where the main person's face was found."""
        if len(self.frame_numbers) == 0 or self.main_track is None:
            return 0.0
        rows = np.flatnonzero(self.track_ids == self.main_track)
        frames = np.searchsorted(self.offsets, rows, side="right") - 1
        return len(np.unique(frames)) / len(self.frame_numbers)


def _cat(parts: list, empty_shape: tuple) -> np.ndarray:
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(empty_shape, np.float32)


def _batch_for(pixels_per_frame: int, batch_size: int, budget: int) -> int:
    return int(max(1, min(batch_size, budget // max(1, pixels_per_frame))))


def detect_video(path: str | os.PathLike, fps: float | None = None, detector: MTCNN | None = None,
                 batch_size: int = 32, detect_max_side: int | None = 1280,
                 tracker: IoUTracker | None = None, stitch_gap_s: float = 10.0, progress=None) -> VideoDetections:
    """Pass 1: detect and track faces in the sampled frames, keeping boxes only (memory ~100 B/frame).

    ``progress``: called as ``progress(done_s, total_s)`` (seconds of video) after each detection batch."""
    info = probe(path)
    if not info.has_video:
        raise MediaError(path, "no video stream (audio-only file): no faces to find")
    detector = detector or default_detector()
    tracker = tracker or IoUTracker()
    side = max(info.width, info.height) or 1
    scale = min(1.0, detect_max_side / side) if detect_max_side else 1.0
    budget = DETECT_PIXEL_BUDGET["cpu" if detector.device.type == "cpu" else "other"]
    bsize = _batch_for(int(info.width * info.height * scale * scale), batch_size, budget)
    nums, times, counts, boxes, scores, marks, ids = [], [], [], [], [], [], []
    for batch in iter_frames(path, fps=fps, batch_size=bsize, max_side=detect_max_side):
        for num, t, det in zip(batch.frame_numbers, batch.timestamps, detector.detect(batch.images)):
            det = det.unscaled(batch.scale)                 # MTCNN's box convention, in original pixels
            b = det.boxes
            nums.append(int(num))
            times.append(float(t))
            counts.append(len(det))
            if len(det):
                boxes.append(b)
                scores.append(det.scores)
                marks.append(det.landmarks)
                ids.append(tracker.update(float(t), b))
        if progress is not None and len(batch.timestamps):
            progress(float(batch.timestamps[-1]), float(info.duration_s or batch.timestamps[-1]))
    chain = stitch_tracks(tracker.stats, stitch_gap_s=stitch_gap_s)
    tracks = merge_stats(tracker.stats, chain)
    ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    ids = np.array([chain[int(i)] for i in ids], np.int64)
    return VideoDetections(str(path), np.asarray(nums, np.int64), np.asarray(times, np.float64),
                           np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), _cat(boxes, (0, 4)),
                           _cat(scores, (0,)), _cat(marks, (0, 5, 2)), ids, tracks, select_main_track(tracks))


def iter_faces(path: str | os.PathLike, fps: float | None = None, crops: Sequence[CropSpec | FacePlan] = (),
               batch_size: int = 32, keep: str = "main", detector: MTCNN | None = None,
               detect_max_side: int | None = 1280,
               detections: VideoDetections | None = None) -> Iterator[FaceBatch]:
    """Decode + detect + track + align a video, streaming.

    Args:
        path: video file.
        fps: sampling rate in frames/s (``None``: every frame).
        crops: the crops to cut (the extractors' :class:`~affectfuse.faces.plan.FacePlan` s or their
            :class:`~affectfuse.faces.plan.CropSpec` s), each by :func:`affectfuse.faces.plan.crop_faces`.
        batch_size: at most this many frames per yielded batch (fewer for very large frames).
        keep: ``"main"`` -- one row per sampled frame with the main person (most persistent x
            largest track); ``"all"`` -- one row per face and frame with its track id (and one
            ``found=False`` row for a frame without faces).
        detector: an :class:`MTCNN` (default: the pretrained one on CPU).
        detect_max_side: detection runs on frames downscaled to this longer side; crops always come
            from the original frames. ``None``: full size.
        detections: a finished :func:`detect_video` result to reuse (skips pass 1).

    Raises:
        MediaError: unreadable file, no video stream, zero frames (see :func:`affectfuse.media.iter_frames`).
    """
    if keep not in KEEP_MODES:
        raise ValueError(f"keep must be one of {KEEP_MODES}, got {keep!r}")
    specs = crop_specs(crops)
    info = probe(path)
    dets = detections or detect_video(path, fps, detector, batch_size, detect_max_side)
    rows = _Rows(specs, str(path))
    bsize = _batch_for(info.width * info.height, batch_size, CROP_PIXEL_BUDGET)
    i = 0
    for batch in iter_frames(path, fps=fps, batch_size=bsize):
        for num, t, image in zip(batch.frame_numbers, batch.timestamps, batch.images):
            if i >= len(dets.frame_numbers) or dets.frame_numbers[i] != num:
                raise MediaError(path, f"frame {num} was not in the detection pass (file changed or decoding is "
                                       "not reproducible)")
            boxes, scores, marks, ids = dets.frame(i)
            picks = np.flatnonzero(ids == dets.main_track) if keep == "main" else np.argsort(ids, kind="stable")
            if len(picks) == 0:
                rows.add(int(num), float(t))
            for p in picks[:1] if keep == "main" else picks:
                rows.add(int(num), float(t), image, boxes[p], marks[p], float(scores[p]), int(ids[p]))
            i += 1
        if len(rows):
            yield rows.pop()
