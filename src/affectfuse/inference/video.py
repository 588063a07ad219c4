"""One video -> per-frame expressions, voice windows, fused top emotion, ERI; report files on request.

:class:`VideoPredictor` loads every model once (:class:`PredictOptions` says which), then
:meth:`VideoPredictor.analyse` streams a video into a :class:`~affectfuse.inference.prediction.VideoPrediction`
(nothing written) and :meth:`VideoPredictor.predict` also saves its report files:

    faces    = iter_faces_sparse(video)          # batches: found (B,), crops {S: (B, S, S, 3)}
    probs    = face_model(crops[found])          # (F, 8) over labels.EXPR_CLASSES -> frame rows
    audio    = iter_audio(video, 16 kHz)         # 10 s chunks (S,), or none
    voice    = voice_model.stream(audio)         # (W, C) per window, silent windows NaN
    coverage = Coverage(duration, video read, audio read)   # a file read short -> warning (or --strict error)
    fused    = late_fusion(mean face, mean voice)
    eri      = eri_model(face features, audio)   # 7 intensities in [0, 1] (with --eri-checkpoint)
    files    = prediction.save(OUT/<stem>)       # expressions.csv, summary.json, timeline.png, report.html

Memory: the frame rows are kept (~49 bytes a frame, :mod:`affectfuse.inference.prediction`), the plot gets
a decimated series, audio is windowed as it streams. What else grows: (W, C) voice results, and with an
EXPR checkpoint (a temporal model) the (T, D) face features it needs whole; with ``--eri-checkpoint`` the
audio track, which the ERI model windows itself.

Letters: B frames in a batch, F frames with a face, T analysed frames, W voice windows, S crop side.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from affectfuse import __version__
from affectfuse.inference.confidence import describe_fusion, segments_with_voice
from affectfuse.inference.fusion import late_fusion, mean_probabilities, to_named, voice_window_weights
from affectfuse.labels import EXPR_CLASSES, EXPR_SCALE
from affectfuse.media.coverage import DEFAULT_TOLERANCE_S, Coverage

if TYPE_CHECKING:
    from affectfuse.inference.prediction import VideoPrediction

SAMPLE_CLIP = "assets/sample/sample_clip.mp4"


def sample_clip_path() -> Path:
    """The real talking-face clip shipped in the package (CREMA-D, see assets/sample/LICENSE.txt)."""
    return Path(str(resources.files("affectfuse").joinpath(SAMPLE_CLIP)))


class Timer:
    """Accumulates wall-clock seconds per named stage (``seconds``; what ``summary.json`` ``timings_s``
    shows) and the process's CPU seconds, user + sys, per stage (``cpu_seconds``: on a loaded machine
    wall time measures the queue, CPU time the work): ``with timer("detect"): ...``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start, time.process_time() - cpu)

    def add(self, stage: str, seconds: float, cpu_seconds: float | None = None) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
        if cpu_seconds is not None:
            self.cpu_seconds[stage] = self.cpu_seconds.get(stage, 0.0) + cpu_seconds

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.seconds.items()}


@dataclass
class PredictOptions:
    """What ``affectfuse predict`` runs (see ``cli/predict_video.py`` for the flags)."""

    fps: float | None = None
    batch_size: int = 32
    expr_checkpoint: str | None = None
    eri_checkpoint: str | None = None
    voice_head: str | None = "default"
    fusion_weights: tuple[float, float] | None = None  # None: fusion.FUSION_WEIGHTS (fitted on CREMA-D votes)
    detect_max_side: int | None = 320
    min_face_size: float = 20.0
    detect_fps: float | None = 8.0  # detect at this rate, interpolate landmarks in between (None: every frame)
    thumbnails: int = 6
    device: str = "cpu"
    precision: str = "fp32"  # face networks: fp32 | bf16 | auto (affectfuse.features.face_common)
    random_weights: bool = False  # tests only: networks without pretrained files (recorded in summary.json)
    strict: bool = False  # a file read short of its declared duration is an error, not a warning
    coverage_tolerance_s: float = DEFAULT_TOLERANCE_S


