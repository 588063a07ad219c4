"""The per-video work unit of extraction: one decoding pass over a video for a :class:`DecodePlan` (audio
windows per audio extractor, the face crops the face extractors declare), in this process or in worker
processes (:func:`iter_decoded`); :mod:`affectfuse.features.pipeline` batches the results across videos.

Faces of a video (``keep="main"``) come from :func:`affectfuse.faces.sparse.iter_faces_sparse`: one decoding
pass, detection at ``detect_fps`` frames/s on copies downscaled to ``detect_max_side``, landmarks
interpolated in between -- ``predict``'s path, so both cut the same crops. ``keep="all"`` detects every
sampled frame (:func:`affectfuse.faces.iter_faces`, at ``detect_max_side``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from affectfuse.faces.crop_cache import CropCache
from affectfuse.faces.sparse import DETECT_FPS, DETECT_MAX_SIDE, map_crops
from affectfuse.features.base import Extractor
from affectfuse.features.inputs import MediaItem, is_still_input
from affectfuse.features.windows import audio_windows


@dataclass(frozen=True)
class AudioPlan:
    sample_rate: int
    window_s: float
    hop_s: float
    min_samples: int = 1


@dataclass(frozen=True)
class DecodePlan:
    """What one decoding pass must produce (picklable; sent to worker processes)."""

    audio: dict[str, AudioPlan] = field(default_factory=dict)  # audio extractor name -> windows
    faces: tuple = ()  # the CropSpecs the face extractors' plans declare (affectfuse.faces.plan); empty = no face pass
    fps: float | None = 5.0
    batch_size: int = 32
    keep: str = "main"
    frame_rate: float = 30.0  # frame folders: timestamps (k - 1) / frame_rate (s); images carry no clock
    strict: bool = False  # a file read short of its declared duration fails instead of a warning
    crop_cache: str | None = None  # photos: face-crop cache folder shared with finetune (None: no cache)
    detect_fps: float | None = DETECT_FPS  # videos: detections per second (None: every sampled frame)
    detect_max_side: int | None = DETECT_MAX_SIDE  # videos: longer side of the detection copy (None: full size)


@dataclass
class DecodedVideo:
    """Everything the extractors need from one video.

    ``audio[name] = (starts (T,) s, T windows)``; faces: ``frame_numbers (F,)``, ``timestamps (F,)`` s,
    ``found (F,)`` bool and ``crops[CropSpec] = (n_found, S, S, 3) uint8`` for the found rows (a
    :class:`Spooled` file instead when decoded with a spool folder, until :func:`unspooled`).
    ``errors[name]`` holds why an extractor failed on this video (unreadable file ...); ``skips[name]`` why
    it does not apply ("no audio", "no video": a skip, not a failure); ``warnings``
    says when decoding read less than the container declares (:class:`affectfuse.media.coverage.Coverage`).
    ``cpu_s`` is the CPU time (user + sys, s) the decoding took in the process ``pid`` that did it.
    """

    item: MediaItem
    audio: dict[str, tuple[np.ndarray, list[np.ndarray]]] = field(default_factory=dict)
    timestamps: np.ndarray | None = None
    found: np.ndarray | None = None
    crops: dict = field(default_factory=dict)  # CropSpec -> (n_found, S, S, 3) uint8
    errors: dict[str, str] = field(default_factory=dict)
    face_error: str | None = None
    warnings: list[str] = field(default_factory=list)
    skips: dict[str, str] = field(default_factory=dict)
    face_skip: str | None = None
    cpu_s: float = 0.0
    pid: int = 0


def decode_video(item: MediaItem, plan: DecodePlan, detector=None, spool: str | None = None) -> DecodedVideo:
    """One decoding pass over ``item`` for ``plan``; per-stream errors are recorded, not raised.

    ``spool``: a folder where the face crops are written batch by batch (:class:`CropSink`) instead of held in
    memory; ``out.crops`` then holds :class:`Spooled` files for :func:`unspooled` (what worker processes do).
    """
    from affectfuse.media import MediaError, probe, read_audio

    out = DecodedVideo(item)
    if is_still_input(Path(item.path)):  # an image or a frame folder: faces only
        out.skips = {name: "no audio (image input)" for name in plan.audio}
        return _faces_into(out, plan, detector, spool)
    try:
        info = probe(item.path)
    except MediaError as exc:
        out.face_error = str(exc)
        out.errors = {name: str(exc) for name in plan.audio}
        return out
    rates = sorted({p.sample_rate for p in plan.audio.values()})
    audio_s = None  # seconds of audio decoded
    for rate in rates:  # audio decoded once per sample rate (normally one)
        names = [n for n, p in plan.audio.items() if p.sample_rate == rate]
        try:
            audio = read_audio(item.path, sample_rate=rate) if info.has_audio else None
        except MediaError as exc:
            out.errors.update({n: str(exc) for n in names})
            continue
        if audio is not None and audio_s is None:
            audio_s = len(audio) / rate
        for name in names:
            p = plan.audio[name]
            if audio is None:
                out.skips[name] = "no audio (the file has no audio track)"
                continue
            starts, chunks = audio_windows(audio, rate, p.window_s, p.hop_s, p.min_samples)
            if not chunks:
                out.errors[name] = (f"{item.path}: audio of {len(audio) / rate:.3f} s is shorter than "
                                    f"{p.min_samples} samples, the least '{name}' can analyse")
                continue
            out.audio[name] = (starts, chunks)
    if plan.faces and not info.has_video:
        out.face_skip = "no video (audio-only file)"
        return _check_coverage(out, info, plan, audio_s)
    return _check_coverage(_faces_into(out, plan, detector, spool), info, plan, audio_s)


def _check_coverage(out: DecodedVideo, info, plan: DecodePlan, audio_s: float | None) -> DecodedVideo:
    """Decoded extent vs the container's duration: ``out.warnings``; with ``plan.strict`` an error for every
    extractor instead (a truncated file is then not extracted in part)."""
    from affectfuse.media.coverage import Coverage

    video_s = None
    if out.timestamps is not None and len(out.timestamps):
        video_s = float(out.timestamps[-1]) + 1.0 / (plan.fps or info.fps or 25.0)
    out.warnings = Coverage(info.duration_s, video_s, None, None, audio_s).warnings()
    if out.warnings and plan.strict:
        msg = f"{out.item.path}: " + "; ".join(out.warnings) + " (--strict)"
        out.audio, out.errors = {}, {n: msg for n in plan.audio}
        out.face_error = msg if plan.faces else None
    return out


def _faces_into(out: DecodedVideo, plan: DecodePlan, detector, spool: str | None = None) -> DecodedVideo:
    """Add the face crops of ``out.item`` when the plan asks for any; a failure becomes ``face_error``."""
    from affectfuse.media import MediaError

    if plan.faces:
        path = out.item.path
        sinks, done = {spec: CropSink(spec.size, spool) for spec in plan.faces}, False
        try:
            _decode_faces(out.item, plan, detector, out, sinks)
            done = True
        except (MediaError, ValueError, RuntimeError) as exc:
            out.face_error = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
        finally:
            crops = {spec: sink.close() for spec, sink in sinks.items()}
            if not done:  # failed, or an unexpected error on its way up: no one will map these files
                for value in crops.values():
                    _discard(value)
        if done:
            out.crops = crops
    return out


def _decode_faces(item: MediaItem, plan: DecodePlan, detector, out: DecodedVideo, sinks: dict) -> None:
    """Detect + track, then cut every declared crop (:func:`affectfuse.faces.plan.crop_faces`), one decoding pass.

    Videos: the main person by :func:`affectfuse.faces.sparse.iter_faces_sparse` (``keep="all"``: every face of
    every sampled frame by :func:`affectfuse.faces.iter_faces`). Images and frame folders go through
    :func:`affectfuse.faces.iter_face_images` (every image; a numbered folder's crops are taken as aligned,
    frame numbers from the names)."""
    from affectfuse.faces import iter_face_images, iter_faces
    from affectfuse.faces.sparse import iter_faces_sparse

    if is_still_input(Path(item.path)):
        batches = iter_face_images(item.path, crops=plan.faces, batch_size=plan.batch_size, keep=plan.keep,
                                   detector=detector, fps=plan.frame_rate,
                                   crop_cache=CropCache(plan.crop_cache) if plan.crop_cache else None)
    elif plan.keep == "main":
        batches = iter_faces_sparse(item.path, detector, fps=plan.fps, crops=plan.faces, batch_size=plan.batch_size,
                                    detect_max_side=plan.detect_max_side, detect_fps=plan.detect_fps)
    else:
        batches = iter_faces(item.path, fps=plan.fps, crops=plan.faces, batch_size=plan.batch_size, keep=plan.keep,
                             detector=detector, detect_max_side=plan.detect_max_side)
    times, found = [], []
    for batch in batches:
        times.append(batch.timestamps)
        found.append(batch.found)
        for spec in plan.faces:  # only faces go to the networks (no copy when every frame has one)
            sinks[spec].add(batch.crops[spec] if batch.found.all() else batch.crops[spec][batch.found])
    out.timestamps = np.concatenate(times) if times else np.zeros(0)
    out.found = np.concatenate(found) if found else np.zeros(0, bool)
    if len(out.found) == 0:
        raise ValueError("no frames decoded")


def _safe_decode(item: MediaItem, plan: DecodePlan, detector=None, spool: str | None = None) -> DecodedVideo:
    """:func:`decode_video` that records failures instead of raising."""
    start = time.process_time()
    try:
        out = decode_video(item, plan, detector, spool)
    except Exception as exc:  # an unexpected decoder failure must not stop the other videos
        msg = f"{item.path}: {type(exc).__name__}: {exc}"
        out = DecodedVideo(item, errors={n: msg for n in plan.audio}, face_error=msg if plan.faces else None)
    out.cpu_s, out.pid = time.process_time() - start, os.getpid()
    return out


@dataclass(frozen=True)
class Spooled:
    """Crops in a file: ``rows`` x (size, size, 3) uint8, raw, for the receiving process to map and delete."""

    path: str
    rows: int
    size: int


class CropSink:
    """One crop size's (n, S, S, 3) uint8 crops of a video, batch by batch: in memory, or with ``folder`` appended
    to a file there, so a worker does not hold a video's crops in its heap (peak RSS 914 MB for a 5-min clip at
    every frame, 762 for a 20-s one) and the crops reach the main process without the result pipe (through it,
    17.8 MB of crops -- a 20-s clip at 112 px -- cost the worker a 9-ms pickling and a wait until the main
    process had read the pipe, 89 ms wall per result, and the main process 21 ms CPU; measured with a plain
    array). A folder where no file can be made means memory; a write that fails (a full disk) fails the video's
    faces with the file and the cause.
    """

    def __init__(self, size: int, folder: str | None = None):
        self.size, self.parts, self.rows, self.file, self.path = size, [], 0, None, None
        if folder is not None:
            with contextlib.suppress(OSError):
                fd, self.path = tempfile.mkstemp(suffix=".crops", dir=folder)
                self.file = os.fdopen(fd, "wb")

    def add(self, crops: np.ndarray) -> None:
        if self.file is None:
            self.parts.append(np.asarray(crops, np.uint8))
            return
        try:
            self.file.write(np.ascontiguousarray(crops, np.uint8).data)
        except OSError as exc:
            raise RuntimeError(f"cannot write face crops to {self.path} ({exc}); set TMPDIR to a folder with "
                               "room") from exc
        self.rows += len(crops)

    def close(self):
        """The crops: a :class:`Spooled` file (a file cut short by a failed flush is caught by
        :func:`unspooled`), or an (n, S, S, 3) array."""
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
            return Spooled(self.path, self.rows, self.size)
        return np.concatenate(self.parts) if self.parts else np.zeros((0, self.size, self.size, 3), np.uint8)


def _discard(crops) -> None:
    if isinstance(crops, Spooled):
        with contextlib.suppress(OSError):
            os.unlink(crops.path)


def unspooled(video: DecodedVideo) -> DecodedVideo:
    """``video`` with its :class:`Spooled` crops mapped from their files (read-only), the files deleted."""
    for spec, value in video.crops.items():
        if isinstance(value, Spooled):
            try:
                video.crops[spec] = map_crops(value.path, value.rows, value.size)
            except (OSError, ValueError) as exc:
                video.face_error = f"{video.item.path}: decoded crops lost in transfer: {exc}"
            finally:
                _discard(value)
    if video.face_error is not None:
        video.crops = {}
    return video


# a decoding process costs ~2 CPU-s to start with bytecode compiled (~4 without; torch above all): one repaid it from
# 6 twenty-second clips and not from 4 (docs/benchmarks.md); 8 keeps a margin for shorter clips
VIDEOS_PER_WORKER = 8
WORKER_MEMORY = 1 << 30  # bytes a decoding process may need (peak RSS 0.8 GB measured, torch's libraries included)


def auto_workers(videos: int, cores: int | None = None, memory: int | None = None) -> int:
    """Decoding processes for ``videos`` inputs (``extract``'s default): one per core beside this process's,
    at most one per :data:`VIDEOS_PER_WORKER` inputs and one per :data:`WORKER_MEMORY` of available memory
    (``memory`` bytes; default: what the OS reports, no limit when it reports nothing). This process decodes
    too: :func:`iter_decoded`."""
    from affectfuse.utils import available_memory, usable_cores

    cores = usable_cores() if cores is None else cores
    memory = available_memory() if memory is None else memory
    by_memory = cores if memory is None else int(memory // WORKER_MEMORY)
    return max(0, min(cores - 1, videos // VIDEOS_PER_WORKER, by_memory))


def _worker_init() -> None:
    from affectfuse.utils import fewer_gc_passes, intra_op_threads

    fewer_gc_passes()  # before importing torch
    import torch

    torch.set_num_threads(intra_op_threads())  # as the main process (extract): the same boxes in every process


def iter_decoded(jobs: Iterable[tuple[MediaItem, DecodePlan]], workers: int = 0, detector=None,
                 share: bool = True) -> Iterator[DecodedVideo]:
    """Decode videos in this process (``workers=0``, in order) or in ``workers`` processes, each with two videos
    queued behind the one it decodes (one was too few: a worker sat idle for ~0.5 s after every other video
    while this process decoded one itself), and at most ``6 * workers`` decoded videos waiting (memory stays
    bounded however many videos there are).

    ``share``: whenever no worker's video is ready, this process decodes the next video itself instead of
    waiting, so decoding and the consumer's own work (the networks) keep ``workers + 1`` cores busy whichever
    of the two is the larger (docs/benchmarks.md, "Extraction on every core"); videos then come in the order
    they are done. Without it, this process only waits, and videos come in the order given.

    Workers write their crops to files in a temporary folder as they cut them (:class:`CropSink`; mapped
    read-only here, each file deleted once mapped, the folder removed at the end).
    """
    if workers <= 0:
        for item, plan in jobs:
            yield _safe_decode(item, plan, detector)
        return
    import multiprocessing

    jobs, pending = iter(jobs), []  # pending: (item, plan, future) in the order submitted
    with tempfile.TemporaryDirectory(prefix="affectfuse_decoded_") as spool, \
            ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                initializer=_worker_init) as pool:
        while True:
            # a finished video waiting for this process must not leave a worker without work
            while (sum(not p[2].done() for p in pending) < 3 * workers and len(pending) < 6 * workers
                   and (job := next(jobs, None)) is not None):
                pending.append((*job, pool.submit(_safe_decode, *job, None, spool)))
            if not pending:
                return
            if share and not any(p[2].done() for p in pending) and (job := next(jobs, None)) is not None:
                yield _safe_decode(*job, detector)  # nothing ready: decode here rather than wait
                continue
            if share:
                wait([p[2] for p in pending], return_when=FIRST_COMPLETED)
            done = next(p for p in pending if p[2].done()) if share else pending[0]
            pending.remove(done)
            yield _result(*done)


def _result(item: MediaItem, plan: DecodePlan, future) -> DecodedVideo:
    try:
        return unspooled(future.result())
    except Exception as exc:  # the worker process died (out of memory, segfault in a decoder ...)
        msg = f"{item.path}: worker failed: {type(exc).__name__}: {exc}"
        return DecodedVideo(item, errors={n: msg for n in plan.audio}, face_error=msg if plan.faces else None)


def decode_plan(by_name: dict[str, Extractor], missing: Sequence[str], fps: float | None = 5.0,
                batch_size: int = 32, keep: str = "main", frame_rate: float = 30.0, strict: bool = False,
                crop_cache: str | None = None, detect_fps: float | None = DETECT_FPS,
                detect_max_side: int | None = DETECT_MAX_SIDE) -> DecodePlan:
    """The :class:`DecodePlan` serving the extractors named ``missing`` (audio windows, the face crops they declare)."""
    from affectfuse.faces.plan import crop_specs

    audio = {n: AudioPlan(by_name[n].input.sample_rate, by_name[n].input.window_s, by_name[n].input.hop_s,
                          int(getattr(by_name[n], "min_window_samples", 1)))
             for n in missing if by_name[n].modality == "audio"}
    faces = crop_specs(by_name[n].input for n in missing if by_name[n].modality == "face")
    return DecodePlan(audio, faces, fps, batch_size, keep, frame_rate, strict, crop_cache, detect_fps,
                      detect_max_side)
