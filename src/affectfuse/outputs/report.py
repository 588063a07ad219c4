"""Human-readable outputs of ``affectfuse predict``: per-frame CSV, summary JSON, timeline plot, HTML.

Per video, in ``OUT/<video stem>/``:

- ``expressions.csv``: ``frame, time_s, face_found, <8 class columns>``; one row per analysed frame
  (frame numbers 1-based, time in seconds); class columns are probabilities in [0, 1] summing to 1
  (empty where no face was found);
- ``summary.json``: label names, scales, the top emotion, voice windows, ERI intensities (when any),
  the models and weights used (with ``random_weights`` flags), timings;
- ``timeline.png``: probabilities over time, face-missing spans shaded, voice windows below;
- ``report.html``: one self-contained page (plot, tables and face thumbnails inlined as base64).

Several videos -> ``OUT/index.html`` linking every report (links URL-encoded, so any file name is a
relative link). Memory stays flat in video length: ``predict`` streams the CSV rows to disk
(:class:`ExpressionRows`) and plots a decimated series (:class:`Decimator`, at most ~2000 points).
Letters in shapes: T frames, T' plotted points, C classes, W voice windows, S crop size in pixels.
"""

from __future__ import annotations

import contextlib
import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from affectfuse.inference.confidence import SMOOTH_S, smooth
from affectfuse.outputs.report_html import CLASS_COLOURS, confidence_text, render_html, write_index
from affectfuse.utils import atomic_path, clean_stale_temps, write_json_atomic, write_text_atomic

__all__ = ["VideoReport", "ExpressionRows", "Decimator", "write_expressions_csv", "plot_timeline",
           "write_video_report", "render_html", "write_index", "confidence_text", "CLASS_COLOURS"]

MAX_PLOT_POINTS = 2000

@dataclass
class VideoReport:
    """Everything the writers need for one video.

    Attributes:
        video_id: name used for the output folder (the file stem).
        frame_numbers: (T,) int, 1-based frame numbers of the analysed frames; None when ``expressions.csv``
            was streamed already (:class:`ExpressionRows`) and the arrays below are a decimated series.
        timestamps: (T,) or (T',) float seconds.
        face_found: (T,) or (T',) bool.
        probs: (T, C) or (T', C) float in [0, 1]; rows of frames without a face are ignored (written empty).
        class_names: C names of the probability columns.
        summary: the dict written to ``summary.json`` (built by the inference code).
        voice_times: (W, 2) window start/end seconds, or None when there is no audio.
        voice_probs: (W, Cv) float in [0, 1].
        voice_class_names: Cv names of the voice columns.
        thumbnails: a few ``(time_s, label, (S, S, 3) uint8 RGB crop)`` aligned faces.
    """

    video_id: str
    frame_numbers: np.ndarray
    timestamps: np.ndarray
    face_found: np.ndarray
    probs: np.ndarray
    class_names: tuple[str, ...]
    summary: dict
    voice_times: np.ndarray | None = None
    voice_probs: np.ndarray | None = None
    voice_class_names: tuple[str, ...] = ()
    thumbnails: list = field(default_factory=list)


class ExpressionRows:
    """``expressions.csv`` written batch by batch (memory flat in video length); atomic like every writer.

    >>> with ExpressionRows(path, EXPR_CLASSES) as rows:
    ...     rows.add(frames (B,), times (B,) s, found (B,) bool, probs (B, C))

    The file appears under its name only when the block ends without an error; temporary files a killed
    earlier run left in the folder are removed on entry.
    """

    def __init__(self, path: str | Path, class_names):
        self.path, self.class_names = Path(path), tuple(class_names)
        self.rows = 0

    def __enter__(self) -> "ExpressionRows":
        if self.path.parent.is_dir():  # a video redone after a killed run: drop that run's temporary files
            clean_stale_temps(self.path.parent)
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.path))
        self._fh = self._stack.enter_context(open(tmp, "w", newline="", encoding="utf-8"))
        self._writer = csv.writer(self._fh, lineterminator="\n")
        self._writer.writerow(["frame", "time_s", "face_found", *self.class_names])
        return self

    def add(self, frames, times, found, probs) -> None:
        """One batch: frames (B,) 1-based, times (B,) s, found (B,) bool, probs (B, C) (ignored without a face)."""
        empty = [""] * len(self.class_names)
        for frame, t, ok, row in zip(frames, times, found, probs):
            values = [f"{v:.4f}" for v in row] if ok else empty
            self._writer.writerow([int(frame), f"{float(t):.3f}", int(bool(ok)), *values])
        self.rows += len(frames)

    def __exit__(self, *exc) -> bool:
        return self._stack.__exit__(*exc)


