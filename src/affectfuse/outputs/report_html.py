"""The HTML pages of ``affectfuse predict``: one self-contained ``report.html`` per video (plot, tables and
face thumbnails inlined as base64) and ``OUT/index.html`` linking every report.

Split from :mod:`affectfuse.outputs.report`, which writes the other files and calls :func:`render_html`.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from affectfuse.inference.confidence import SMOOTH_S, UNCERTAIN, floor2
from affectfuse.utils import write_text_atomic

# One colour per ABAW expression class, used by the plot and the HTML so both read alike.
CLASS_COLOURS = {
    "Neutral": "#7f7f7f", "Anger": "#d62728", "Disgust": "#8c564b", "Fear": "#9467bd",
    "Happiness": "#ff7f0e", "Sadness": "#1f77b4", "Surprise": "#2ca02c", "Other": "#bcbd22",
}


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


def render_html(report, timeline_png: bytes | None) -> str:
    """The self-contained report page (no external files): plot, tables, face thumbnails.

    ``report``: an :class:`affectfuse.outputs.report.VideoReport` (not imported here: that module imports this one).
    """
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