class _Thumbs:
    """Keeps up to ``k`` aligned crops spread over the video: the first face at or after each target time."""

    def __init__(self, k: int, duration_s: float):
        self.targets = [duration_s * (i + 0.5) / k for i in range(k)] if k > 0 else []
        self.items: list = []

    def offer(self, t: float, crop: np.ndarray, key) -> None:
        if self.targets and t >= self.targets[0] - 1e-9:
            self.items.append((float(t), key, np.array(crop)))
            while self.targets and t >= self.targets[0] - 1e-9:
                self.targets.pop(0)


class VideoPredictor:
    """Loads the models once; :meth:`predict` turns one video into the report files."""

    def __init__(self, options: PredictOptions | None = None):
        from affectfuse.inference.models import load_eri_model, load_face_model, load_voice_model

        self.options = options or PredictOptions()
        o = self.options
        self.face_model = load_face_model(o.expr_checkpoint, device=o.device, random_weights=o.random_weights,
                                          precision=o.precision)
        self.voice_model = load_voice_model(o.voice_head, device=o.device, random_weights=o.random_weights)
        self.eri_model = load_eri_model(o.eri_checkpoint, device=o.device, random_weights=o.random_weights,
                                        precision=o.precision)
        from affectfuse.faces import load_mtcnn

        self.detector = load_mtcnn(device=o.device, random_weights=o.random_weights,
                                   min_face_size=o.min_face_size)
        # the crops every face network declares (affectfuse.faces.plan): the ones `extract` cuts for it
        self.face_plans = (*self.face_model.face_plans, *(self.eri_model.face_plans if self.eri_model else ()))

    def models(self) -> list[dict]:
        det = self.detector
        out = [{"role": "face detection", "name": "mtcnn", "weights": det.weights_info,
                "random_weights": bool(det.weights_info.get("random_weights", False)),
                "min_face_size": det.min_face_size, "detect_max_side": self.options.detect_max_side,
                "detect_fps": self.options.detect_fps},
               self.face_model.describe()]
        out += [self.voice_model.describe()] if self.voice_model else []
        out += [self.eri_model.describe()] if self.eri_model else []
        return out

    def _faces(self, video: Path, timer: Timer, progress=None):
        """Face batches of the main person, one decoding pass (:mod:`affectfuse.faces.sparse`), timed as
        ``decode``, ``detect`` (downscale + MTCNN + tracking) and ``align`` (interpolation + crops)."""
        from affectfuse.inference.faces import iter_faces_sparse

        o = self.options
        return iter_faces_sparse(video, self.detector, fps=o.fps, crops=self.face_plans, batch_size=o.batch_size,
                                 detect_max_side=o.detect_max_side, detect_fps=o.detect_fps, timer=timer,
                                 progress=None if progress is None else lambda d, t: progress(d, t, "detect"))

    def analyse(self, video: str | Path, progress=None) -> "VideoPrediction":
        """Analyse ``video``; returns a :class:`~affectfuse.inference.prediction.VideoPrediction` (nothing is
        written: :meth:`VideoPrediction.save` writes the report files).

        ``progress``: called as ``progress(done_s, total_s, stage)`` (seconds of video; stage "detect" for
        the face-detection pass, then "analyse" for the expression pass) after each face batch.

        A file read more than ``options.coverage_tolerance_s`` short of its container's duration gets a
        line in ``summary["warnings"]``; with ``options.strict`` it raises :class:`MediaError` instead.

        Runs on :func:`~affectfuse.utils.intra_op_threads` torch threads (``$AFFECTFUSE_THREADS``, default 1;
        restored after), as ``extract`` does, so both cut the same crops."""
        from affectfuse.utils import intra_op_threads, torch_threads

        with torch_threads(intra_op_threads()):
            return self._analyse(Path(video), progress)

    def _analyse(self, video: Path, progress=None) -> "VideoPrediction":
        from affectfuse.inference.prediction import VideoPrediction
        from affectfuse.media import MediaError, probe

        timer = Timer()
        start = time.perf_counter()
        with timer("probe"):
            info = probe(video)
        if not info.has_video:
            raise MediaError(video, "no video stream (audio-only file); predict needs a video")
        faces = self._face_pass(video, info, timer, progress)
        voice, audio_s, eri = self._audio_pass(video, info, faces.eri_state, timer)
        step = 1.0 / (self.options.fps or info.fps or 25.0)
        coverage = Coverage(info.duration_s, faces.last_t + step if faces.n else 0.0, faces.last_frame,
                            info.n_frames if info.n_frames_exact else None, audio_s)
        warnings = coverage.warnings(self.options.coverage_tolerance_s)
        if warnings and self.options.strict:
            raise MediaError(video, "; ".join(warnings) + " (--strict)")
        summary = self._summary(video, info, faces, voice, eri, coverage, warnings)
        plot = faces.plot.series()  # (T',) s, (T',), (T', 8)
        summary["segments"] = segments_with_voice(plot[0], plot[1], np.nan_to_num(plot[2]), EXPR_CLASSES,
                                                  summary["voice"])
        timer.add("total_before_report", time.perf_counter() - start)
        summary["timings_s"] = timer.rounded()  # shown in report.html; summary.json adds "report"
        frames, times, found, probs = faces.arrays()
        return VideoPrediction(video, frames, times, found, probs, EXPR_CLASSES, summary, voice, plot,
                               faces.thumbnails(), timer)

    def predict(self, video: str | Path, out_dir: str | Path, extra: dict | None = None, progress=None) -> dict:
        """:meth:`analyse` ``video``, then write its report files into ``out_dir`` (nothing when the analysis
        fails); ``extra``: keys added to ``summary.json``. Returns the summary dict."""
        prediction = self.analyse(video, progress=progress)
        prediction.save(out_dir, extra=extra)
        return {**prediction.summary, "video_id": Path(out_dir).name, **(extra or {})}

    def _face_pass(self, video: Path, info, timer: Timer, progress=None) -> "_FacePass":
        """Faces -> expression rows, running mean, plot series, thumbnails, ERI faces."""
        fm = self.face_model
        acc = _FacePass(_Thumbs(self.options.thumbnails, max(info.duration_s, 1e-3)),
                        self.eri_model.start() if self.eri_model else None)
        held, offset = [], 0  # a temporal face model needs every frame's features: (frames, times, found, feats)
        for batch in self._faces(video, timer, progress):  # B frames
            ok = np.asarray(batch.found, dtype=bool)  # (B,)
            f = np.zeros((len(ok), fm.dim), np.float32)  # (B, D)
            if ok.any():
                with timer("face_model"):
                    f[ok] = fm.features({s: c[ok] for s, c in batch.crops.items()})  # (F, D)
                for i in np.flatnonzero(ok):
                    acc.thumbs.offer(batch.timestamps[i], batch.crops[min(batch.crops)][i], offset + int(i))
            if acc.eri_state is not None:
                with timer("eri_features"):
                    acc.eri_state.add_faces(batch)
            frames, times = np.asarray(batch.frame_numbers), np.asarray(batch.timestamps, dtype=float)
            offset += len(ok)
            if progress is not None and len(times):
                progress(float(times[-1]), float(info.duration_s or times[-1]), "analyse")
            if getattr(fm, "frame_wise", False):
                with timer("face_model"):
                    acc.add(frames, times, ok, fm.finish(f, ok))
            else:
                held.append((frames, times, ok, f))
        if held:
            frames, times, ok, f = (np.concatenate(x) for x in zip(*held))
            with timer("face_model"):
                probs = fm.finish(f, ok)  # (T, 8)
            acc.add(frames, times, ok, probs)
        return acc

    def _audio_pass(self, video: Path, info, eri_state, timer: Timer):
        """Audio streamed in 10 s chunks -> (voice result or None, seconds decoded or None, ERI dict or None)."""
        from affectfuse.media import iter_audio

        eri = None
        if not info.has_audio or not (self.voice_model or eri_state):
            return None, None, eri_state.finish(None) if eri_state is not None else None
        feed = _AudioFeed(iter_audio(video, 16000), timer, keep=eri_state is not None)
        voice = self.voice_model.stream(feed, timer) if self.voice_model else None
        feed.drain()
        if eri_state is not None:
            with timer("eri_model"):
                eri = eri_state.finish(feed.whole())
        return (voice if feed.samples else None), feed.samples / 16000.0, eri

    def _summary(self, video: Path, info, faces: "_FacePass", voice, eri, coverage, warnings) -> dict:
        """The ``summary.json`` dict (label names, scales, means, fusion, models, coverage, warnings)."""
        face_mean = to_named(faces.mean(), EXPR_CLASSES)
        voice_mean, r_voice = _voice_vote(voice)
        fused = late_fusion(face_mean, voice_mean, face_classes=self.face_model.class_names,
                            voice_classes=voice.class_names if voice is not None else (),
                            weights=self.options.fusion_weights,
                            reliability=(faces.n_found / max(1, faces.n), r_voice))
        fused.update(describe_fusion(fused, face_mean, voice_mean))
        return {
            "video": str(video), "video_id": video.stem, "affectfuse_version": __version__,
            "top_emotion": fused["top_emotion"], "label": fused["headline"]["label"],
            "warnings": warnings,
            "media": {"duration_s": info.duration_s, "fps": info.fps, "width": info.width, "height": info.height,
                      "has_audio": info.has_audio, "analysed_frames": int(faces.n),
                      "sampling_fps": self.options.fps, "coverage": coverage.to_dict()},
            "expressions": {
                "classes": list(EXPR_CLASSES), "scale": EXPR_SCALE, "source": self.face_model.name,
                "model_classes": list(self.face_model.class_names),
                "csv_columns": ["frame", "time_s", "face_found", *EXPR_CLASSES],
                "csv_note": "frame: 1-based frame number; time_s: seconds; face_found: 1/0; class columns "
                            "empty where no face was found",
                "frames": int(faces.n), "face_found_frames": int(faces.n_found),
                "mean_probabilities": face_mean or {},
                "top": max(face_mean, key=face_mean.get) if face_mean else None},
            "voice": _voice_summary(voice, self.voice_model),
            "fused": fused,
            "eri": eri,
            "models": self.models(),
        }


