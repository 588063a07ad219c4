"""Faces for ``predict``: detection at a lower frame rate, landmarks interpolated in between.

Detection (MTCNN over an image pyramid, then R-Net and O-Net on the candidates) is the costliest step of
``predict``. A talking face moves little in 1/8 s, so by default (``detect_fps=8``) detection runs on
frames sampled at 8 frames/s (:func:`affectfuse.faces.detect_video` with ``fps=8``, frames downscaled
to ``detect_max_side``), and the main person's 5 landmarks of the frames in between are linearly
interpolated from the two detected neighbours; a frame is "found" only when both neighbours found the
main face. ``detect_fps=None`` (or a rate at or above the analysed one) is the faces stage's own
``iter_faces`` (every frame detected).

The second pass decodes the frames at full size and cuts, from the original pixels, the crops the models'
face-preprocessing plans declare, with :func:`affectfuse.faces.plan.crop_faces` -- the crops ``affectfuse
extract`` cuts for the same extractors -- yielding :class:`affectfuse.faces.FaceBatch` es like ``iter_faces``.

Letters: N detected frames, B frames in a batch, S crop side.
"""

from __future__ import annotations

import os
from typing import Iterator, Sequence

import numpy as np


def main_track_rows(dets) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per detected frame: found (N,), landmarks (N, 5, 2), boxes (N, 4), scores (N,), times (N,)."""
    n = len(dets.frame_numbers)
    found = np.zeros(n, bool)
    marks = np.full((n, 5, 2), np.nan, np.float32)
    boxes = np.full((n, 4), np.nan, np.float32)
    scores = np.zeros(n, np.float32)
    for i in range(n):
        bx, sc, lm, ids = dets.frame(i)  # (F, 4), (F,), (F, 5, 2), (F,)
        hit = np.flatnonzero(ids == dets.main_track) if dets.main_track is not None else []
        if len(hit):
            k = int(hit[0])
            found[i], marks[i], boxes[i], scores[i] = True, lm[k], bx[k], sc[k]
    return found, marks, boxes, scores, np.asarray(dets.timestamps, np.float64)


def interpolate(t: float, times: np.ndarray, found: np.ndarray, values: np.ndarray, max_gap_s: float):
    """Value at time ``t`` from detected rows: exact hit, else linear between the two neighbours when both
    were found and lie at most ``max_gap_s`` apart; at either end the nearest row within ``max_gap_s / 2``.
    Returns None when not found."""
    j = int(np.searchsorted(times, t - 1e-6))
    if j < len(times) and abs(times[j] - t) <= 1e-6:
        return values[j] if found[j] else None
    lo, hi = j - 1, j
    if lo >= 0 and hi < len(times):
        if found[lo] and found[hi] and times[hi] - times[lo] <= max_gap_s:
            w = (t - times[lo]) / max(times[hi] - times[lo], 1e-9)
            return (1 - w) * values[lo] + w * values[hi]
        return None
    k = lo if lo >= 0 else hi
    if 0 <= k < len(times) and found[k] and abs(times[k] - t) <= max_gap_s / 2:
        return values[k]
    return None


def iter_faces_sparse(path: str | os.PathLike, detector, fps: float | None = None, crops: Sequence = (),
                      batch_size: int = 32, detect_max_side: int | None = 320, detect_fps: float | None = 8.0,
                      timer=None, progress=None) -> Iterator:
    """Like :func:`affectfuse.faces.iter_faces` with ``keep="main"``, detecting at ``detect_fps`` frames/s
    only (see the module doc). ``crops``: the models' FacePlans (or CropSpecs); ``batch.crops[plan.crop]``.
    ``timer`` (optional) times pass 1 as ``detect``, pass 2 as ``align``; ``progress(done_s, total_s)``
    (optional) is called during pass 1 (detection)."""
    import contextlib
    import time

    from affectfuse.faces import FaceBatch, detect_video, iter_faces
    from affectfuse.faces.plan import crop_faces, crop_specs
    from affectfuse.media import iter_frames, probe

    specs = crop_specs(crops)
    info = probe(path)
    rate = fps or info.fps or 25.0
    sparse = bool(detect_fps) and detect_fps < rate * 0.95
    ctx = timer("detect") if timer is not None else contextlib.nullcontext()
    with ctx:
        dets = detect_video(path, fps=detect_fps if sparse else fps, detector=detector, batch_size=batch_size,
                            detect_max_side=detect_max_side, progress=progress)
    if not sparse:
        frames = iter_faces(path, fps=fps, crops=specs, batch_size=batch_size, keep="main", detector=detector,
                            detections=dets)
        yield from _timed(frames, timer)
        return
    found, marks, boxes, scores, times = main_track_rows(dets)
    max_gap = 1.5 / detect_fps
    start = time.perf_counter()
    for batch in iter_frames(path, fps=fps, batch_size=batch_size):
        n = len(batch)
        ok = np.zeros(n, bool)
        lms = np.full((n, 5, 2), np.nan, np.float32)
        bxs = np.full((n, 4), np.nan, np.float32)
        scs = np.zeros(n, np.float32)
        cut = {s: np.zeros((n, s.size, s.size, 3), np.uint8) for s in specs}
        for i, (t, image) in enumerate(zip(batch.timestamps, batch.images)):
            lm = interpolate(float(t), times, found, marks, max_gap)
            if lm is None:
                continue
            ok[i], lms[i] = True, lm
            bxs[i] = interpolate(float(t), times, found, boxes, max_gap)
            scs[i] = interpolate(float(t), times, found, scores, max_gap)
            for s in specs:
                cut[s][i] = crop_faces(image, lm, s)[0]
        out = FaceBatch(np.asarray(batch.frame_numbers, np.int64), np.asarray(batch.timestamps, np.float64), ok,
                        np.where(ok, dets.main_track if dets.main_track is not None else -1, -1).astype(np.int64),
                        bxs, lms, scs, cut, str(path))
        if timer is not None:
            timer.add("align", time.perf_counter() - start)
        yield out
        start = time.perf_counter()
    if timer is not None:
        timer.add("align", time.perf_counter() - start)


def _timed(it, timer):
    import time

    it = iter(it)
    while True:
        start = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            if timer is not None:
                timer.add("align", time.perf_counter() - start)
            return
        if timer is not None:
            timer.add("align", time.perf_counter() - start)
        yield batch
