"""The extraction engine: many videos x many extractors -> one feature set per extractor, resumable.

Per video, ONE decoding pass (:func:`decode_video`, the per-video work unit, picklable in and out):
the audio is decoded once per sample rate asked for and cut into each audio extractor's windows; faces are
detected (at ``detect_fps``, on downscaled copies), tracked and aligned once (:mod:`affectfuse.features.decoding`,
:func:`affectfuse.faces.sparse.iter_faces_sparse`), with one crop per distinct crop the
face extractors' plans declare (:mod:`affectfuse.faces.plan`; ``predict`` cuts the same ones). The engine
(:class:`BatchRunner`) then fills each extractor's batches across videos,
scatters the rows back and writes a video's file as soon as all its rows are in.

Rows written per video (``affectfuse.data.store.VideoFeatures``):
- audio extractors: one row per window, ``timestamps`` = window start (s), ``mask`` all True;
- face extractors: one row per sampled frame, ``timestamps`` = frame time (s), ``mask`` = face found
  (rows without a face are zeros and are never fed to the network). A still image is one frame at 0 s;
  a frame folder (Aff-Wild2 ``cropped_aligned/<video>/``) gives a row for every frame number up to the
  last image, at ``(k - 1) / frame_rate``, with ``mask`` False where the image is missing.

Failures never stop the run; they are collected per (video, extractor) and written to
``<out>/failures.csv``. An extractor that cannot apply to an input is *skipped*, not failed: audio
extractors on a photo, a frame folder or a video without an audio track ("no audio"), face extractors on
an audio-only file ("no video"); skips are listed in ``<out>/skipped.csv`` and leave the exit code 0. Finished files are written atomically; a resumed run skips
every (video, extractor) pair whose finished file holds that video. An error of the output itself (disk
full, read-only folder: any ``OSError`` while writing a feature file) stops the run: it is not the video's
fault and would fail every other one; the files already written stay.

Concurrent runs into one ``out`` share the work through claim files (:mod:`affectfuse.data.claims`): a
video claimed by a live run is left to it (reported as ``busy``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from affectfuse.data.claims import Claims
from affectfuse.data.store import FeatureSet, FeatureSetMeta, VideoFeatures, store_key
from affectfuse.faces.sparse import DETECT_FPS, DETECT_MAX_SIDE
from affectfuse.features.base import Extractor
from affectfuse.features.decoding import (  # noqa: F401  (the work unit's names, re-exported)
    AudioPlan, DecodedVideo, DecodePlan, _safe_decode, auto_workers, decode_plan, decode_video, iter_decoded)
from affectfuse.features.inputs import MediaItem, check_unique_ids, find_inputs, is_still_input
from affectfuse.utils import FailureLog, intra_op_threads, torch_threads

log = logging.getLogger(__name__)

FAILURES_FILE = "failures.csv"
SKIPPED_FILE = "skipped.csv"  # (input, extractor) pairs an extractor does not apply to: no audio, no video


# --------------------------------------------------------------------------------------------------
# Batching across videos
# --------------------------------------------------------------------------------------------------

class _OutputFailed(Exception):
    """Carries an ``OSError`` of the output through the per-video error isolation (see :func:`extract`)."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


@dataclass
class _Slot:
    """One (video, extractor) output being filled: values (T, D), timestamps (T,), mask (T,)."""

    item: MediaItem
    values: np.ndarray
    timestamps: np.ndarray
    mask: np.ndarray
    rows: np.ndarray  # (n_inputs,) row index of each input
    filled: int = 0
    failed: bool = False