class _FacePass:
    """What the face pass keeps: the per-frame rows (batches of frames (B,), times (B,), found (B,), probs
    (B, 8)), counts, the (8,) probability sum over frames with a face, the decimated plot series,
    thumbnails (labelled when their frame's probabilities are known)."""

    def __init__(self, thumbs: _Thumbs, eri_state):
        from affectfuse.outputs.report import Decimator

        self.thumbs, self.eri_state = thumbs, eri_state
        self.rows: list[tuple] = []
        self.plot = Decimator(len(EXPR_CLASSES))
        self.n, self.n_found, self.sum = 0, 0, np.zeros(len(EXPR_CLASSES))
        self.last_t, self.last_frame = 0.0, None
        self.labels: dict[int, str] = {}

    def add(self, frames: np.ndarray, times: np.ndarray, found: np.ndarray, probs: np.ndarray) -> None:
        """Rows frames (B,), times (B,) s, found (B,) bool, probs (B, 8) (rows without a face ignored)."""
        probs = np.where(found[:, None], probs, np.nan).astype(np.float32)
        self.rows.append((np.asarray(frames, np.int64), np.asarray(times, np.float64), found.astype(bool), probs))
        self.plot.add(times, found, np.nan_to_num(probs))
        self.sum += probs[found].sum(axis=0, dtype=np.float64)
        for _, key, _ in self.thumbs.items:
            if self.n <= key < self.n + len(frames):
                self.labels[key] = EXPR_CLASSES[int(np.argmax(np.nan_to_num(probs[key - self.n])))]
        self.n, self.n_found = self.n + len(frames), self.n_found + int(found.sum())
        if len(frames):
            self.last_t, self.last_frame = float(times[-1]), int(frames[-1])

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """frames (T,) int64, times (T,) s, found (T,) bool, probs (T, 8) float32 (NaN rows without a face)."""
        if not self.rows:
            return (np.zeros(0, np.int64), np.zeros(0), np.zeros(0, bool),
                    np.zeros((0, len(EXPR_CLASSES)), np.float32))
        return tuple(np.concatenate(x) for x in zip(*self.rows))

    def mean(self) -> np.ndarray | None:
        """(8,) mean probabilities over frames with a face, None without any."""
        return self.sum / self.n_found if self.n_found else None

    def thumbnails(self) -> list:
        return [(t, self.labels.get(k, ""), crop) for t, k, crop in self.thumbs.items]


