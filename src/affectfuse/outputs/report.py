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

import base64
import contextlib
import csv
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from affectfuse.inference.confidence import SMOOTH_S, UNCERTAIN, floor2, smooth
from affectfuse.utils import atomic_path, clean_stale_temps, write_json_atomic, write_text_atomic

MAX_PLOT_POINTS = 2000

# One colour per ABAW expression class, used by the plot and the HTML so both read alike.
CLASS_COLOURS = {
    "Neutral": "#7f7f7f", "Anger": "#d62728", "Disgust": "#8c564b", "Fear": "#9467bd",
    "Happiness": "#ff7f0e", "Sadness": "#1f77b4", "Surprise": "#2ca02c", "Other": "#bcbd22",
}


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


def _png_b64(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _bar(value: float | None, colour: str) -> str:
    if value is None:
        return "<td class=num>&ndash;</td>"
    return (f"<td class=num><span class=bar style='width:{100 * value:.0f}px;background:{colour}'></span>"
            f" {value:.3f}</td>")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:22px 0 8px}
.top{font-size:18px;margin:8px 0 16px} .badge{padding:3px 10px;border-radius:12px;color:#fff;font-weight:600}
table{border-collapse:collapse;font-size:13px} td,th{padding:3px 10px;border-bottom:1px solid #e4e4e4;text-align:left}
td.num{font-variant-numeric:tabular-nums;white-space:nowrap} .bar{display:inline-block;height:9px;vertical-align:middle}
.thumbs{display:flex;gap:10px;flex-wrap:wrap} .thumbs figure{margin:0;text-align:center;font-size:12px}
.warn{background:#fff4e0;border-left:4px solid #e69500;padding:6px 10px;font-size:13px}
.thumbs img{width:112px;height:112px;border-radius:4px} .muted{color:#777;font-size:12px}
img.plot{max-width:100%;border:1px solid #eee}
"""


def _badge(label: str | None) -> str:
    label = label or "unknown"
    colour = CLASS_COLOURS.get(label, "#9a9a9a" if label == UNCERTAIN else "#444")
    return f"<span class=badge style='background:{colour}'>{html.escape(label)}</span>"


def confidence_text(s: dict) -> str:
    """One line on how sure the headline of a summary is: margin, threshold, face/voice agreement."""
    fused = s.get("fused") or {}
    head = fused.get("headline") or {}
    if not head.get("top"):
        return head.get("reason", "")
    parts = [f"{head['top']} leads {head['second']} by {floor2(head['margin']):.2f}" if head.get("second")
             else head["top"]]
    parts[0] += f" (a label needs {head.get('threshold', 0):.2f})"
    agree = fused.get("agreement")
    if agree:
        parts.append(("face and voice agree on " + agree["face_top"]) if agree["same_top"] else
                     f"face says {agree['face_top']}, voice {agree['voice_top']}")
        parts[-1] += f" (overlap {agree['overlap']:.2f})"
    if not head.get("confident") and head.get("reason") and "leads" not in head["reason"]:
        parts.insert(0, head["reason"])  # why it is uncertain comes first
    return "; ".join(parts)


def _headline_html(s: dict) -> str:
    """The label (or "uncertain") with its confidence line and the sources behind it."""
    fused = s.get("fused") or {}
    label = (fused.get("headline") or {}).get("label", s.get("top_emotion"))
    return (f"<div class=top>Whole video: {_badge(label)} <span class=muted>{html.escape(confidence_text(s))}"
            f"</span><br><span class=muted>from {html.escape(fused.get('rule_short', ''))}</span></div>")


def _segments_html(segs: list[dict] | None) -> str:
    """Table of the segments: time span, label, the face's top two, the voice windows inside."""
    if not segs:
        return ""
    esc = html.escape
    rows = ["<h2>Over time</h2><table><tr><th>time (s)</th><th>label</th><th>face (smoothed mean)</th>"
            "<th>voice windows (top class)</th></tr>"]
    for seg in segs:
        h = seg["headline"]
        top2 = sorted(seg["mean_probabilities"].items(), key=lambda kv: -kv[1])[:2]
        face = ", ".join(f"{esc(c)} {v:.2f}" for c, v in top2) or "&ndash;"
        voice = ", ".join(esc(w["top"] or "") + (" (unlike training)" if w["outside_domain"] else "")
                          for w in seg.get("voice_windows", [])) or "&ndash;"
        rows.append(f"<tr><td class=num>{seg['start_s']:.2f} &ndash; {seg['end_s']:.2f}</td><td>{_badge(h['label'])}"
                    f"</td><td class=num>{face}</td><td>{voice}</td></tr>")
    rows.append("</table><p class=muted>Segments: changes of the dominant face expression, from probabilities "
                f"averaged over {SMOOTH_S:g} s; a label needs its top class to lead the second by the threshold "
                "above, else \"uncertain\".</p>")
    return "\n".join(rows)


def _eri_html(eri: dict | None) -> str:
    """The ERI table, or the line saying how to get it."""
    esc = html.escape
    if not eri:
        return ("<h2>Emotional reaction intensities (ERI)</h2><p class=muted>Not computed: pass "
                "<code>--eri-checkpoint PATH</code> (a <code>best.pt</code> written by <code>affectfuse train</code>, "
                "see the README's \"Train, evaluate, ensembles\") to add the 7 intensities in [0, 1].</p>")
    rows = ["<h2>Emotional reaction intensities (ERI)</h2><table><tr><th>emotion</th><th>intensity</th></tr>"]
    rows += [f"<tr><td>{esc(name)}</td>{_bar(float(value), '#555')}</tr>"
             for name, value in eri.get("intensities", {}).items()]
    rows.append(f"</table><p class=muted>Scale: {esc(eri.get('scale', ''))}</p>")
    return "\n".join(rows)


def render_html(report: VideoReport, timeline_png: bytes | None) -> str:
    """The self-contained report page (no external files): plot, tables, face thumbnails."""
    s = report.summary
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>affectfuse: {esc(report.video_id)}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>{esc(report.video_id)}</h1><div class=muted>{esc(str(s.get('video', '')))}</div>",
             _headline_html(s)]
    parts += [f"<p class=warn>{esc(w)}</p>" for w in s.get("warnings") or []]
    parts.append(_segments_html(s.get("segments")))
    expr = s.get("expressions", {})
    voice = s.get("voice") or {}
    fused = s.get("fused", {}).get("probabilities", {})
    face_mean = expr.get("mean_probabilities", {})
    voice_mean = voice.get("mean_probabilities", {})
    parts.append("<h2>Whole video</h2><table><tr><th>class</th><th>face (mean over frames with a face)</th>"
                 f"<th>voice (mean over {esc(voice.get('mean_over', 'voiced windows'))})</th><th>fused</th></tr>")
    for name in report.class_names:
        colour = CLASS_COLOURS.get(name, "#444")
        parts.append(f"<tr><td>{esc(name)}</td>{_bar(face_mean.get(name), colour)}"
                     f"{_bar(voice_mean.get(name), colour)}{_bar(fused.get(name), colour)}</tr>")
    parts.append("</table>")
    parts.append(f"<p class=muted>Scale: {esc(expr.get('scale', ''))}. Face found in "
                 f"{expr.get('face_found_frames', 0)} of {expr.get('frames', 0)} analysed frames.</p>")
    domain = voice.get("domain_check") or {}
    if domain.get("windows_outside"):
        parts.append(f"<p class=warn>Voice: {domain['windows_outside']} of {domain['voiced_windows']} voiced windows "
                     "are unlike the voice head's training speech (another language, microphone or codec?); "
                     "they count for nothing in the fused result.</p>")
    if timeline_png:
        parts.append("<h2>Timeline</h2><img class=plot alt='timeline' src='data:image/png;base64,"
                     + base64.b64encode(timeline_png).decode("ascii") + "'>")
    parts.append(_eri_html(s.get("eri")))
    if report.thumbnails:
        parts.append("<h2>Aligned faces</h2><div class=thumbs>")
        for t, label, crop in report.thumbnails:
            parts.append(f"<figure><img alt='face at {t:.2f} s' src='data:image/png;base64,{_png_b64(crop)}'>"
                         f"<figcaption>{t:.2f} s &middot; {esc(label)}</figcaption></figure>")
        parts.append("</div>")
    parts.append("<h2>Models</h2><table><tr><th>role</th><th>model</th><th>weights</th><th>random weights</th></tr>")
    for m in s.get("models", []):
        w = m.get("weights") or {}
        wtxt = w.get("filename") or w.get("path") or w.get("name") or ""
        parts.append(f"<tr><td>{esc(str(m.get('role', '')))}</td><td>{esc(str(m.get('name', '')))}</td>"
                     f"<td>{esc(str(wtxt))}</td><td>{esc(str(m.get('random_weights', False)))}</td></tr>")
    parts.append("</table>")
    timings = s.get("timings_s", {})
    if timings:
        parts.append("<p class=muted>Timings (s): " + ", ".join(
            f"{esc(k)} {float(v):.2f}" for k, v in timings.items()) + "</p>")
    parts.append("<p class=muted>Files: expressions.csv (per frame), summary.json, timeline.png. "
                 "Made by affectfuse predict.</p></body></html>")
    return "\n".join(parts)


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


def _counts(rows: list[dict]) -> str:
    """"3 report(s): 2 analysed in this run, 1 skipped or from an earlier run" (rows without status: this run)."""
    now = sum(r.get("status", "analysed") == "analysed" for r in rows)
    other = f", {len(rows) - now} skipped or from an earlier run" if len(rows) > now else ""
    return f"{len(rows)} report(s): {now} analysed in this run{other}"


def write_index(out_dir: str | Path, rows: list[dict], failures: list[tuple[str, str]] = (),
                warnings: list[tuple[str, str]] = ()) -> Path:
    """``OUT/index.html``: one row per video (link to its report, top emotion), the failures and the
    warnings (``(video, message)``, e.g. a file analysed in part).

    ``rows``: dicts with ``video_id``, ``video`` (path), ``top_emotion``, ``report`` (relative link, URL-encoded
    here: a video named ``javascript:x.mp4`` or ``a#b?.mp4`` stays a relative link to its own folder), and
    optionally ``label`` (the headline, "uncertain" included; default ``top_emotion``), ``confidence`` (one
    line, :func:`confidence_text`) and ``status`` (e.g. "analysed", "skipped: unchanged", "earlier run").
    """
    from urllib.parse import quote

    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>affectfuse predict</title>",
             f"<style>{_CSS}</style></head><body><h1>affectfuse predict</h1>",
             f"<p>{_counts(rows)}, {len(failures)} failed.</p>",
             "<table><tr><th>video</th><th>label</th><th>how sure</th><th>this run</th><th>file</th></tr>"]
    for r in rows:
        parts.append(f"<tr><td><a href='{esc(quote(r['report'], safe='/'))}'>{esc(r['video_id'])}</a></td>"
                     f"<td>{_badge(r.get('label', r.get('top_emotion')))}</td>"
                     f"<td class=muted>{esc(r.get('confidence', ''))}</td><td class=muted>{esc(r.get('status', ''))}</td>"
                     f"<td class=muted>{esc(str(r.get('video', '')))}</td></tr>")
    parts.append("</table>")
    for title, items in (("Failed", failures), ("Warnings", warnings)):
        if items:
            parts.append(f"<h2>{title}</h2><table><tr><th>video</th><th>message</th></tr>")
            parts += [f"<tr><td>{esc(item)}</td><td>{esc(error)}</td></tr>" for item, error in items]
            parts.append("</table>")
    parts.append("</body></html>")
    path = Path(out_dir) / "index.html"
    write_text_atomic(path, "\n".join(parts))
    return path