class BatchRunner:
    """Feeds each extractor full batches drawn from many videos and writes each video when complete.

    ``add(video)`` queues a decoded video's inputs; full batches run at once, ``flush()`` runs the rest.
    A batch that raises is re-run video by video so that only the culprit fails.
    """

    def __init__(self, extractors: Sequence[Extractor], sets: dict[str, FeatureSet], failures: FailureLog,
                 batch_size: int = 32, on_video_done=None):
        self.extractors = {e.name: e for e in extractors}
        self.sets, self.failures, self.batch_size = sets, failures, max(1, int(batch_size))
        self.queue: dict[str, list[tuple[_Slot, int, np.ndarray]]] = {n: [] for n in self.extractors}
        self.open: dict[str, int] = {}  # video id -> slots not yet written or failed
        self.on_video_done = on_video_done
        self.written: dict[str, list[str]] = {n: [] for n in self.extractors}
        self.calls: dict[str, int] = {n: 0 for n in self.extractors}
        self.not_applicable: list[tuple[str, str, str]] = []  # (id, extractor, why): skips, not failures

    def add(self, video: DecodedVideo, names: Sequence[str]) -> None:
        vid = video.item.id
        self.open[vid] = self.open.get(vid, 0) + len(names)
        for name in names:
            ext = self.extractors[name]
            why = video.skips.get(name) if ext.modality == "audio" else video.face_skip
            if why:  # the extractor does not apply to this input (audio extractor on a photo ...)
                self.not_applicable.append((vid, name, why))
                self._slot_done(video.item)
                continue
            if ext.modality == "audio":
                slot, inputs = self._audio_slot(video, name)
            else:
                slot, inputs = self._face_slot(video, ext)
            if slot is None:
                self._fail(video.item, name, inputs)
                continue
            if len(inputs) == 0:
                self._write(name, slot)
                continue
            self.queue[name].extend((slot, k, x) for k, x in enumerate(inputs))
            while len(self.queue[name]) >= self.batch_size:
                self._run(name, self.batch_size)

    def _audio_slot(self, video: DecodedVideo, name: str):
        if name not in video.audio:
            return None, video.errors.get(name, f"{video.item.path}: no audio windows")
        starts, chunks = video.audio[name]
        dim = self.extractors[name].dim
        slot = _Slot(video.item, np.zeros((len(chunks), dim), np.float32), starts, np.ones(len(chunks), bool),
                     np.arange(len(chunks)))
        return slot, chunks

    def _face_slot(self, video: DecodedVideo, ext: Extractor):
        if video.face_error is not None or video.found is None:
            return None, video.face_error or f"{video.item.path}: faces were not decoded"
        crops = video.crops[ext.input.crop]
        slot = _Slot(video.item, np.zeros((len(video.found), ext.dim), np.float32), video.timestamps,
                     video.found.copy(), np.flatnonzero(video.found))
        return slot, list(crops)

    def _run(self, name: str, n: int) -> None:
        batch, self.queue[name] = self.queue[name][:n], self.queue[name][n:]
        batch = [b for b in batch if not b[0].failed]
        if not batch:
            return
        try:
            self._apply(name, batch)
        except _OutputFailed:
            raise
        except Exception as exc:
            if len({id(b[0]) for b in batch}) == 1:
                self._fail(batch[0][0].item, name, f"{batch[0][0].item.path}: {type(exc).__name__}: {exc}",
                           batch[0][0])
                return
            for slot in {id(b[0]): b[0] for b in batch}.values():  # isolate the culprit
                part = [b for b in batch if b[0] is slot]
                try:
                    self._apply(name, part)
                except _OutputFailed:
                    raise
                except Exception as exc2:
                    self._fail(slot.item, name, f"{slot.item.path}: {type(exc2).__name__}: {exc2}", slot)

    def _apply(self, name: str, batch: list) -> None:
        inputs = [x for _, _, x in batch]
        if len({np.shape(x) for x in inputs}) == 1:
            inputs = np.stack(inputs)
        self.calls[name] += 1
        out = self.extractors[name](inputs)  # (n, D)
        for (slot, k, _), row in zip(batch, out):
            slot.values[slot.rows[k]] = row
            slot.filled += 1
            if slot.filled == len(slot.rows):
                self._write(name, slot)

    def _write(self, name: str, slot: _Slot) -> None:
        try:
            self.sets[name].write(VideoFeatures(slot.item.id, slot.values, slot.timestamps, slot.mask))
        except OSError as exc:  # the output cannot take the file (disk full, read-only): stop, not the video's fault
            raise _OutputFailed(exc) from exc
        except Exception as exc:
            self._fail(slot.item, name, f"{slot.item.path}: writing features failed: {exc}", slot)
            return
        self.written[name].append(slot.item.id)
        self._slot_done(slot.item)

    def _fail(self, item: MediaItem, name: str, message: str, slot: _Slot | None = None) -> None:
        if slot is not None:
            if slot.failed:
                return
            slot.failed = True
        self.failures.add(f"{item.id} [{name}]", f"{message}" if str(item.path) in message else
                          f"{item.path}: {message}")
        self._slot_done(item)

    def _slot_done(self, item: MediaItem) -> None:
        self.open[item.id] -= 1
        if self.open[item.id] == 0:
            del self.open[item.id]
            if self.on_video_done is not None:
                self.on_video_done(item)

    def flush(self) -> None:
        for name in self.queue:
            while self.queue[name]:
                self._run(name, self.batch_size)