class _AudioFeed:
    """Iterates 16 kHz audio chunks (n,), timing decoding as ``audio_decode`` and counting ``samples``;
    with ``keep`` it also holds the chunks for :meth:`whole` (the ERI model windows the whole track)."""

    def __init__(self, chunks, timer: Timer, keep: bool = False):
        self.it, self.timer, self.samples = iter(chunks), timer, 0
        self.kept: list | None = [] if keep else None

    def __iter__(self):
        while True:
            with self.timer("audio_decode"):
                chunk = next(self.it, None)
            if chunk is None:
                return
            self.samples += len(chunk)
            if self.kept is not None:
                self.kept.append(chunk)
            yield chunk

    def drain(self) -> None:
        """Read what nobody consumed (no voice model), so ``samples`` counts the whole track."""
        for _ in self:
            pass

    def whole(self) -> np.ndarray:
        return np.concatenate(self.kept) if self.kept else np.zeros(0, np.float32)


def _voice_vote(voice) -> tuple[dict | None, float]:
    """The voice's video-level vote: (class -> mean probability over the voiced windows inside the head's
    training domain, or over all voiced windows when none is inside; share of voiced windows inside)."""
    if voice is None or not voice.voiced.any():
        return None, 0.0
    weights = voice_window_weights(voice.voiced, voice.outside_domain())  # (W,) 1 = counts
    use = weights.astype(bool) if weights.any() else voice.voiced
    return (to_named(mean_probabilities(voice.probs, use), voice.class_names),
            float(weights.sum() / voice.voiced.sum()))


