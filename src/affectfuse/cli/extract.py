"""``affectfuse extract``: videos / audio -> one feature set per extractor (see affectfuse.features.pipeline)."""

from __future__ import annotations

import argparse
import sys

from affectfuse.features.registry import VIDEO_EXTRACTORS  # plain strings (registry entries import lazily)

HELP = "extract audio and face features from videos (one decoding pass, batched, resumable)"
DEFAULT_EXTRACTORS = ",".join(VIDEO_EXTRACTORS)   # videos' default; audio files and photos have their own
AUDIO_OPTIONS = ("sample_rate", "window_s", "hop_s")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from affectfuse.features.registry import AUDIO_EXTRACTORS, PHOTO_EXTRACTORS  # plain strings: light
    p.add_argument("input", nargs="+", metavar="INPUT",
                   help="one or more: folders of videos / audio / image files and frame folders (recursive), "
                        "media files, frame folders, or CSVs (column 'path' [+ 'id'], or ABAW5 data_info.csv "
                        "with File_ID)")
    p.add_argument("--extractors", default=None,
                   help=f"comma-separated extractor names (default per kind of input: videos "
                        f"{DEFAULT_EXTRACTORS}; audio files {','.join(AUDIO_EXTRACTORS)}; photos "
                        f"{','.join(PHOTO_EXTRACTORS)}; each kind present adds its own); "
                        "see `python -c 'import affectfuse.features as f; print(f.list_extractors())'`")
    p.add_argument("--out", required=True, help="FEATS_ROOT: one folder per extractor is written here")
    p.add_argument("--fps", type=float, default=5.0, help="face frames sampled per second (0 = every frame)")
    from affectfuse.faces.sparse import DETECT_FPS, DETECT_MAX_SIDE  # numpy only: the parser stays light

    p.add_argument("--detect-fps", type=float, default=DETECT_FPS,
                   help=f"videos: detect faces at up to this many frames/s (half as often where the faces hold still) "
                        f"and interpolate landmarks in between (default {DETECT_FPS:g}; 0 = every sampled frame; "
                        f"docs/benchmarks.md)")
    p.add_argument("--detect-max-side", type=int, default=DETECT_MAX_SIDE,
                   help=f"videos: detect on copies downscaled to this longer side in pixels; crops come from the "
                        f"full frames (default {DETECT_MAX_SIDE}; 0 = full size)")
    p.add_argument("--frame-rate", type=float, default=30.0,
                   help="frame rate of frame folders (cropped_aligned/<video>/00001.jpg ...), for their timestamps")
    p.add_argument("--window", type=float, default=None,
                   help="audio window in seconds (default: each extractor's own: 1.0 for deepspectrum and egemaps, "
                        "4.0 for compare-2016, whose functionals describe a whole short utterance; docs/speech.md)")
    p.add_argument("--hop", type=float, default=None,
                   help="audio hop in seconds (default: each extractor's own: 0.5 for deepspectrum and egemaps, "
                        "2.0 for compare-2016)")
    p.add_argument("--sample-rate", type=int, default=16000, help="audio is resampled to this rate (Hz)")
    p.add_argument("--batch-size", type=int, default=32, help="inputs per network call, filled across videos")
    p.add_argument("--workers", type=int, default=None,
                   help="decoding processes beside the main one, which decodes too whenever no worker's video is "
                        "ready (0 = decode in the main process only; default: one per other core, at most one "
                        "per 8 videos)")
    p.add_argument("--weights", action="append", default=[], metavar="NAME=PATH",
                   help="weights file for extractor NAME (repeatable)")
    p.add_argument("--random-weights", action="store_true",
                   help="TESTING ONLY: random network weights (recorded in meta.json as random_weights)")
    p.add_argument("--media-dir", default=None, help="folder of the videos named by a CSV (default: its folder)")
    p.add_argument("--keep", choices=("main",), default="main", help="faces kept per frame")
    p.add_argument("--device", default="cpu", help="torch device for the networks")
    p.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                   help="face networks' precision: fp32 (default, the reference results), bf16 (faster on CPUs "
                        "with AVX512-BF16/AMX and on GPUs; features move slightly), auto (bf16 only on such "
                        "hardware and only if the first batch is within cosine 0.9999 of fp32); heads are fp32")
    p.add_argument("--crop-cache", default=None, metavar="DIR",
                   help="face-crop cache for photos, shared with `affectfuse finetune` (default: $AFFECTFUSE_CACHE_DIR/"
                        "face_crops or ~/.cache/affectfuse/face_crops): cached photos are not detected again")
    p.add_argument("--no-crop-cache", action="store_true", help="neither read nor write the face-crop cache")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--strict", action="store_true",
                   help="a file read short of the duration its container declares (truncated) fails instead of "
                        "being extracted in part with a warning in failures.csv")
    g = p.add_argument_group("Ray cluster (affectfuse[ray], docs/cluster.md)")
    g.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="process videos on Ray actors; ADDRESS of a running cluster ('auto', 'host:6379', "
                        "'ray://host:10001'); without ADDRESS: RAY_ADDRESS or a local cluster")
    g.add_argument("--ray-workers", type=int, default=None,
                   help="actors (default: cluster CPUs / --cpus-per-worker, or GPUs / --gpus-per-worker)")
    g.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs per actor (also its torch threads)")
    g.add_argument("--gpus-per-worker", type=float, default=None,
                   help="GPUs per actor (default: 1 when the cluster has GPUs, else 0); an actor given a GPU "
                        "runs its networks on cuda")
    g.add_argument("--max-attempts", type=int, default=3,
                   help="worker deaths a video may cause before it is recorded in failures.csv")


