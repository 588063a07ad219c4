"""One video's prediction in memory: :class:`VideoPrediction` (what ``affectfuse.predict`` returns).

Computing and writing are apart: :meth:`affectfuse.inference.video.VideoPredictor.analyse` fills a
:class:`VideoPrediction` and writes nothing; :meth:`VideoPrediction.save` writes the report files
``affectfuse predict`` writes (``expressions.csv``, ``summary.json``, ``timeline.png``, ``report.html``,
see :mod:`affectfuse.outputs.report`) with the same writers; :meth:`VideoPrediction.to_pandas` gives the
frames as one DataFrame.

Memory: the per-frame arrays take ~49 bytes a frame (frame number, time, face flag, 8 float32
probabilities): 4.4 MB for an hour at 25 frames/s.

Letters: T analysed frames, C = 8 expression classes (``labels.EXPR_CLASSES``), W voice windows.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

@dataclass
class VideoPrediction:
    """Everything ``predict`` found in one video.

    Attributes:
        video: the analysed file.
        frame_numbers: (T,) int64, 1-based frame numbers of the analysed frames.
        times_s: (T,) float64 seconds.
        face_found: (T,) bool.
        probabilities: (T, C) float32 in [0, 1] over ``class_names``; NaN rows where no face was found.
        class_names: the C expression classes (``labels.EXPR_CLASSES``).
        summary: the ``summary.json`` dict: top emotion and fusion, voice windows, ERI, models with the
            weights files loaded (path, sha256), coverage, warnings, timings.
        voice: the :class:`~affectfuse.inference.voice.VoiceResult` (``times`` (W, 2) s, ``probs`` (W, Cv)),
            or None without audio or voice model.
        plot: the decimated ``(times (T',), found (T',), probs (T', C))`` series the timeline draws.
        thumbnails: ``[(time_s, label, (S, S, 3) uint8 RGB crop)]`` for the report.
        timer: stage timings (an :class:`~affectfuse.inference.video.Timer`); :meth:`save` adds ``report``.
    """

    video: Path
    frame_numbers: np.ndarray
    times_s: np.ndarray
    face_found: np.ndarray
    probabilities: np.ndarray
    class_names: tuple[str, ...]
    summary: dict
    voice: object | None = None
    plot: tuple = ()
    thumbnails: list = field(default_factory=list)
    timer: object | None = None

    # -- what a user asks first ------------------------------------------------------------------------------
    @property
    def top_emotion(self) -> str | None:
        """The fused top emotion of the video (face and voice), None when neither gave anything."""
        return self.summary.get("top_emotion")

    @property
    def label(self) -> str | None:
        """The report's headline: the top emotion, or ``"uncertain"`` when it does not lead clearly."""
        return self.summary.get("label")

    @property
    def confidence(self) -> float | None:
        """Fused probability in [0, 1] of :attr:`top_emotion` (None without one)."""
        fused = self.summary.get("fused") or {}
        top = fused.get("top_emotion")
        return None if top is None else float(fused["probabilities"][top])

    @property
    def eri(self) -> dict[str, float] | None:
        """The 7 ERI intensities in [0, 1] by emotion name (with an ERI checkpoint), else None."""
        eri = self.summary.get("eri")
        return dict(eri["intensities"]) if eri else None

    @property
    def voice_windows(self) -> list[dict]:
        """Voice windows: ``{"start_s", "end_s", "voiced", "level_dbfs"}`` and, when voiced,
        ``"probabilities"`` (class -> [0, 1]) and ``"top"``; empty without audio or voice model."""
        return list((self.summary.get("voice") or {}).get("windows") or [])

    def frame_top(self) -> np.ndarray:
        """(T,) str: each frame's most probable class, ``""`` without a face."""
        top = np.asarray(self.class_names, dtype=object)[np.argmax(np.nan_to_num(self.probabilities, nan=-1), axis=1)]
        return np.where(self.face_found, top, "").astype(str)

    def to_pandas(self):
        """The frames as one ``pandas.DataFrame``, one row per analysed frame; columns::

            frame       int    1-based frame number in the video
            time_s      float  seconds from the start of the video
            face_found  bool   the main face was found (else the class columns are NaN)
            <class>     float  probability in [0, 1] of each ABAW expression class (8 columns, in
                               labels.EXPR_CLASSES order; they sum to 1 on rows with a face)
            top         str    the frame's most probable class ("" without a face)
        """
        import pandas as pd

        frame = pd.DataFrame({"frame": self.frame_numbers.astype(np.int64), "time_s": self.times_s,
                              "face_found": self.face_found.astype(bool)})
        for j, name in enumerate(self.class_names):
            frame[name] = self.probabilities[:, j]
        frame["top"] = self.frame_top()
        frame.attrs["scale"] = "probability in [0, 1] per class; time_s in seconds; frame 1-based"
        return frame

    # -- files -----------------------------------------------------------------------------------------------
    def save(self, folder: str | Path, extra: dict | None = None) -> dict[str, Path]:
        """Write the report files of ``affectfuse predict`` into ``folder`` (created; ``summary.json`` last,
        it marks the video done; temporary files a killed earlier run left there are removed).

        ``extra``: keys added to ``summary.json`` (e.g. ``source_file``). Returns name -> path of the files."""
        from affectfuse.outputs.report import ExpressionRows, VideoReport, write_video_report

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        summary = copy.deepcopy(self.summary)
        summary["video_id"] = folder.name
        summary.update(extra or {})
        timer = copy.deepcopy(self.timer)
        with ExpressionRows(folder / "expressions.csv", self.class_names) as rows:  # atomic, cleans stale temps
            rows.add(self.frame_numbers, self.times_s, self.face_found, self.probabilities)
        times, found, probs = self.plot
        report = VideoReport(
            video_id=folder.name, frame_numbers=None, timestamps=times, face_found=found,
            probs=np.nan_to_num(probs), class_names=self.class_names, summary=summary,
            voice_times=None if self.voice is None else self.voice.times,
            voice_probs=None if self.voice is None else self.voice.probs,
            voice_class_names=() if self.voice is None else self.voice.class_names, thumbnails=self.thumbnails)
        paths = write_video_report(folder, report, timer)
        self.summary.update({k: summary[k] for k in ("timings_s", "files") if k in summary})
        return paths

    def __repr__(self) -> str:
        n, found = len(self.frame_numbers), int(np.sum(self.face_found))
        eri = "" if self.eri is None else ", with ERI"
        return (f"VideoPrediction({self.video.name!r}: {self.label}, top {self.top_emotion}, {n} frames, "
                f"{found} with a face, {len(self.voice_windows)} voice windows{eri})")
