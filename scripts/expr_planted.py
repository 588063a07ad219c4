"""Per-frame EXPR on planted Aff-Wild2-layout sets: the model against its built-in per-frame probe.

    python scripts/expr_planted.py check --seeds 0 1 2 --out docs/expr_planted.json
        runs the default command ``affectfuse expr train --features ... --annotations ... --val-annotations ...
        --out RUN`` (no --set) on a planted set per seed (written by ``affectfuse.data.synthetic_affwild2``:
        40 training and 20 validation media files) and prints one row per seed from each run's result.json:
        validation macro F1 of the model (with its chosen smoothing) and of the probe (with its best window).
    python scripts/expr_planted.py tune --seeds 0 1 2 --media 30 60 --folds 3 --config NAME KEY=VALUE ...
        cross-validation across videos (GroupKFold over media files, ``_left``/``_right`` together) of
        training configs on planted sets of several seeds and sizes; prints one JSON line per fold and a
        table of means. ``--config`` may repeat; a config is a name and ``--set``-style overrides.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _media(video_id: str) -> str:
    return video_id.removesuffix("_left").removesuffix("_right")


def _config(overrides: list[str]):
    from affectfuse.training.expr import ExprTrainConfig
    from affectfuse.utils import parse_value

    values: dict = {}
    for item in overrides:
        key, _, text = item.partition("=")
        if key.startswith("model."):
            values.setdefault("model", dict(ExprTrainConfig().model))[key[6:]] = parse_value(text)
        else:
            values[key] = parse_value(text)
    return ExprTrainConfig.from_dict(values)


def tune(args) -> None:
    import torch
    from sklearn.model_selection import GroupKFold

    from affectfuse.data.synthetic_affwild2 import make_affwild2_people, to_expr_videos
    from affectfuse.training.expr import train_expr

    torch.set_num_threads(1)
    configs = [(c[0], c[1:]) for c in args.config] or [("default", [])]
    rows = []
    for n_media in args.media:
        for seed in args.seeds:
            videos = to_expr_videos(make_affwild2_people(n_media, seed=seed))
            groups = np.array([_media(v.id) for v in videos])
            for fold, (tr, va) in enumerate(GroupKFold(args.folds).split(videos, groups=groups)):
                if fold >= args.max_folds:
                    break
                for name, overrides in configs:
                    start = time.perf_counter()
                    run = train_expr([videos[i] for i in tr], [videos[i] for i in va], _config(overrides))
                    row = {"config": name, "media": n_media, "seed": seed, "fold": fold, **run.versus_probe,
                           "best_epoch": run.best_epoch, "seconds": round(time.perf_counter() - start, 1)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print("| config | runs | model macro F1 | probe (best window) | model - probe (min) | model >= probe | "
          "kept the start (= probe) |")
    print("|---|---|---|---|---|---|---|")
    for name, _ in configs:
        mine = [r for r in rows if r["config"] == name]
        diff = np.array([r["model_minus_probe"] for r in mine])
        print(f"| {name} | {len(mine)} | {np.mean([r['model'] for r in mine]):.3f} | "
              f"{np.mean([r['probe'] for r in mine]):.3f} | {diff.mean():+.3f} ({diff.min():+.3f}) | "
              f"{int((diff >= 0).sum())}/{len(mine)} | {sum(r['best_epoch'] == 0 for r in mine)}/{len(mine)} |")


def check(args) -> None:
    from affectfuse.cli import main
    from affectfuse.data.synthetic_affwild2 import make_affwild2_dataset

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            data = make_affwild2_dataset(Path(tmp) / f"set{seed}", n_train=40, n_val=20, seed=seed)
            run = Path(tmp) / f"run{seed}"
            argv = ["expr", "train", "--features", *map(str, data["features"]), "--annotations", str(data["train"]),
                    "--val-annotations", str(data["val"]), "--out", str(run)]
            start = time.perf_counter()
            if main(argv) != 0:
                raise SystemExit(f"seed {seed}: affectfuse {' '.join(argv)} failed")
            result = json.loads((run / "result.json").read_text())
            rows.append({"seed": seed, **result["versus_probe"], "best_epoch": result["best_epoch"],
                         "probe_unsmoothed": round(result["probe"]["unsmoothed_macro_f1"], 4),
                         "seconds": round(time.perf_counter() - start, 1)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print("| seed | model (smoothing) | probe per frame | probe (best window) | model - probe |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['model']:.3f} ({r['model_smoothing']}) | {r['probe_unsmoothed']:.3f} | "
              f"{r['probe']:.3f} ({r['probe_smoothing']}) | {r['model_minus_probe']:+.3f} |")
    if args.out:
        from affectfuse.utils import write_json_atomic

        write_json_atomic(args.out, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("check")
    c.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    c.add_argument("--out")
    t = sub.add_parser("tune")
    t.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    t.add_argument("--media", type=int, nargs="+", default=[30, 60])
    t.add_argument("--folds", type=int, default=3)
    t.add_argument("--max-folds", type=int, default=1, help="folds run per set (the rest skipped, for time)")
    t.add_argument("--config", nargs="+", action="append", default=[], metavar="NAME [KEY=VALUE ...]")
    args = parser.parse_args()
    (check if args.mode == "check" else tune)(args)


if __name__ == "__main__":
    main()
