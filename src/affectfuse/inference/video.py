"""One video -> per-frame expressions, voice windows, fused top emotion, ERI, report files.

:class:`VideoPredictor` loads every model once (:class:`PredictOptions` says which), then
:meth:`VideoPredictor.predict` streams a video:

    faces    = iter_faces_sparse(video)          # batches: found (B,), crops {S: (B, S, S, 3)}
    probs    = face_model(crops[found])          # (F, 8) over labels.EXPR_CLASSES
    audio    = read_audio(video, 16 kHz)         # (S,) or None
    voice    = voice_model(audio)                # (W, C) per window, silent windows NaN
    fused    = late_fusion(mean face, mean voice)
    eri      = eri_model(face features, audio)   # 7 intensities in [0, 1] (with --eri-checkpoint)
    files    = write_video_report(OUT/<stem>)

Letters: B frames in a batch, F frames with a face, T analysed frames, W voice windows, S crop side.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from affectfuse import __version__
from affectfuse.inference.fusion import late_fusion, mean_probabilities, to_named
from affectfuse.labels import EXPR_CLASSES, EXPR_SCALE

SAMPLE_CLIP = "assets/sample/sample_clip.mp4"
DEFAULT_VOICE_HEAD = "assets/voice/voice_head.json"


def sample_clip_path() -> Path:
    """The real talking-face clip shipped in the package (CREMA-D, see assets/sample/LICENSE.txt)."""
    return Path(str(resources.files("affectfuse").joinpath(SAMPLE_CLIP)))


def default_voice_head_path() -> Path:
    return Path(str(resources.files("affectfuse").joinpath(DEFAULT_VOICE_HEAD)))


class Timer:
    """Accumulates wall-clock seconds per named stage: ``with timer("detect"): ...``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

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
    fusion_weights: tuple[float, float] = (0.5, 0.5)
    detect_max_side: int | None = 320
    min_face_size: float = 20.0
    detect_fps: float | None = 8.0  # detect at this rate, interpolate landmarks in between (None: every frame)
    thumbnails: int = 6
    device: str = "cpu"
    random_weights: bool = False  # tests only: networks without pretrained files (recorded in summary.json)


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
        self.face_model = load_face_model(o.expr_checkpoint, device=o.device, random_weights=o.random_weights)
        self.voice_model = load_voice_model(o.voice_head, device=o.device, random_weights=o.random_weights)
        self.eri_model = load_eri_model(o.eri_checkpoint, device=o.device, random_weights=o.random_weights)
        from affectfuse.faces import load_mtcnn

        self.detector = load_mtcnn(device=o.device, random_weights=o.random_weights,
                                   min_face_size=o.min_face_size)
        self.crop_sizes = tuple(sorted({*self.face_model.crop_sizes,
                                        *(self.eri_model.crop_sizes if self.eri_model else ())}))

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

    def _faces(self, video: Path, timer: Timer):
        """Face batches of the main person; pass 1 (decode at detection size + detect + track) is timed as
        ``detect``, pass 2 (decode at full size + landmark interpolation + align) as ``align``."""
        from affectfuse.inference.faces import iter_faces_sparse

        o = self.options
        return iter_faces_sparse(video, self.detector, fps=o.fps, sizes=self.crop_sizes, batch_size=o.batch_size,
                                 detect_max_side=o.detect_max_side, detect_fps=o.detect_fps, timer=timer)

    def predict(self, video: str | Path, out_dir: str | Path, extra: dict | None = None) -> dict:
        """Analyse ``video`` and write its report files into ``out_dir``; returns the summary dict."""
        from affectfuse.media import probe, read_audio
        from affectfuse.outputs.report import VideoReport, write_video_report

        video, timer = Path(video), Timer()
        start = time.perf_counter()
        with timer("probe"):
            info = probe(video)
        if not info.has_video:
            from affectfuse.media import MediaError

            raise MediaError(video, "no video stream (audio-only file); predict needs a video")
        frames, times, found, feats = [], [], [], []
        thumbs = _Thumbs(self.options.thumbnails, max(info.duration_s, 1e-3))
        eri_state = self.eri_model.start() if self.eri_model else None
        fm = self.face_model
        for batch in self._faces(video, timer):  # B frames
            ok = np.asarray(batch.found, dtype=bool)  # (B,)
            f = np.zeros((len(ok), fm.dim), np.float32)  # (B, D)
            if ok.any():
                with timer("face_model"):
                    f[ok] = fm.features({s: c[ok] for s, c in batch.crops.items()})  # (F, D)
                offset = sum(len(x) for x in frames)
                for i in np.flatnonzero(ok):
                    thumbs.offer(batch.timestamps[i], batch.crops[min(batch.crops)][i], offset + int(i))
            if eri_state is not None:
                with timer("eri_features"):
                    eri_state.add_faces(batch)
            frames.append(np.asarray(batch.frame_numbers))
            times.append(np.asarray(batch.timestamps, dtype=float))
            found.append(ok)
            feats.append(f)
        frames_a = np.concatenate(frames) if frames else np.zeros(0, np.int64)
        times_a = np.concatenate(times) if times else np.zeros(0)
        found_a = np.concatenate(found) if found else np.zeros(0, bool)
        with timer("face_model"):
            probs_a = fm.finish(np.concatenate(feats) if feats else np.zeros((0, fm.dim), np.float32), found_a)
        probs_a = np.where(found_a[:, None], probs_a, np.nan).astype(np.float32)  # (T, 8)
        thumbs.items = [(t, EXPR_CLASSES[int(np.argmax(probs_a[k]))], crop) for t, k, crop in thumbs.items]

        voice = None
        audio = None
        if info.has_audio and (self.voice_model or self.eri_model):
            with timer("audio_decode"):
                audio = read_audio(video, 16000)
        if self.voice_model is not None and audio is not None and len(audio):
            voice = self.voice_model(audio, timer)
        eri = None
        if eri_state is not None:
            with timer("eri_model"):
                eri = eri_state.finish(audio)

        face_mean = to_named(mean_probabilities(probs_a, found_a), EXPR_CLASSES)
        voice_mean = None
        if voice is not None and voice.voiced.any():
            voice_mean = to_named(mean_probabilities(voice.probs, voice.voiced), voice.class_names)
        fused = late_fusion(face_mean, voice_mean, face_classes=self.face_model.class_names,
                            voice_classes=voice.class_names if voice is not None else (),
                            weights=self.options.fusion_weights)
        fused["rule_short"] = ("face + voice, mean over shared classes" if len(fused["modalities"]) == 2
                               else f"{', '.join(fused['modalities']) or 'nothing'} only")

        summary = {
            "video": str(video), "video_id": Path(out_dir).name, "affectfuse_version": __version__,
            "top_emotion": fused["top_emotion"],
            "media": {"duration_s": info.duration_s, "fps": info.fps, "width": info.width, "height": info.height,
                      "has_audio": info.has_audio, "analysed_frames": int(len(frames_a)),
                      "sampling_fps": self.options.fps},
            "expressions": {
                "classes": list(EXPR_CLASSES), "scale": EXPR_SCALE, "source": self.face_model.name,
                "model_classes": list(self.face_model.class_names),
                "csv_columns": ["frame", "time_s", "face_found", *EXPR_CLASSES],
                "csv_note": "frame: 1-based frame number; time_s: seconds; face_found: 1/0; class columns "
                            "empty where no face was found",
                "frames": int(len(frames_a)), "face_found_frames": int(found_a.sum()),
                "mean_probabilities": face_mean or {},
                "top": max(face_mean, key=face_mean.get) if face_mean else None},
            "voice": _voice_summary(voice, self.voice_model),
            "fused": fused,
            "eri": eri,
            "models": self.models(),
        }
        summary.update(extra or {})
        report = VideoReport(
            video_id=Path(out_dir).name, frame_numbers=frames_a, timestamps=times_a, face_found=found_a,
            probs=np.nan_to_num(probs_a), class_names=EXPR_CLASSES, summary=summary,
            voice_times=None if voice is None else voice.times,
            voice_probs=None if voice is None else voice.probs,
            voice_class_names=() if voice is None else voice.class_names, thumbnails=thumbs.items)
        timer.add("total_before_report", time.perf_counter() - start)
        summary["timings_s"] = timer.rounded()  # shown in report.html; summary.json adds "report"
        write_video_report(out_dir, report, timer)
        return summary


def _voice_summary(voice, model) -> dict | None:
    if model is None:
        return None
    if voice is None:
        return {"available": False, "reason": "no audio track", "classes": list(model.class_names)}
    mean = mean_probabilities(voice.probs, voice.voiced)
    named = to_named(mean, voice.class_names)
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
                   "training data and the voice vote is unreliable; reported only, fusion does not use it"}
    return {"available": bool(voice.voiced.any()), "classes": list(voice.class_names),
            "scale": "probability in [0, 1] per class over the voice head's classes (ABAW names), rows sum to 1",
            "voiced_windows": int(voice.voiced.sum()), "windows": windows,
            "mean_probabilities": named or {}, "top": max(named, key=named.get) if named else None,
            "domain_check": domain}
