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
(the top-level error policy, exit code 1) and the videos finished before it stay. The loop, the skipping
and the index: :mod:`affectfuse.inference.batch`; this module parses the options and prints.
"""

from __future__ import annotations

import sys
from pathlib import Path

HELP = "videos -> per-frame expressions, voice emotion, fused top emotion, ERI, HTML report"


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
         help="detect faces at up to this many frames/s (half as often where the faces hold still) and "
              "interpolate landmarks in between (default 8; 0 = detect on every analysed frame)")
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


def run(args) -> int:
    import torch

    from affectfuse.inference.batch import collect_videos, predict_videos
    from affectfuse.inference.video import PredictOptions, VideoPredictor, sample_clip_path
    from affectfuse.utils import intra_op_threads

    torch.set_num_threads(intra_op_threads())  # 1 unless AFFECTFUSE_THREADS says otherwise
    videos = collect_videos(list(args.videos)) if args.videos else [sample_clip_path()]
    if not videos:
        raise FileNotFoundError(f"no video files found in {', '.join(args.videos)}")
    out = Path(args.out or "predict_out")
    options = PredictOptions(
        fps=args.fps, batch_size=args.batch_size, expr_checkpoint=args.expr_checkpoint,
        eri_checkpoint=args.eri_checkpoint or getattr(args, "checkpoint", None), voice_head=args.voice_head,
        fusion_weights=fusion_weights(args.fusion_weights), detect_max_side=args.detect_max_side,
        min_face_size=args.min_face_size, detect_fps=args.detect_fps or None, thumbnails=args.thumbnails,
        device=args.device, precision=getattr(args, "precision", "fp32"), strict=bool(getattr(args, "strict", False)))
    print(f"predict: loading models, then {len(videos)} video(s) -> {out}", file=sys.stderr, flush=True)
    predictor = VideoPredictor(options)  # loads every model once; a bad checkpoint stops here, before any video
    result = predict_videos(videos, out, predictor, overwrite=args.overwrite,
                            progress=lambda k, n, video: VideoProgress(f"[{k}/{n}] {video.name}"),
                            say=lambda line: print(line, file=sys.stderr))
    for row in result.rows:
        if row.get("status") != "earlier run":
            print(f"{row['video_id']}: {row['label']} ({row['confidence']})  ->  {out / row['report']}")
    also = f" (also lists {result.earlier} report(s) of earlier runs)" if result.earlier else ""
    print(f"index: {result.index}{also}")
    for item, message in result.warnings:
        print(f"{item}: {message}", file=sys.stderr)
    if result.failures:
        print(f"{len(result.failures)} of {result.n_videos} video(s) failed; see {result.failures_csv}",
              file=sys.stderr)
        return 1
    return 0


def fusion_weights(text: str | None) -> tuple[float, float] | None:
    """``'face,voice'`` -> two non-negative weights with a positive sum (None: chosen from the data)."""
    if text is None:
        return None
    try:
        weights = tuple(float(w) for w in str(text).split(","))
    except ValueError:
        weights = ()
    if len(weights) != 2 or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"--fusion-weights must be two non-negative numbers 'face,voice', got {text!r}")
    return weights


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
