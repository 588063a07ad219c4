"""``affectfuse predict [VIDEO ...]``: videos -> per-frame expressions, voice emotion, a report per video.

With no VIDEO it runs on the sample clip shipped in the package. A VIDEO may be a folder (every media
file inside is taken). Per video, ``OUT/<stem>/`` gets ``expressions.csv``, ``summary.json``,
``timeline.png`` and ``report.html``; ``OUT/index.html`` links them all and ``OUT/failures.csv``
lists the videos that failed (the others still finish; the exit code is then 1) and, as rows whose
error starts with ``warning:``, videos analysed in part (a file read short of its declared duration;
exit code 0, or a failure with ``--strict``). A video whose ``summary.json`` already exists for the
same file is skipped unless ``--overwrite``.

Every output folder is resolved inside ``OUT``: a stem that would leave it (``...mp4`` has the stem
``..``) fails that video with an error naming it. An error of the output itself (disk full, read-only,
no permission under ``OUT``) is not the video's fault: the run stops with one line naming the file
(the top-level error policy, exit code 1) and the videos finished before it stay.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

HELP = "videos -> per-frame expressions, voice emotion, fused top emotion, ERI, HTML report"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".flv", ".m4v", ".mpg", ".mpeg", ".wmv", ".3gp")
log = logging.getLogger(__name__)


def _add(parser, *flags, **kwargs) -> None:
    """Add an option unless the parser already has one of its flags (shared with the feature-set mode)."""
    if any(f in parser._option_string_actions for f in flags):
        return
    parser.add_argument(*flags, **kwargs)


def add_arguments(parser) -> None:
    """Options of the video mode (safe to call on a parser that already has some of them)."""
    if not any(a.dest == "videos" for a in parser._actions):
        parser.add_argument("videos", nargs="*", metavar="VIDEO",
                            help="video files or folders (default: the bundled sample clip)")
    _add(parser, "--out", "-o", default="predict_out", help="output folder (default: ./predict_out)")
    _add(parser, "--fps", type=float, default=None, help="analyse frames at this rate (default: every frame)")
    _add(parser, "--batch-size", type=int, default=32, help="frames per batch (default 32)")
    _add(parser, "--expr-checkpoint", default=None,
         help="an EXPR checkpoint for the per-frame expressions (default: the face-api FaceExpressionNet)")
    _add(parser, "--eri-checkpoint", default=None,
         help="an ERI checkpoint: adds the 7 emotional reaction intensities in [0, 1]")
    _add(parser, "--voice-head", default="default",
         help="voice emotion head: 'default' (bundled EmoDB head), a checkpoint path, or 'none'")
    _add(parser, "--fusion-weights", default=None,
         help="face,voice exponents of the log-linear late fusion (default 0.66,0.34: fitted on the CREMA-D "
              "vote tables, docs/predict.md)")
    _add(parser, "--detect-max-side", type=int, default=320,
         help="run face detection on frames downscaled to this longer side in pixels (default 320; crops "
              "always come from the full frames)")
    _add(parser, "--min-face-size", type=float, default=20.0,
         help="smallest face side to detect, in pixels of the detection frame (default 20; larger is faster)")
    _add(parser, "--detect-fps", type=float, default=8.0,
         help="detect faces at this many frames/s and interpolate landmarks in between (default 8; "
              "0 = detect on every analysed frame)")
    _add(parser, "--thumbnails", type=int, default=6, help="aligned face thumbnails in the report (default 6)")
    _add(parser, "--device", default="cpu", help="torch device (default cpu)")
    _add(parser, "--precision", choices=("fp32", "bf16", "auto"), default="fp32",
         help="face networks' precision: fp32 (default, the reference results), bf16 (faster on CPUs "
              "with AVX512-BF16/AMX and on GPUs; features move slightly), auto (bf16 only on such "
              "hardware and only if the first batch is within cosine 0.9999 of fp32); heads are fp32")
    _add(parser, "--overwrite", action="store_true", help="redo videos whose results already exist")
    _add(parser, "--strict", action="store_true",
         help="a video read short of the duration its container declares (truncated file) fails instead of "
              "being analysed in part with a warning")


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
    from affectfuse.utils import OUTPUT_ERRNOS

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


def run(args) -> int:
    import torch

    from affectfuse.inference.video import PredictOptions, VideoPredictor, sample_clip_path
    from affectfuse.utils import FailureLog, inside

    # 1 intra-op thread by default: measured 2.6x less CPU than 2 under load, equal wall on idle cores
    # (docs/benchmarks.md "End-to-end predict"); AFFECTFUSE_THREADS=N for more
    torch.set_num_threads(max(1, min(int(os.environ.get("AFFECTFUSE_THREADS", 1)), os.cpu_count() or 1)))
    videos = collect_videos(list(args.videos)) if args.videos else [sample_clip_path()]
    if not videos:
        raise FileNotFoundError(f"no video files found in {', '.join(args.videos)}")
    out = Path(args.out or "predict_out")
    out.mkdir(parents=True, exist_ok=True)
    failures = FailureLog(out / "failures.csv")
    failures.rows = _earlier_failures(out / "failures.csv", {str(v) for v in videos})  # kept, marked
    n_kept = len(failures)
    try:
        weights = None if args.fusion_weights is None else tuple(float(w) for w in str(args.fusion_weights).split(","))
        assert weights is None or (len(weights) == 2 and min(weights) >= 0 and sum(weights) > 0)
    except (ValueError, AssertionError):
        raise ValueError(f"--fusion-weights must be two non-negative numbers 'face,voice', got {args.fusion_weights!r}")
    options = PredictOptions(
        fps=args.fps, batch_size=args.batch_size, expr_checkpoint=args.expr_checkpoint,
        eri_checkpoint=args.eri_checkpoint or getattr(args, "checkpoint", None), voice_head=args.voice_head,
        fusion_weights=weights, detect_max_side=args.detect_max_side, min_face_size=args.min_face_size,
        detect_fps=args.detect_fps or None, thumbnails=args.thumbnails, device=args.device,
        precision=getattr(args, "precision", "fp32"), strict=bool(getattr(args, "strict", False)))
    print(f"predict: loading models, then {len(videos)} video(s) -> {out}", file=sys.stderr, flush=True)
    predictor = VideoPredictor(options)  # loads every model once; a bad checkpoint stops here, before any video
    rows, warnings = [], []
    names = output_names(videos)
    for k, (video, name) in enumerate(zip(videos, names), 1):
        try:
            folder = inside(out, name, f"output folder name (from {video.name!r})")
            exists = video.is_file()
            summary = None if args.overwrite or not exists else _done(folder, video)
            status = "skipped: done earlier on the same file (--overwrite redoes it)"
            if summary is None:  # a missing or unreadable file fails in predict with a MediaError naming it
                status = "analysed"
                with VideoProgress(f"[{k}/{len(videos)}] {video.name}") as progress:
                    summary = predictor.predict(video, folder, progress=progress,
                                                extra={"source_file": _fingerprint(video) if exists else None})
            else:
                print(f"[{k}/{len(videos)}] {video}: {status}", file=sys.stderr)
            rows.append(index_row(name, video, summary, status))
            warnings += [(str(video), f"warning: {w}") for w in summary.get("warnings") or []]
        except Exception as exc:  # one bad video never stops the others
            if isinstance(exc, (KeyboardInterrupt, MemoryError)) or is_output_error(exc, out):
                raise
            log.debug("failed on %s", video, exc_info=True)
            failures.add(str(video), exc)
            print(f"failed: {video}: {type(exc).__name__}: {exc}", file=sys.stderr)
    rows += earlier_rows(out, set(names))
    return _finish(out, rows, failures, warnings, len(videos), n_kept)


class VideoProgress:
    """Progress of one video on stderr, in percent of its two passes over the video (face detection, then
    expressions), with the elapsed time and an ETA: a tqdm bar on a terminal, a line every ~10 s otherwise.
    Called by the predictor as ``progress(done_s, total_s, stage)``."""

    STAGES = ("detect", "analyse")

    def __init__(self, desc: str):
        self.desc, self.bar = desc, None

    def __enter__(self) -> "VideoProgress":
        return self

    def __call__(self, done_s: float, total_s: float, stage: str = "analyse") -> None:
        from tqdm import tqdm

        if self.bar is None:
            tty = sys.stderr.isatty()
            self.bar = tqdm(total=100, desc=self.desc, unit="%", file=sys.stderr, mininterval=0.5 if tty else 10.0,
                            bar_format=None if tty else "{desc}: {n:.0f}%, {elapsed} elapsed, ETA {remaining}\n")
        k = self.STAGES.index(stage) if stage in self.STAGES else 1
        pct = 100 * (k + min(1.0, done_s / max(total_s, 1e-6))) / len(self.STAGES)
        self.bar.set_description_str(f"{self.desc} ({stage})", refresh=False)
        self.bar.update(max(0.0, round(pct, 1) - self.bar.n))

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def index_row(name: str, video, summary: dict, status: str) -> dict:
    """One row of ``index.html`` from a video's summary."""
    from affectfuse.outputs.report import confidence_text

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
    import csv

    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [(r["item"], r["error"]) for r in csv.DictReader(fh)]
    except (OSError, ValueError, KeyError):
        return []
    mark = "earlier run: "
    return [(item, err if err.startswith(mark) else mark + err) for item, err in rows if item not in items]


def _finish(out: Path, rows: list[dict], failures, warnings: list[tuple[str, str]], n_videos: int,
            n_kept: int = 0) -> int:
    """Write ``index.html`` and ``failures.csv`` (earlier rows kept, this run's failures, then warnings;
    removed when empty); the exit code (1 when a video of this run failed)."""
    from affectfuse.outputs.report import write_index

    index = write_index(out, rows, list(failures), warnings)
    for row in rows:
        if row.get("status") != "earlier run":
            print(f"{row['video_id']}: {row['label']} ({row['confidence']})  ->  {out / row['report']}")
    n_earlier = sum(r.get("status") == "earlier run" for r in rows)
    print(f"index: {index}" + (f" (also lists {n_earlier} report(s) of earlier runs)" if n_earlier else ""))
    for item, message in warnings:
        print(f"{item}: {message}", file=sys.stderr)
    n_failed = len(failures) - n_kept
    for item, message in warnings:
        failures.add(item, message)
    if len(failures):
        failures.write()
    elif failures.path.exists():
        failures.path.unlink()  # a stale list from an earlier run would mislead
    if n_failed:
        print(f"{n_failed} of {n_videos} video(s) failed; see {failures.path}", file=sys.stderr)
        return 1
    return 0
