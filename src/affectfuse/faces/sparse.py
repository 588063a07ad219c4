"""Faces of the main person in ONE decoding pass, detecting only some frames, on downscaled copies.

Detection (MTCNN) is the costliest step of turning a video into face crops; a talking face moves little in
1/8 s. So :func:`iter_faces_sparse`:

1. decodes the video once, at full size (the crops come from the original pixels);
2. picks the detection frames at ``detect_fps`` frames/s (the first frame at or after each ``k / detect_fps``,
   the rule of :func:`affectfuse.media.iter_frames`; ``None``: every frame) and detects on copies downscaled
   to ``detect_max_side`` (``cv2.INTER_AREA``), several frames per MTCNN call; the IoU tracker
   (:mod:`affectfuse.faces.track`) links the faces; with ``tracked_scales`` (on at a ``detect_max_side``)
   a detection batch starts with a search over the whole MTCNN pyramid (at least every
   :data:`FULL_SEARCH_S` s of video) and otherwise looks only for faces at least :data:`TRACKED_SMALLEST`
   x the smallest found last (:func:`detect_tracked`, :func:`detect_sized`); of the frames
   picked, only every ``steady_stride``-th is detected for sure, and a skipped one only when the two
   detections around it disagree (another number of faces, or a box moved to IoU < ``steady_iou``): the gap
   is halved until they agree, so a still face costs half the detections and a moving one none fewer;
3. for a frame between two detection frames ``lo`` and ``hi`` (at most ``1.5 * steady_stride / detect_fps`` s
   apart) the 5 landmarks, box and score are linear in time between a face of ``lo`` and a face of ``hi`` of
   the same person; before the first / after the last detection the nearest detection within half that gap is used.
   Frames wait in a buffer until the next detection batch is done: at most :data:`FULL_BUFFER_PIXELS`
   pixels of full frames whatever the video's length;
4. cuts the crops the plans declare (:func:`affectfuse.faces.plan.crop_faces`) for every candidate person
   of the frame and spills them to a temporary file, since the main person (most persistent x largest,
   after stitching broken tracks) is known only at the end; then yields the main person's
   :class:`~affectfuse.faces.FaceBatch` es in frame order. RAM stays flat (~100 bytes per frame); the spill
   holds ``S * S * 3`` bytes per face and crop size (37 kB at 112 px).

"Same person" between ``lo`` and ``hi``: the same raw track, or a track ending at ``lo`` and one starting
(again) at ``hi`` that the end-of-video stitching joins into one chain. So the result equals detecting the
detection frames alone, choosing the main person, then interpolating -- the former two-pass path -- up to
the downscaling filter (OpenCV's area filter here, swscale's there) and, with tracked scales, the pyramid
levels left out.

Letters: N analysed frames, R rows (candidate faces over all frames), S crop side.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from affectfuse.faces.plan import crop_faces, crop_specs
from affectfuse.faces.track import IoUTracker, box_iou, merge_stats, select_main_track, stitch_tracks

# cv2, torch (through the detector's module) and av are imported where used, so that the CLI's parser can read
# the defaults below without them

DETECT_FPS = 8.0  # detections per second of video (predict's and extract's default; docs/benchmarks.md)
DETECT_MAX_SIDE = 320  # longer side of the detection copy, pixels
# Full frames waiting for their next detection (~48 MB of uint8 RGB): it sets how many detection frames share an
# MTCNN call (11 at 640x360 with the defaults, 5 with 8 M pixels), hence the networks' batches: 8 M cost 11 % more
# detection CPU on the shared clips, 24-32 M no less than 16 (docs/benchmarks.md, "A larger frame buffer").
FULL_BUFFER_PIXELS = 16_000_000
PROGRESS_EVERY = 8  # decoded frames between progress calls
# Tracked scales (docs/benchmarks.md, "Tracked scales"): with 0.6 and 4 s (0.5 and 2 s before) the 8 shared clips
# with faces get the same boxes and landmarks (to 0.01 px) for 14-18 % less detection CPU; 0.7 would drop one more
# P-Net level on some clips and move a landmark by up to 9 px.
TRACKED_SMALLEST = 0.6  # look for faces down to this fraction of the smallest one found
FULL_SEARCH_S = 4.0  # search the whole MTCNN pyramid at least this often (s of video; new small faces)
STEADY_STRIDE = 2  # where the faces hold still, detect only every STEADY_STRIDE-th detection frame
STEADY_IOU = 0.85  # "hold still": the same number of faces, each box overlapping its previous with this IoU


@dataclass
class _Detected:
    """One detection frame: time (s), boxes (F, 4), scores (F,), landmarks (F, 5, 2), raw track ids (F,)."""

    t: float
    boxes: np.ndarray
    scores: np.ndarray
    marks: np.ndarray
    ids: np.ndarray


@dataclass
class _Frame:
    index: int  # position among the analysed frames
    t: float
    image: np.ndarray  # (H, W, 3) uint8, full size
    detect: bool
    result: _Detected | None = None
    optional: bool = False  # a detection frame detected only where the detections around it disagree


class _Spill:
    """Crops of one size appended to a temporary file; read back by row through a memory map."""

    def __init__(self, size: int):
        self.size, self.rows, self.file = size, 0, tempfile.TemporaryFile(prefix="affectfuse_crops_")

    def append(self, crop: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(crop, np.uint8).data)
        self.rows += 1

    def reader(self) -> np.ndarray:
        """(R, S, S, 3) uint8, read-only."""
        self.file.flush()
        return map_crops(self.file, self.rows, self.size)


def map_crops(file, rows: int, size: int) -> np.ndarray:
    """(rows, size, size, 3) uint8 crops stored raw in ``file`` (a path or an open file), mapped read-only; no rows
    gives an empty array (a memory map cannot be empty)."""
    if rows == 0:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.memmap(file, np.uint8, "r", shape=(rows, size, size, 3))


class _Rows:
    """Candidate faces: per row the frame index, the raw track ids at the two ends (a at ``lo``, b at ``hi``;
    equal for a detected face), landmarks (5, 2), box (4,), score; crops in one spill per crop size."""

    def __init__(self, specs):
        self.specs = specs
        self.frame, self.a, self.b, self.marks, self.boxes, self.scores = [], [], [], [], [], []
        self.spills = {s: _Spill(s.size) for s in specs}

    def add(self, frame: _Frame, a: int, b: int, marks, box, score) -> None:
        self.frame.append(frame.index)
        self.a.append(a)
        self.b.append(b)
        self.marks.append(np.asarray(marks, np.float32))
        self.boxes.append(np.asarray(box, np.float32))
        self.scores.append(float(score))
        for s in self.specs:
            self.spills[s].append(crop_faces(frame.image, marks, s)[0])

    def close(self) -> None:
        for spill in self.spills.values():
            spill.file.close()


def _candidates(t: float, lo: _Detected | None, hi: _Detected | None, max_gap: float):
    """Faces (a, b, landmarks, box, score) that may be the main person's at time ``t`` between the
    detections ``lo`` (at or before ``t``) and ``hi`` (after)."""
    if lo is not None and hi is not None:
        if hi.t - lo.t > max_gap:
            return
        w = (t - lo.t) / max(hi.t - lo.t, 1e-9)
        lo_ids, hi_ids = set(lo.ids.tolist()), set(hi.ids.tolist())
        for j, b in enumerate(hi.ids.tolist()):
            pairs = [i for i, a in enumerate(lo.ids.tolist()) if a == b] if b in lo_ids else \
                [i for i, a in enumerate(lo.ids.tolist()) if a not in hi_ids]  # a ends at lo, b (re)starts
            for i in pairs:
                yield (int(lo.ids[i]), b, (1 - w) * lo.marks[i] + w * hi.marks[j],
                       (1 - w) * lo.boxes[i] + w * hi.boxes[j], (1 - w) * lo.scores[i] + w * hi.scores[j])
        return
    near = lo if lo is not None else hi
    if near is not None and abs(near.t - t) <= max_gap / 2:
        for i, a in enumerate(near.ids.tolist()):
            yield a, a, near.marks[i], near.boxes[i], near.scores[i]


class _Pass:
    """The decoding pass's state: frames waiting for their next detection, the tracker, the rows."""

    def __init__(self, detector, specs, detect_max_side, max_gap, det_batch, timer, tracked_scales=False,
                 steady_iou=STEADY_IOU, tracked_smallest=TRACKED_SMALLEST, full_search_s=FULL_SEARCH_S):
        self.detector, self.detect_max_side, self.max_gap = detector, detect_max_side, max_gap
        self.det_batch, self.timer, self.tracked_scales = det_batch, timer, tracked_scales
        self.steady_iou, self.tracked_smallest, self.full_search_s = steady_iou, tracked_smallest, full_search_s
        self.previous: _Detected | None = None  # the latest detection given to the tracker
        self.searched_t = -math.inf  # time of the latest whole-pyramid search, s
        self.tracker = IoUTracker()
        self.rows = _Rows(specs)
        self.waiting: list[_Frame] = []
        self.queued = 0  # detection frames waiting in ``self.waiting``
        self.last: _Detected | None = None  # the latest detection already resolved
        self.most_waiting = 0

    def push(self, frame: _Frame) -> None:
        self.waiting.append(frame)
        self.most_waiting = max(self.most_waiting, len(self.waiting))
        self.queued += frame.detect
        if self.queued >= self.det_batch:
            self._detect()
            self._resolve(final=False)

    def finish(self) -> None:
        optional = [f for f in self.waiting if f.optional and f.result is None]
        if optional and not any(f.detect for f in self.waiting if f.t > optional[-1].t):
            optional[-1].detect = True  # the video ends on a skipped stretch: close it with a detection
        self._detect()
        self._resolve(final=True)

    def _detect(self) -> None:
        """Detect the waiting detection frames, then the skipped ones between two that disagree; the tracker
        sees them all in time order."""
        todo = [f for f in self.waiting if f.detect and f.result is None]
        if not todo:
            return
        with self.stage("detect"):
            found = dict(zip(map(id, todo), self._find([f.image for f in todo], first_t=todo[0].t)))
            while more := self._unsteady(found):
                found.update(zip(map(id, more), self._find([f.image for f in more], found)))
            for f in self.waiting:
                if id(f) in found:
                    det = found[id(f)]
                    f.detect, f.result = True, _Detected(f.t, det.boxes, det.scores, det.landmarks,
                                                          self.tracker.update(f.t, det.boxes))
                    self.previous = f.result
            self.queued = 0

    def _unsteady(self, found: dict) -> list[_Frame]:
        """Middle skipped frame of each gap between two detections whose faces differ (count, or a box
        with IoU below ``steady_iou`` against all of the other's)."""
        more, left, between = [], self.previous, []
        for f in self.waiting:
            if id(f) in found:
                if between and left is not None and not steady(left.boxes, found[id(f)].boxes, self.steady_iou):
                    more.append(between[len(between) // 2])
                left, between = found[id(f)], []
            elif f.optional and f.result is None:
                between.append(f)
        return more

    def _find(self, images: list[np.ndarray], found: dict | None = None, first_t: float = 0.0) -> list:
        """Detections (full-frame coordinates) of frames close in time, the first at ``first_t`` s; with
        ``found`` (frame id -> detection): skipped frames between those detections, searched for faces of the
        sizes around."""
        import cv2

        height, width = images[0].shape[:2]
        scale = min(1.0, self.detect_max_side / max(height, width)) if self.detect_max_side else 1.0
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = np.stack([im if scale == 1.0 else cv2.resize(im, size, interpolation=cv2.INTER_AREA)
                          for im in images])
        if not self.tracked_scales:
            dets = self.detector.detect(small)
        elif found is None and self._search_all(first_t):
            dets = detect_tracked(self.detector, small, self.tracked_smallest)
            self.searched_t = first_t
        elif found is None:  # faces of the sizes seen last: the whole pyramid waits for its next turn
            dets = detect_sized(self.detector, small, self.previous.boxes * scale, len(self.previous.boxes),
                                self.tracked_smallest)
        else:
            near = [d.boxes * scale for d in found.values() if len(d.boxes)] + [np.zeros((0, 4))]
            dets = detect_sized(self.detector, small, np.concatenate(near), min(len(d.boxes) for d in found.values()),
                                self.tracked_smallest)
        return [d.unscaled(scale) for d in dets]

    def _search_all(self, t: float) -> bool:
        """Whether the batch starting at ``t`` s begins with a whole-pyramid search: no face known yet, or
        ``full_search_s`` since the last one (a new face at least ``tracked_smallest`` x the smallest known is
        found by every search; a smaller one waits for this)."""
        return self.previous is None or len(self.previous.boxes) == 0 or t - self.searched_t >= self.full_search_s

    def _resolve(self, final: bool) -> None:
        """Cut the candidate faces of every waiting frame whose neighbouring detections are known."""
        with self.stage("align"):
            done = 0
            for k, frame in enumerate(self.waiting):
                if frame.detect:
                    self.last = frame.result
                    found = _candidates(frame.t, frame.result, None, 0.0)
                else:
                    hi = next((f.result for f in self.waiting[k + 1:] if f.detect), None)
                    if hi is None and not final:
                        break
                    found = _candidates(frame.t, self.last, hi, self.max_gap)
                for a, b, marks, box, score in found:
                    self.rows.add(frame, a, b, marks, box, score)
                done += 1
            del self.waiting[:done]

    def stage(self, name: str):
        """The timer's context for stage ``name`` (wall and CPU seconds), or nothing without a timer."""
        return self.timer(name) if self.timer is not None else contextlib.nullcontext()


def steady(a: np.ndarray, b: np.ndarray, min_iou: float) -> bool:
    """Whether two detections' (F, 4) boxes show the same faces holding still: as many, and each of ``b``
    overlapping one of ``a`` with IoU >= ``min_iou``."""
    if len(a) != len(b):
        return False
    return len(a) == 0 or bool((box_iou(a, b).max(0) >= min_iou).all())


def detect_sized(detector, images: np.ndarray, known: np.ndarray, expected: int,
                 smallest_fraction: float = TRACKED_SMALLEST) -> list:
    """Detections of (B, H, W, 3) frames near frames whose (K, 4) boxes ``known`` were found: only faces at
    least ``smallest_fraction`` x the smallest known side are searched for (MTCNN's small-face levels
    are most of its cost: P-Net on the largest levels and R-Net on their many candidates); a frame where
    this finds fewer than ``expected`` faces is searched again over the whole pyramid, and so is every
    frame when nothing is known: a face that shrinks, leaves or turns away is looked for as before."""
    if len(known) == 0:
        return detector.detect(images)
    side = float(np.minimum(known[:, 2] - known[:, 0], known[:, 3] - known[:, 1]).min()) + 1.0  # whole pixels
    found = detector.detect(images, smallest=smallest_fraction * side)
    again = [k for k, d in enumerate(found) if len(d) < expected]
    for k, d in zip(again, detector.detect(images[again]) if again else []):
        found[k] = d
    return found


def detect_tracked(detector, images: np.ndarray, smallest_fraction: float = TRACKED_SMALLEST) -> list:
    """Detections of (B, H, W, 3) frames close in time, with fewer pyramid levels where the faces are known:
    the first frame is searched over the whole pyramid, the others as :func:`detect_sized` does with the
    first's faces."""
    first = detector.detect(images[:1])
    if len(images) == 1:
        return first
    return first + detect_sized(detector, images[1:], first[0].boxes, len(first[0]), smallest_fraction)


def _detection_batch(info, per_detection: float, detect_max_side, batch_size: int, detector,
                     buffer_pixels: int) -> int:
    """Detection frames per MTCNN call: the detector's pixel budget, and the full frames that wait meanwhile
    (``per_detection`` analysed frames per detection frame) within ``buffer_pixels``."""
    from affectfuse.faces.pipeline import DETECT_PIXEL_BUDGET, _batch_for

    side = max(info.width, info.height) or 1
    scale = min(1.0, detect_max_side / side) if detect_max_side else 1.0
    full = max(1, info.width * info.height)
    budget = DETECT_PIXEL_BUDGET["cpu" if detector.device.type == "cpu" else "other"]
    by_buffer = max(1, buffer_pixels // (full * max(1, math.ceil(per_detection - 1e-6))))
    return min(_batch_for(int(full * scale * scale), batch_size, budget), by_buffer)


def iter_faces_sparse(path: str | os.PathLike, detector=None, fps: float | None = None, crops: Sequence = (),
                      batch_size: int = 32, detect_max_side: int | None = DETECT_MAX_SIDE,
                      detect_fps: float | None = DETECT_FPS, stitch_gap_s: float = 10.0, timer=None,
                      progress=None, tracked_scales: bool | None = None, steady_stride: int = STEADY_STRIDE,
                      steady_iou: float = STEADY_IOU, tracked_smallest: float = TRACKED_SMALLEST,
                      full_search_s: float = FULL_SEARCH_S, buffer_pixels: int = FULL_BUFFER_PIXELS) -> Iterator:
    """The main person's faces in every analysed frame, one decoding pass (see the module doc).

    Args:
        path: video file.
        detector: an :class:`~affectfuse.faces.MTCNN` (default: the pretrained one on CPU).
        fps: analysed frames per second (``None``: every frame).
        crops: the models' FacePlans (or CropSpecs); ``batch.crops[plan.crop]`` is (B, S, S, 3) uint8.
        batch_size: frames per yielded batch.
        detect_max_side: longer side of the detection copy (``None``: full size).
        detect_fps: detections per second of video; ``None`` or a rate at or above the analysed one
            detects every analysed frame.
        stitch_gap_s: broken tracks within this many seconds may be joined (:func:`stitch_tracks`).
        timer: optional, ``inference.video.Timer``-like (``with timer(stage): ...`` adds the block's wall and
            CPU seconds): stages ``decode``, ``detect`` (downscale + MTCNN + tracking), ``align``
            (interpolation + crops + spill).
        progress: optional ``progress(done_s, total_s)`` every :data:`PROGRESS_EVERY` decoded frames and at the end.
        tracked_scales: detect with fewer pyramid levels where the faces are known
            (:func:`detect_tracked`, :func:`detect_sized`; the whole pyramid at least every
            :data:`FULL_SEARCH_S` s); ``None``: on with ``detect_max_side`` (the fast path), off at full size
            (the reference path it is measured against).
        steady_stride: of the frames picked at ``detect_fps`` (every analysed frame when that is at or above
            the analysed rate), detect every ``steady_stride``-th, and the others only between two detections
            that disagree (:func:`steady` with ``steady_iou``), halving the gap until the faces agree or no
            picked frame is left between (1: every picked frame; ``detect_fps=None`` detects every analysed
            frame whatever this says).
        tracked_smallest, full_search_s: with tracked scales, the fraction of the smallest known face that
            the searches between whole-pyramid ones go down to, and the most seconds of video between
            whole-pyramid searches.
        buffer_pixels: at most this many pixels of full frames wait for their detection batch (memory flat in
            the video's length); the more, the more detection frames per MTCNN call.

    Raises:
        MediaError: unreadable file, no video stream, zero frames.
    """
    from affectfuse.faces.pipeline import default_detector
    from affectfuse.media.decode import FrameSampler, MediaError, iter_frame_images, probe

    info = probe(path)
    if not info.has_video:
        raise MediaError(path, "no video stream (audio-only file): no faces to find")
    detector = detector or default_detector()
    rate = fps or info.fps or 25.0
    pick_fps = detect_fps if detect_fps and detect_fps < rate * 0.95 else None  # None: every analysed frame
    stride = max(1, int(steady_stride)) if detect_fps else 1  # no detect_fps: every frame detected (reference)
    step = 1.0 / (pick_fps or rate)  # s between picked frames
    specs = crop_specs(crops)
    tracked_scales = bool(detect_max_side) if tracked_scales is None else tracked_scales
    state = _Pass(detector, specs, detect_max_side, 1.5 * stride * step if pick_fps or stride > 1 else 0.0,
                  _detection_batch(info, stride * step * rate, detect_max_side, batch_size, detector, buffer_pixels),
                  timer, tracked_scales, steady_iou, tracked_smallest, full_search_s)
    sampler = FrameSampler(pick_fps)
    numbers, times, picked = [], [], 0
    try:
        frames = iter_frame_images(path, fps=fps)  # one frame at a time: no batch copy, a frame waits alone
        while True:
            with state.stage("decode"):
                decoded = next(frames, None)
            if decoded is None:
                break
            num, t, image, _ = decoded
            keep = sampler.keep(t)
            state.push(_Frame(len(numbers), t, image, keep and picked % stride == 0,
                              optional=keep and picked % stride != 0))
            picked += keep
            numbers.append(num)
            times.append(t)
            if progress is not None and len(numbers) % PROGRESS_EVERY == 0:
                progress(t, float(info.duration_s or t))
        if progress is not None and numbers:
            progress(times[-1], float(info.duration_s or times[-1]))
        state.finish()
        yield from _main_person(state, np.asarray(numbers, np.int64), np.asarray(times, np.float64), specs,
                                batch_size, stitch_gap_s, str(path))
    finally:
        state.rows.close()


def _main_person(state: _Pass, numbers: np.ndarray, times: np.ndarray, specs, batch_size: int,
                 stitch_gap_s: float, source: str) -> Iterator:
    """Pick the main person's row of every frame and yield :class:`FaceBatch` es in frame order."""
    from affectfuse.faces.pipeline import FaceBatch

    rows = state.rows
    chain = stitch_tracks(state.tracker.stats, stitch_gap_s=stitch_gap_s)
    main = select_main_track(merge_stats(state.tracker.stats, chain))
    row_of = np.full(len(numbers), -1, np.int64)
    for r in range(len(rows.frame) - 1, -1, -1):  # backwards, so the first valid row of a frame wins
        if main is not None and chain[rows.a[r]] == main and chain[rows.b[r]] == main:
            row_of[rows.frame[r]] = r
    marks = np.asarray(rows.marks, np.float32).reshape(-1, 5, 2)
    boxes = np.asarray(rows.boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(rows.scores, np.float32)
    stored = {s: rows.spills[s].reader() for s in specs}
    for lo in range(0, len(numbers), batch_size):
        sel = row_of[lo:lo + batch_size]
        ok = sel >= 0
        n, picked = len(sel), sel[ok]
        lm = np.full((n, 5, 2), np.nan, np.float32)
        bx = np.full((n, 4), np.nan, np.float32)
        sc = np.zeros(n, np.float32)
        lm[ok], bx[ok], sc[ok] = marks[picked], boxes[picked], scores[picked]
        cut = {}
        for s in specs:
            if ok.all():  # one copy out of the spill, not zeros then a scatter
                cut[s] = stored[s][picked]
                continue
            cut[s] = np.zeros((n, s.size, s.size, 3), np.uint8)
            cut[s][ok] = stored[s][picked]
        yield FaceBatch(numbers[lo:lo + batch_size], times[lo:lo + batch_size], ok,
                        np.where(ok, main if main is not None else -1, -1).astype(np.int64), bx, lm, sc, cut, source)