class Decimator:
    """A (T, C) probability series reduced, while it streams, to at most ``max_points`` bins for the plot.

    Each bin averages ``width`` consecutive frames (``width`` doubles whenever the bins would exceed
    ``max_points``): its time is the mean time of its frames, its probabilities the mean over frames with
    a face (NaN without any), and it counts as "face found" when at least half its frames had one. Up to
    ``max_points`` frames the series is returned unchanged.
    """

    def __init__(self, n_classes: int, max_points: int = MAX_PLOT_POINTS):
        self.max_points, self.width = max(2, int(max_points)), 1
        self.t, self.n, self.hit = [], [], []  # per bin: time sum, frames, frames with a face
        self.sums: list[np.ndarray] = []  # per bin: (C,) probability sum over frames with a face
        self.n_classes = n_classes

    def add(self, times, found, probs) -> None:
        """One batch: times (B,) s, found (B,) bool, probs (B, C)."""
        for t, ok, row in zip(times, found, probs):
            if self.n and self.n[-1] >= self.width and len(self.n) >= self.max_points:
                self._halve()
            if not self.n or self.n[-1] >= self.width:
                self.t.append(0.0), self.n.append(0), self.hit.append(0)
                self.sums.append(np.zeros(self.n_classes))
            self.t[-1] += float(t)
            self.n[-1] += 1
            if ok:
                self.hit[-1] += 1
                self.sums[-1] += row

    def _halve(self) -> None:
        """Merge neighbouring bins pairwise; bins then hold ``2 * width`` frames."""
        pair = lambda xs: [xs[i] + xs[i + 1] if i + 1 < len(xs) else xs[i] for i in range(0, len(xs), 2)]  # noqa
        self.t, self.n, self.hit, self.sums = pair(self.t), pair(self.n), pair(self.hit), pair(self.sums)
        self.width *= 2

    def series(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """times (T',) s, found (T',) bool, probs (T', C) (NaN rows where a bin had no face)."""
        n = np.asarray(self.n, np.float64)
        hit = np.asarray(self.hit, np.float64)
        sums = np.asarray(self.sums, np.float64).reshape(len(n), self.n_classes)
        with np.errstate(invalid="ignore", divide="ignore"):
            probs = np.where(hit[:, None] > 0, sums / hit[:, None], np.nan)
        times = np.asarray(self.t, np.float64) / np.maximum(n, 1)
        return times, hit >= n / 2, probs.astype(np.float32)


def write_expressions_csv(path: str | Path, report: VideoReport) -> None:
    """``frame,time_s,face_found,<classes>``; probabilities with 4 decimals, empty without a face."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["frame", "time_s", "face_found", *report.class_names])
    for frame, t, found, row in zip(report.frame_numbers, report.timestamps, report.face_found, report.probs):
        values = [f"{v:.4f}" for v in row] if found else [""] * len(report.class_names)
        writer.writerow([int(frame), f"{float(t):.3f}", int(bool(found)), *values])
    write_text_atomic(path, buf.getvalue())


def _spans(mask: np.ndarray, times: np.ndarray) -> list[tuple[float, float]]:
    """(start_s, end_s) of every run of True in ``mask`` (T,), each frame covering half a step each side."""
    if len(times) == 0:
        return []
    step = float(np.median(np.diff(times))) if len(times) > 1 else 1.0
    spans, start = [], None
    for i, m in enumerate(mask):
        if m and start is None:
            start = i
        if (not m or i == len(mask) - 1) and start is not None:
            end = i if m else i - 1
            spans.append((float(times[start]) - step / 2, float(times[end]) + step / 2))
            start = None
    return spans


def plot_timeline(path: str | Path, report: VideoReport, dpi: int = 100) -> None:
    """Face probabilities over time (face-missing spans shaded) and voice windows below, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_voice = report.voice_probs is not None and len(report.voice_probs) > 0
    fig, axes = plt.subplots(2 if has_voice else 1, 1, figsize=(10, 5.2 if has_voice else 3.4),
                             sharex=True, squeeze=False, gridspec_kw={"height_ratios": [3, 2] if has_voice else [1]})
    ax = axes[0, 0]
    t = np.asarray(report.timestamps, dtype=float)
    probs = np.where(np.asarray(report.face_found)[:, None], report.probs, np.nan)
    smoothed = smooth(t, report.face_found, report.probs)  # (T, C), SMOOTH_S centred mean
    for c, name in enumerate(report.class_names):
        ax.plot(t, probs[:, c], color=CLASS_COLOURS.get(name), lw=0.7, alpha=0.25)
        ax.plot(t, smoothed[:, c], color=CLASS_COLOURS.get(name), lw=1.8, label=name)
    _draw_segments(ax, report.summary.get("segments") or [])
    for i, (a, b) in enumerate(_spans(~np.asarray(report.face_found, dtype=bool), t)):
        ax.axvspan(a, b, color="#000000", alpha=0.12, lw=0, label="no face" if i == 0 else None)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel(f"face: probability\n({SMOOTH_S:g} s mean; raw faint)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    if has_voice:
        vax = axes[1, 0]
        centres = report.voice_times.mean(axis=1)
        outside = _outside_flags(report)  # (W,) bool: unlike the head's training speech
        for c, name in enumerate(report.voice_class_names):
            colour = CLASS_COLOURS.get(name)
            vax.plot(centres, report.voice_probs[:, c], "-", color=colour, lw=1.4, label=name,
                     alpha=0.35 if outside.all() else 1.0)
            vax.plot(centres[~outside], report.voice_probs[~outside, c], "o", ms=4, color=colour)
            vax.plot(centres[outside], report.voice_probs[outside, c], "o", ms=4, mfc="none", color=colour)
        vax.set_ylim(0, 1)
        vax.set_ylabel("voice: probability\n(window centres;\nhollow = unlike training)")
        vax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        vax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time (s)")
    if len(t):
        axes[-1, 0].set_xlim(min(0.0, float(t[0])), max(float(t[-1]), 1e-3))
    fig.suptitle(f"{report.video_id}: expression probabilities over time", fontsize=11)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)


def _outside_flags(report: VideoReport) -> np.ndarray:
    """(W,) bool: voice window flagged outside the head's training domain (summary's windows, in order)."""
    windows = (report.summary.get("voice") or {}).get("windows") or []
    n = 0 if report.voice_probs is None else len(report.voice_probs)
    flags = np.zeros(n, bool)
    if len(windows) == n:
        flags[:] = [bool(w.get("outside_domain", False)) for w in windows]
    return flags


def _draw_segments(ax, segs: list[dict]) -> None:
    """Segment boundaries (dotted) and each segment's label above the curves."""
    for k, seg in enumerate(segs):
        if k:
            ax.axvline(seg["start_s"], color="#555", lw=0.8, ls=":")
        label = seg["headline"]["label"] or ""
        ax.text((seg["start_s"] + seg["end_s"]) / 2, 1.06, label, ha="center", va="center", fontsize=8,
                color=CLASS_COLOURS.get(label, "#555"), fontweight="bold" if label in CLASS_COLOURS else "normal")


def write_video_report(out_dir: str | Path, report: VideoReport, timer=None) -> dict[str, Path]:
    """Write the four files of one video into ``out_dir``; summary.json last (it marks the video done).

    ``timer``: an :class:`affectfuse.inference.video.Timer`; the writing of the CSV, plot and HTML is
    timed as ``report`` and all its stages go to ``summary["timings_s"]``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in ("expressions.csv", "timeline.png", "report.html", "summary.json")}
    with timer("report") if timer is not None else contextlib.nullcontext():
        if report.frame_numbers is not None:  # else streamed already by ExpressionRows
            write_expressions_csv(paths["expressions.csv"], report)
        plot_timeline(paths["timeline.png"], report)
        write_text_atomic(paths["report.html"], render_html(report, paths["timeline.png"].read_bytes()))
    if timer is not None:
        report.summary["timings_s"] = timer.rounded()
    report.summary.setdefault("files", {k: k for k in paths})
    write_json_atomic(paths["summary.json"], report.summary)
    return paths