def parse_weights(values: list[str], names: list[str]) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not path:
            raise ValueError(f"--weights expects NAME=PATH, got {value!r}")
        if name not in names:
            raise ValueError(f"--weights {value!r}: {name!r} is not among the extractors {', '.join(names)}")
        out[name] = path
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from affectfuse.faces.crop_cache import default_cache_dir
    from affectfuse.features.build import build_extractors
    from affectfuse.features.pipeline import extract, find_inputs
    from affectfuse.features.registry import extractor_plan
    from affectfuse.utils import intra_op_threads

    if args.random_weights:
        print("WARNING: --random-weights: features are NOT pretrained (testing only)", file=sys.stderr)
    torch.set_num_threads(intra_op_threads())  # 1 unless AFFECTFUSE_THREADS says otherwise: cores go to --workers
    items = [item for given in args.input for item in find_inputs(given, args.media_dir)]
    names, views = extractor_plan(args.extractors, items)   # views: the photo default's test-time views
    weights = parse_weights(args.weights, names)
    options = {"sample_rate": args.sample_rate, "window_s": args.window, "hop_s": args.hop, "precision": args.precision}
    decoding = {"frame_rate": args.frame_rate, "strict": args.strict,
                "crop_cache": None if args.no_crop_cache else str(args.crop_cache or default_cache_dir()),
                "detect_fps": args.detect_fps or None, "detect_max_side": args.detect_max_side or None}
    if args.ray is not None:
        report = _ray(args, items, names, weights, options, views, decoding)
    else:
        extractors = build_extractors(names, weights, args.random_weights, args.device, per_name=views, **options)
        report = extract(items, extractors, args.out, fps=args.fps or None, batch_size=args.batch_size,
                         workers=args.workers, keep=args.keep, progress=not args.no_progress, **decoding)
    print(report_line(report, len(items)))
    return 0 if report.ok else 1


def _ray(args, items, names, weights, options, per_name, decoding):
    """``extract --ray``: the same extraction on Ray actors (:func:`affectfuse.cluster.ray_extract.ray_extract`):
    the same extractors (``per_name``: the photo default's views) and decoding options as without ``--ray``."""
    from affectfuse.cluster import require_ray
    from affectfuse.cluster.ray_extract import WorkerSpec, ray_extract

    require_ray()
    spec = WorkerSpec(str(args.out), tuple(names), weights, args.random_weights, args.device, options,
                      args.fps or None, args.batch_size, args.keep, max(1, int(args.cpus_per_worker)),
                      per_name, decoding)
    return ray_extract(items, spec, args.ray_workers, args.cpus_per_worker, args.gpus_per_worker,
                       args.max_attempts, address=args.ray or None, progress=not args.no_progress)


def report_line(report, n_inputs: int) -> str:
    """The one summary line of an :class:`~affectfuse.features.pipeline.ExtractReport`."""
    done = {n: len(v) for n, v in report.written.items()}
    notes = f", {len(report.busy)} left to another run working on them" if report.busy else ""
    notes += f", {len(report.warnings)} partial-media warning(s)" if report.warnings else ""
    skips = report.not_applicable
    if skips:
        reasons = sorted({why.split(" (")[0] for _, _, why in skips})
        notes += (f", {len(skips)} (input, extractor) pair(s) skipped ({', '.join(reasons)}; "
                  f"see {report.out_root / 'skipped.csv'})")
    failures = f" (see {report.out_root / 'failures.csv'})" if report.failures else ""
    return (f"{n_inputs} inputs: written {done}, {len(report.skipped)} already done{notes}, "
            f"{len(report.failures)} failures{failures}")
