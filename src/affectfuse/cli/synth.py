"""``affectfuse synth``: write a synthetic Hume-Reaction-like ERI dataset with a planted signal.

    affectfuse synth OUT [--videos N] [--audio-dim 1024] [--visual-dim 1536] [--signal planted|shuffled] [--seed 0]

Writes ``OUT/data_info.csv`` (ABAW5 format) and ``OUT/features/{audio,visual}/`` (feature store), ready
for ``affectfuse train --table OUT/data_info.csv``. How the signal is planted: ``affectfuse.data.synthetic``.

    affectfuse synth OUT --layout affwild2 [--videos 60] [--seed 0]

writes a planted per-frame EXPR set in the Aff-Wild2 layout instead (``OUT/annotations/{Train,Validation}_Set``,
``OUT/features/face_{a,b}``; two thirds of the media files train): ``affectfuse.data.synthetic_affwild2``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "write a synthetic ERI dataset (data_info.csv + audio/visual feature sets) with a planted signal"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, metavar="OUT", help="output folder")
    parser.add_argument("--layout", choices=("eri", "affwild2"), default="eri",
                        help="eri: Hume-Reaction-like per-video intensities (default); affwild2: per-frame EXPR "
                             "classes in the Aff-Wild2 layout (--videos = media files)")
    parser.add_argument("--videos", type=int, default=200, help="number of videos (default 200)")
    parser.add_argument("--audio-dim", type=int, default=1024, help="audio feature dim (DeepSpectrum: 1024)")
    parser.add_argument("--visual-dim", type=int, default=1536, help="visual feature dim (PosterV2+ViT: 1536)")
    parser.add_argument("--audio-steps", type=int, default=30, help="rows per video, audio (default 30)")
    parser.add_argument("--visual-steps", type=int, default=30, help="rows per video, visual (default 30)")
    parser.add_argument("--signal", choices=("planted", "shuffled"), default="planted",
                        help="'planted': labels follow the features; 'shuffled': label rows permuted (no signal)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=0.5, help="std of the i.i.d. feature noise (default 0.5)")
    parser.add_argument("--time-course", choices=("mixed", "burst_spread"), default="mixed",
                        help="'mixed': sustained level + reaction bump; 'burst_spread': audio drives in a short "
                             "burst, visual drives spread weakly over every step")
    parser.add_argument("--label-test", action="store_true", help="also write labels of the Test rows")


def run(args: argparse.Namespace) -> int:
    from affectfuse.data.synthetic import make_eri_dataset

    if args.layout == "affwild2":
        return _affwild2(args)
    if args.videos < 3:
        raise ValueError(f"--videos {args.videos}: need at least 3 videos (train, val and test)")
    for name in ("audio_dim", "visual_dim", "audio_steps", "visual_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    data_info = make_eri_dataset(
        args.out, n_videos=args.videos, dims={"audio": args.audio_dim, "visual": args.visual_dim},
        steps={"audio": args.audio_steps, "visual": args.visual_steps}, signal=args.signal, seed=args.seed,
        noise=args.noise, label_test=args.label_test, time_course=args.time_course)
    print(json.dumps({"data_info": str(data_info), "features": str(Path(args.out) / "features"),
                      "videos": args.videos, "signal": args.signal, "seed": args.seed}))
    return 0


def _affwild2(args) -> int:
    from affectfuse.data.synthetic_affwild2 import make_affwild2_dataset

    if args.videos < 2:
        raise ValueError(f"--videos {args.videos}: need at least 2 media files (train and validation)")
    n_train = max(1, round(args.videos * 2 / 3))
    paths = make_affwild2_dataset(args.out, n_train=n_train, n_val=args.videos - n_train, seed=args.seed)
    print(json.dumps({"train": str(paths["train"]), "val": str(paths["val"]),
                      "features": [str(p) for p in paths["features"]], "seed": args.seed}))
    return 0
