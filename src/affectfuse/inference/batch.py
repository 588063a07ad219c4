"""Many videos into one folder of reports (what ``affectfuse predict VIDEO...`` runs): one sub-folder per video,
``index.html`` linking every report (earlier runs' too), ``failures.csv``; a video done earlier on the same file
is skipped unless ``overwrite``; one bad video never stops the others, but an error of the output itself (disk
full, read-only, no permission under ``out``) stops the run, since it would fail every other video too.

Presentation stays with the caller: ``progress(k, n, video)`` gives the progress callback of one video (a context
manager, called as ``(done_s, total_s, stage)``) and ``say(line)`` receives the per-video status lines.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from affectfuse.outputs.report import confidence_text, write_index
from affectfuse.utils import OUTPUT_ERRNOS, FailureLog, inside

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".flv", ".m4v", ".mpg", ".mpeg", ".wmv", ".3gp")
log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    """What a batch wrote: index rows (this run's, then earlier runs'), this run's failures and partial-media
    warnings as ``(video, message)``, ``index.html`` and ``failures.csv`` (None when nothing failed)."""

    out: Path
    rows: list[dict]
    failures: list[tuple[str, str]]
    warnings: list[tuple[str, str]]
    index: Path
    failures_csv: Path | None = None
    n_videos: int = 0
    earlier: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures


def collect_videos(items: list[str]) -> list[Path]:
    """Expand folders into their media files (sorted); files are taken as given (checked later)."""
    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        else:
            out.append(path)
    return out


def output_names(videos: list[Path]) -> list[str]:
    """One distinct folder name per video: the stem, else ``<stem>_2``, ``<stem>_3`` ... (the first unused)."""
    used = {v.stem or "video" for v in videos}
    taken: set[str] = set()
    names = []
    for v in videos:
        name, k = v.stem or "video", 1
        while name in taken or (k > 1 and name in used):
            k += 1
            name = f"{v.stem or 'video'}_{k}"
        taken.add(name)
        names.append(name)
    return names


def is_output_error(exc: BaseException, out: Path) -> bool:
    """True for an ``OSError`` of the output: disk full / quota / read-only anywhere, or any error on a file
    under ``out`` (permission ...). Such an error would fail every other video too: the run stops."""
    if not isinstance(exc, OSError):
        return False
    if exc.errno in OUTPUT_ERRNOS:
        return True
    try:
        return bool(exc.filename) and Path(exc.filename).resolve().is_relative_to(out.resolve())
    except (OSError, ValueError, TypeError):
        return False


def _fingerprint(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "bytes": st.st_size, "mtime": int(st.st_mtime)}


def _done(folder: Path, video: Path) -> dict | None:
    """The summary of a finished earlier run on the same file, else None."""
    summary_path = folder / "summary.json"
    if not summary_path.is_file() or not (folder / "report.html").is_file():
        return None
    try:
        summary = json.loads(summary_path.read_text())
        return summary if summary.get("source_file") == _fingerprint(video) else None
    except (OSError, ValueError):
        return None


def index_row(name: str, video, summary: dict, status: str) -> dict:
    """One row of ``index.html`` from a video's summary."""
    return {"video_id": name, "video": str(video), "top_emotion": summary.get("top_emotion"),
            "label": summary.get("label", summary.get("top_emotion")), "confidence": confidence_text(summary),
            "status": status, "report": f"{name}/report.html"}


def earlier_rows(out: Path, names: set[str]) -> list[dict]:
    """Index rows of reports an earlier run left in ``out`` for videos that are not in this run."""
    rows = []
    for path in sorted(out.glob("*/summary.json")):
        if path.parent.name in names or not (path.parent / "report.html").is_file():
            continue
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        rows.append(index_row(path.parent.name, summary.get("video", ""), summary, "earlier run"))
    return rows


def _earlier_failures(path: Path, items: set[str]) -> list[tuple[str, str]]:
    """Rows of an earlier ``failures.csv`` about videos this run does not retry, marked as earlier."""
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [(r["item"], r["error"]) for r in csv.DictReader(fh)]
    except (OSError, ValueError, KeyError):
        return []
    mark = "earlier run: "
    return [(item, err if err.startswith(mark) else mark + err) for item, err in rows if item not in items]


def predict_videos(videos: Sequence[Path], out: str | Path, predictor, overwrite: bool = False,
                   progress: Callable | None = None, say: Callable[[str], None] | None = None) -> BatchResult:
    """Run ``predictor`` (an :class:`~affectfuse.inference.video.VideoPredictor`, models loaded once) on every
    video into ``out/<name>/`` (names from :func:`output_names`), then write ``index.html`` and ``failures.csv``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = say or (lambda line: None)
    failures = FailureLog(out / "failures.csv")
    failures.rows = _earlier_failures(out / "failures.csv", {str(v) for v in videos})  # kept, marked
    n_kept = len(failures)
    rows, warnings = [], []
    names = output_names(list(videos))
    for k, (video, name) in enumerate(zip(videos, names), 1):
        try:
            folder = inside(out, name, f"output folder name (from {video.name!r})")
            exists = video.is_file()
            summary = None if overwrite or not exists else _done(folder, video)
            status = "skipped: done earlier on the same file (--overwrite redoes it)"
            if summary is None:  # a missing or unreadable file fails in predict with a MediaError naming it
                status = "analysed"
                with (progress(k, len(videos), video) if progress else contextlib.nullcontext()) as callback:
                    summary = predictor.predict(video, folder, progress=callback,
                                                extra={"source_file": _fingerprint(video) if exists else None})
            else:
                say(f"[{k}/{len(videos)}] {video}: {status}")
            rows.append(index_row(name, video, summary, status))
            warnings += [(str(video), f"warning: {w}") for w in summary.get("warnings") or []]
        except Exception as exc:  # one bad video never stops the others
            if isinstance(exc, (KeyboardInterrupt, MemoryError)) or is_output_error(exc, out):
                raise
            log.debug("failed on %s", video, exc_info=True)
            failures.add(str(video), exc)
            say(f"failed: {video}: {type(exc).__name__}: {exc}")
    rows += earlier_rows(out, set(names))
    return _finish(out, rows, failures, warnings, len(videos), n_kept)


def _finish(out: Path, rows: list[dict], failures: FailureLog, warnings: list[tuple[str, str]], n_videos: int,
            n_kept: int) -> BatchResult:
    """Write ``index.html`` and ``failures.csv`` (earlier rows kept, this run's failures, then warnings;
    removed when empty: a stale list from an earlier run would mislead)."""
    index = write_index(out, rows, list(failures), warnings)
    this_run = list(failures)[n_kept:]
    for item, message in warnings:
        failures.add(item, message)
    if len(failures):
        failures.write()
    elif failures.path.exists():
        failures.path.unlink()
    return BatchResult(out, rows, this_run, warnings, index, failures.path if len(failures) else None, n_videos,
                       sum(r.get("status") == "earlier run" for r in rows))
