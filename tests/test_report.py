"""Report writers: CSV columns and values, timeline PNG, self-contained HTML, index page."""

import base64
import csv
import json
import re

import numpy as np

from affectfuse.labels import EXPR_CLASSES, EXPR_SCALE
from affectfuse.outputs.report import VideoReport, _spans, render_html, write_index, write_video_report


def _report(found=None, voice=True) -> VideoReport:
    rng = np.random.default_rng(0)
    t = 12
    probs = rng.dirichlet(np.ones(8), size=t)
    found = np.ones(t, bool) if found is None else np.asarray(found)
    crop = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
    summary = {"video": "x.mp4", "top_emotion": "Anger",
               "expressions": {"classes": list(EXPR_CLASSES), "scale": EXPR_SCALE,
                               "mean_probabilities": dict(zip(EXPR_CLASSES, probs.mean(0).tolist())),
                               "frames": t, "face_found_frames": int(found.sum())},
               "fused": {"probabilities": {"Anger": 0.7, "Neutral": 0.3}, "rule_short": "mean"},
               "eri": {"intensities": {"Adoration": 0.25, "Fear": 1.0}, "scale": "[0, 1]"},
               "models": [{"role": "face", "name": "net", "weights": {"filename": "w.bin"}, "random_weights": True}],
               "timings_s": {"decode": 0.1}}
    return VideoReport(
        video_id="clip<1>", frame_numbers=np.arange(1, t + 1), timestamps=np.arange(t) / 10.0,
        face_found=found, probs=probs, class_names=EXPR_CLASSES, summary=summary,
        voice_times=np.array([[0.0, 1.0], [0.5, 1.1]]) if voice else None,
        voice_probs=rng.dirichlet(np.ones(8), size=2) if voice else None,
        voice_class_names=EXPR_CLASSES if voice else (), thumbnails=[(0.3, "Anger", crop)])


def test_write_video_report_files_and_columns(tmp_path):
    found = np.ones(12, bool)
    found[3:6] = False
    report = _report(found)
    paths = write_video_report(tmp_path / "v", report)
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == sorted(
        ["expressions.csv", "summary.json", "timeline.png", "report.html"])
    rows = list(csv.reader(open(paths["expressions.csv"])))
    assert rows[0] == ["frame", "time_s", "face_found", *EXPR_CLASSES]
    assert len(rows) == 13
    assert rows[4][2] == "0" and rows[4][3:] == [""] * 8  # frame 4: no face -> empty probabilities
    vals = np.array([[float(v) for v in r[3:]] for r in rows[1:] if r[2] == "1"])
    np.testing.assert_allclose(vals, report.probs[found], atol=6e-5)
    assert paths["timeline.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(paths["summary.json"].read_text())
    assert summary["top_emotion"] == "Anger" and summary["files"]["report.html"] == "report.html"


def test_html_is_self_contained_and_escaped():
    report = _report()
    page = render_html(report, b"\x89PNG fake")
    assert "clip&lt;1&gt;" in page and "clip<1>" not in page  # names are escaped
    assert not re.search(r"(src|href)=['\"](?!data:)", page)  # no external file referenced
    imgs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(imgs) == 2 and base64.b64decode(imgs[0]) == b"\x89PNG fake"
    for name in ("Adoration", "Fear", "Happiness", "w.bin"):
        assert name in page


def test_no_face_report_renders(tmp_path):
    report = _report(np.zeros(12, bool), voice=False)
    report.thumbnails = []
    paths = write_video_report(tmp_path, report)
    rows = list(csv.reader(open(paths["expressions.csv"])))
    assert {r[2] for r in rows[1:]} == {"0"}
    assert "<html>" in paths["report.html"].read_text()


def test_spans_of_missing_faces():
    t = np.arange(6) * 0.1
    spans = _spans(np.array([True, True, False, False, True, True]), t)
    assert len(spans) == 2
    np.testing.assert_allclose(spans[0], (-0.05, 0.15))
    np.testing.assert_allclose(spans[1], (0.35, 0.55))
    assert _spans(np.zeros(6, bool), t) == []


def test_index_links_reports_and_lists_failures(tmp_path):
    path = write_index(tmp_path, [{"video_id": "a", "video": "a.mp4", "top_emotion": "Sadness",
                                   "report": "a/report.html"}], [("bad.mp4", "MediaError: broken")])
    page = path.read_text()
    assert "href='a/report.html'" in page and "bad.mp4" in page and "MediaError: broken" in page