def _voice_summary(voice, model) -> dict | None:
    if model is None:
        return None
    if voice is None:
        return {"available": False, "reason": "no audio track", "classes": list(model.class_names)}
    named, reliability = _voice_vote(voice)
    windows = []
    for (a, b), p, v, lvl in zip(voice.times, voice.probs, voice.voiced, voice.level_dbfs):
        row = {"start_s": round(float(a), 3), "end_s": round(float(b), 3), "voiced": bool(v),
               "level_dbfs": None if not np.isfinite(lvl) else round(float(lvl), 1)}
        if v:
            row["probabilities"] = {n: round(float(x), 4) for n, x in zip(voice.class_names, p)}
            row["top"] = voice.class_names[int(np.argmax(p))]
        windows.append(row)
    outside = voice.outside_domain()
    for row, typ, out in zip(windows, voice.typicality if voice.typicality is not None else [], outside):
        if row["voiced"] and np.isfinite(typ):
            row["typicality"], row["outside_domain"] = round(float(typ), 3), bool(out)
    domain = None if voice.domain_threshold is None else {
        "threshold": voice.domain_threshold, "windows_outside": int(outside.sum()),
        "voiced_windows": int(voice.voiced.sum()),
        "meaning": "typicality = median |z| of a window's features under the head's z-scoring; above the "
                   "threshold (99th percentile over the head's training windows) the input is unlike its "
                   "training data and the window counts for nothing in the fusion (fused.reliability)"}
    return {"available": bool(voice.voiced.any()), "classes": list(voice.class_names),
            "scale": "probability in [0, 1] per class over the voice head's classes (ABAW names), rows sum to 1",
            "voiced_windows": int(voice.voiced.sum()), "windows": windows,
            "mean_probabilities": named or {}, "top": max(named, key=named.get) if named else None,
            "mean_over": ("voiced windows inside the training domain" if reliability > 0 else
                          "all voiced windows (none inside the training domain)"),
            "reliability": round(reliability, 4), "domain_check": domain}