# --------------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------------

@dataclass
class ExtractReport:
    """What a run did: ids written per extractor, ids skipped as already done, failures, batch calls,
    and ids left to another run that had claimed them (``busy``)."""

    out_root: Path
    written: dict[str, list[str]]
    skipped: list[str]
    failures: list[tuple[str, str]]
    calls: dict[str, int]
    busy: list[str] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (id [media], "warning: partial media ...")
    not_applicable: list[tuple[str, str, str]] = field(default_factory=list)  # (id, extractor, "no audio ...")

    @property
    def ok(self) -> bool:
        return not self.failures


def feature_meta(ext: Extractor, fps: float | None = None) -> FeatureSetMeta:
    """``meta.json`` of an extractor's feature set, from ``extractor.describe()``."""
    d = dict(ext.describe())
    rate = d.pop("rate", None)
    if ext.modality == "face" and fps:
        rate = float(fps)
    base = {k: d.pop(k, None) for k in ("extractor", "modality", "dim", "weights", "random_weights")}
    return FeatureSetMeta(name=ext.name, dim=int(ext.dim), rate=rate, extractor=base["extractor"] or ext.name,
                          weights=base["weights"], random_weights=bool(base["random_weights"]),
                          modality=base["modality"] or ext.modality, extra=d)


def extract(inputs: Sequence[MediaItem] | str | os.PathLike, extractors: Sequence[Extractor],
            out_root: str | os.PathLike, fps: float | None = 5.0, batch_size: int = 32, workers: int | None = None,
            keep: str = "main", detector=None, progress: bool = True, frame_rate: float = 30.0,
            strict: bool = False, crop_cache: str | os.PathLike | None = None,
            detect_fps: float | None = DETECT_FPS, detect_max_side: int | None = DETECT_MAX_SIDE) -> ExtractReport:
    """Extract every extractor's features from every input into ``out_root/<extractor>/``.

    Args:
        inputs: :class:`MediaItem` s, or a folder / media file / CSV for :func:`find_inputs`.
        extractors: built extractors (``affectfuse.features.create_extractor``); names must be unique.
        out_root: one feature set per extractor is written to ``out_root/<extractor.name>``; failures to
            ``out_root/failures.csv`` (rewritten by every run: a resumed run retries earlier failures).
        fps: face frames sampled per second (``None``: every frame).
        batch_size: inputs per extractor call (filled across videos).
        workers: decoding processes beside this one, which decodes too whenever no worker's video is ready
            (:func:`iter_decoded`); 0: decode here only; ``None``: :func:`auto_workers` (one per other core, at
            most one per 8 inputs to do and one per GB of available memory). Every process runs detection and networks on
            :func:`~affectfuse.utils.intra_op_threads` threads (``$AFFECTFUSE_THREADS``, default 1; restored
            after), so the features do not depend on the number of workers (MTCNN's boxes, hence the crops,
            move with the thread count: up to 7e-3 in FaceExpressionNet's outputs between 1 and 2 threads).
        keep: ``"main"`` face per frame (see :func:`affectfuse.faces.iter_faces`).
        detector: face detector to use in this process (workers build the default one).
        frame_rate: frames per second of frame folders (``cropped_aligned/<video>/``), for their
            timestamps only; every image of a folder is used.
        strict: a file read short of the duration its container declares fails (every extractor) instead
            of being extracted in part with a ``warning: partial media ...`` row in ``failures.csv``
            (warnings leave ``report.ok`` True).
        crop_cache: folder of the face-crop cache shared with ``affectfuse finetune``
            (:mod:`affectfuse.faces.crop_cache`): photos whose crops are cached are not detected again,
            new crops are added. None: no cache.
        detect_fps: videos: faces are detected at this many frames/s, on copies downscaled to
            ``detect_max_side`` pixels (longer side), and interpolated in between
            (:mod:`affectfuse.faces.sparse`; docs/benchmarks.md measures the defaults). ``None`` (or a rate
            at or above ``fps``): every sampled frame; ``detect_max_side=None``: full size.
    """
    from tqdm.auto import tqdm

    items = list(inputs) if not isinstance(inputs, (str, os.PathLike)) else find_inputs(inputs)
    check_unique_ids(items, "inputs")
    names = [e.name for e in extractors]
    if len(set(names)) != len(names):
        raise ValueError(f"extractor names must be unique, got {names}")
    out_root = Path(out_root)
    sets = {e.name: FeatureSet.create(out_root / e.name, feature_meta(e, fps)) for e in extractors}
    failures = FailureLog(out_root / FAILURES_FILE)
    if (out_root / FAILURES_FILE).exists():
        (out_root / FAILURES_FILE).unlink()
    bar = tqdm(total=len(items), unit="video", disable=not progress, desc="extract")
    claims = Claims(out_root)

    def done(item: MediaItem) -> None:
        claims.release(store_key(item.id))
        bar.update(1)

    runner = BatchRunner(extractors, sets, failures, batch_size, on_video_done=done)
    by_name = {e.name: e for e in extractors}
    skipped, busy, missing_of = [], [], {}

    def todo_of(item: MediaItem) -> list[str]:
        """The extractors that apply to ``item``: audio ones never do to photos and frame folders."""
        still = is_still_input(Path(item.path))
        return [n for n in names if not (still and by_name[n].modality == "audio")]

    todo = {item.id: todo_of(item) for item in items}
    unfinished = {item.id for item in items if not all(item.id in sets[n] for n in todo[item.id])}

    def jobs() -> Iterator[tuple[MediaItem, DecodePlan]]:
        """Claim each unfinished video, re-check what it lacks (another run may have written it), plan it.
        Extractors that do not apply (:func:`todo_of`) are listed as skipped, never decoded for."""
        for item in items:
            runner.not_applicable += [(item.id, n, "no audio (image input)") for n in names if n not in todo[item.id]]
            if item.id not in unfinished:
                skipped.append(item.id)
            elif not claims.take(store_key(item.id)):
                busy.append(item.id)
            elif not (missing := [n for n in todo[item.id] if item.id not in sets[n]]):
                claims.release(store_key(item.id))
                skipped.append(item.id)
            else:
                missing_of[item.id] = missing
                yield item, decode_plan(by_name, missing, fps, batch_size, keep, frame_rate, strict,
                                        str(crop_cache) if crop_cache else None, detect_fps, detect_max_side)
                continue
            bar.update(1)

    if workers is None:
        workers = auto_workers(len(unfinished))
    warnings = []
    try:
        with torch_threads(intra_op_threads()):  # whatever the workers: MTCNN's boxes move with the thread count
            for video in iter_decoded(jobs(), workers, detector):
                warnings += [(f"{video.item.id} [media]", f"warning: {w}") for w in video.warnings]
                runner.add(video, missing_of[video.item.id])
            runner.flush()
    except _OutputFailed as failed:
        raise failed.error from None  # one line at the CLI: the file and the cause
    finally:
        claims.release_all()
        bar.close()
    for fs in sets.values():
        fs.write_index()
    failed = list(failures)
    for item, message in warnings:
        failures.add(item, message)
    _write_skipped(out_root / SKIPPED_FILE, runner.not_applicable)
    return ExtractReport(out_root, runner.written, skipped, failed, dict(runner.calls), busy, warnings,
                         runner.not_applicable)


def _write_skipped(path: Path, rows: list[tuple[str, str, str]]) -> None:
    """``skipped.csv`` (``item,extractor,reason``) of this run; removed when nothing was skipped."""
    import csv
    import io

    from affectfuse.utils import write_text_atomic

    if not rows:
        path.unlink(missing_ok=True)
        return
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["item", "extractor", "reason"])
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())
