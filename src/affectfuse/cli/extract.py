"""``affectfuse extract``: videos / audio -> one feature set per extractor (see affectfuse.features.pipeline)."""

from __future__ import annotations

import argparse
import inspect
import sys

HELP = "extract audio and face features from videos (one decoding pass, batched, resumable)"
DEFAULT_EXTRACTORS = "deepspectrum-mobilenetv2,egemaps,faceexpressionnet"
AUDIO_OPTIONS = ("sample_rate", "window_s", "hop_s")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", nargs="+", metavar="INPUT",
                   help="one or more: folders of videos / audio / image files and frame folders (recursive), "
                        "media files, frame folders, or CSVs (column 'path' [+ 'id'], or ABAW5 data_info.csv "
                        "with File_ID)")
    p.add_argument("--extractors", default=DEFAULT_EXTRACTORS,
                   help=f"comma-separated extractor names (default {DEFAULT_EXTRACTORS}); "
                        "see `python -c 'import affectfuse.features as f; print(f.list_extractors())'`")
    p.add_argument("--out", required=True, help="FEATS_ROOT: one folder per extractor is written here")
    p.add_argument("--fps", type=float, default=5.0, help="face frames sampled per second (0 = every frame)")
    p.add_argument("--frame-rate", type=float, default=30.0,
                   help="frame rate of frame folders (cropped_aligned/<video>/00001.jpg ...), for their timestamps")
    p.add_argument("--window", type=float, default=1.0, help="audio window in seconds (default 1.0)")
    p.add_argument("--hop", type=float, default=0.5, help="audio hop in seconds (default 0.5)")
    p.add_argument("--sample-rate", type=int, default=16000, help="audio is resampled to this rate (Hz)")
    p.add_argument("--batch-size", type=int, default=32, help="inputs per network call, filled across videos")
    p.add_argument("--workers", type=int, default=0, help="decoding processes (0 = decode in this process)")
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
    from affectfuse.cluster import add_extract_arguments

    add_extract_arguments(p)


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


def build_extractors(names: list[str], weights: dict[str, str] | None = None, random_weights: bool = False,
                     device: str = "cpu", **audio_options):
    """Create the named extractors; options (audio: sample_rate, window_s, hop_s; face networks: precision) go
    to the factories taking them."""
    from affectfuse.features.registry import EXTRACTORS, create_extractor
    from affectfuse.weights import WeightsNotFoundError

    import importlib

    out = []
    for name in names:
        if name not in EXTRACTORS:
            raise ValueError(f"unknown extractor {name!r}; valid: {', '.join(EXTRACTORS)}")
        module, factory = EXTRACTORS[name].split(":")
        params = inspect.signature(getattr(importlib.import_module(module), factory)).parameters
        options = {k: v for k, v in audio_options.items() if k in params and v is not None}
        try:
            out.append(create_extractor(name, weights=(weights or {}).get(name), random_weights=random_weights,
                                        device=device, **options))
        except WeightsNotFoundError as exc:
            raise WeightsNotFoundError(f"{exc}\nFor `affectfuse extract`, name the file per extractor: "
                                       f"--weights {name}=/path/to/the/file") from None
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from affectfuse.faces.crop_cache import default_cache_dir
    from affectfuse.features.pipeline import extract, find_inputs

    names = [n.strip() for n in args.extractors.split(",") if n.strip()]
    if not names:
        raise ValueError("--extractors is empty")
    if args.random_weights:
        print("WARNING: --random-weights: features are NOT pretrained (testing only)", file=sys.stderr)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 8)))
    items = [item for given in args.input for item in find_inputs(given, args.media_dir)]
    if getattr(args, "ray", None) is not None:
        from affectfuse.cluster.ray_extract import run_cli

        return run_cli(args, items, names, parse_weights(args.weights, names))
    extractors = build_extractors(names, parse_weights(args.weights, names), args.random_weights, args.device,
                                  sample_rate=args.sample_rate, window_s=args.window, hop_s=args.hop,
                                  precision=args.precision)
    report = extract(items, extractors, args.out, fps=args.fps or None, batch_size=args.batch_size,
                     workers=args.workers, keep=args.keep, progress=not args.no_progress, frame_rate=args.frame_rate,
                     strict=args.strict, crop_cache=None if args.no_crop_cache else (
                         args.crop_cache or default_cache_dir()))
    done = {n: len(v) for n, v in report.written.items()}
    notes = f", {len(report.busy)} left to another run working on them" if report.busy else ""
    notes += f", {len(report.warnings)} partial-media warning(s)" if report.warnings else ""
    skips = report.not_applicable
    if skips:
        reasons = sorted({why.split(" (")[0] for _, _, why in skips})
        notes += (f", {len(skips)} (input, extractor) pair(s) skipped ({', '.join(reasons)}; "
                  f"see {report.out_root / 'skipped.csv'})")
    print(f"{len(items)} inputs: written {done}, {len(report.skipped)} already done{notes}, "
          f"{len(report.failures)} failures" + (f" (see {report.out_root / 'failures.csv'})" if report.failures else ""))
    return 0 if report.ok else 1
