"""Per-frame EXPR on planted Aff-Wild2-layout sets: the model against its built-in per-frame probe.

    python scripts/expr_planted.py check --seeds 100 101 102 [--run-median 15 --identity 0.5 --amplitude 1.5]
        runs the default command ``affectfuse expr train --features ... --annotations ... --val-annotations ...
        --out RUN`` (no --set) on a planted set per seed (written by ``affectfuse.data.synthetic_affwild2``:
        40 training and 20 validation media files, generator settings as given) and prints one row per seed:
        validation macro F1 of the model (with its chosen smoothing or decoder) and of the probe (with its best
        window) from the run's result.json, and the same two on a test set neither saw (``--test-media`` media
        files of seed + 1000): the model through ``affectfuse expr evaluate`` (its stored smoothing / decoder),
        the probe refitted as in the run and smoothed with its stored window.
    python scripts/expr_planted.py levers --seeds 10 11 --media 45
        the probe-level table of the temporal levers (cheap: no transformer): per planted set, one fold of a
        3-fold GroupKFold over media files; the per-frame probe on raw and on per-video centred frames, each
        with its best window and with the HMM decoder (both chosen on the fold's validation videos).
    python scripts/expr_planted.py clips --seeds 21 22
        what per-video centring (raw, and shrinkage priors 0 / 50 / 150 / 300 frames) costs on short clips of one
        expression: the probe fitted on long planted videos, each 60-90-frame clip classified by its mean frame.
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
          "kept the start (epoch 0) |")
    print("|---|---|---|---|---|---|---|")
    for name, _ in configs:
        mine = [r for r in rows if r["config"] == name]
        diff = np.array([r["model_minus_probe"] for r in mine])
        print(f"| {name} | {len(mine)} | {np.mean([r['model'] for r in mine]):.3f} | "
              f"{np.mean([r['probe'] for r in mine]):.3f} | {diff.mean():+.3f} ({diff.min():+.3f}) | "
              f"{int((diff >= 0).sum())}/{len(mine)} | {sum(r['best_epoch'] == 0 for r in mine)}/{len(mine)} |")


def _generator(args) -> dict:
    return {"run_median": args.run_median, "identity": args.identity, "amplitude": args.amplitude}


def _test_scores(run: Path, data: dict, test: dict) -> tuple[float, float]:
    """Test macro F1 of the model (``expr evaluate``, its stored smoothing) and of the probe (refitted on the
    run's training / validation videos as ``expr train`` fits it, with its stored window)."""
    from affectfuse.cli import main
    from affectfuse.data.affwild2 import load_expr_videos, read_expr_folder
    from affectfuse.data.store import FeatureSet
    from affectfuse.training.expr import evaluate_probabilities
    from affectfuse.training.frame_probe import frame_probe, probe_probabilities
    from affectfuse.training.temporal import apply_smoothing

    argv = ["expr", "evaluate", "--checkpoint", str(run / "best.pt"), "--features", *map(str, test["features"]),
            "--annotations", str(test["train"]), "--out", str(run / "test")]
    if main(argv) != 0:
        raise SystemExit(f"affectfuse {' '.join(argv)} failed")
    model = json.loads((run / "test" / "scores.json").read_text())["macro_f1"]
    load = lambda paths, split: load_expr_videos(read_expr_folder(paths[split]),  # noqa: E731
                                                 [FeatureSet.open(f) for f in paths["features"]])
    probe = frame_probe(load(data, "train"), load(data, "val"), 8)
    videos = load(test, "train")
    probs = apply_smoothing(probe_probabilities(probe["fit"], videos), probe["smoothing"])
    return model, evaluate_probabilities(videos, probs)["macro_f1"]


def check(args) -> None:
    from affectfuse.cli import main
    from affectfuse.data.synthetic_affwild2 import make_affwild2_dataset

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            data = make_affwild2_dataset(Path(tmp) / f"set{seed}", n_train=40, n_val=20, seed=seed, **_generator(args))
            test = make_affwild2_dataset(Path(tmp) / f"test{seed}", n_train=args.test_media, n_val=0,
                                         seed=seed + 1000, **_generator(args))
            run = Path(tmp) / f"run{seed}"
            argv = ["expr", "train", "--features", *map(str, data["features"]), "--annotations", str(data["train"]),
                    "--val-annotations", str(data["val"]), "--out", str(run)]
            start = time.process_time()
            if main(argv) != 0:
                raise SystemExit(f"seed {seed}: affectfuse {' '.join(argv)} failed")
            cpu = time.process_time() - start
            result = json.loads((run / "result.json").read_text())
            test_model, test_probe = _test_scores(run, data, test) if args.test_media else (None, None)
            rows.append({"seed": seed, **_generator(args), **result["versus_probe"], "best_epoch": result["best_epoch"],
                         "centring": result.get("centring", {}).get("on"),
                         "probe_unsmoothed": round(result["probe"]["unsmoothed_macro_f1"], 4),
                         "test_model": test_model, "test_probe": test_probe, "train_cpu_s": round(cpu, 1)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print("| seed | model, validation (its smoothing) | probe, validation (best window) | model - probe | "
          "test: model | test: probe | test: model - probe | centred | epoch kept |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        test = (f"{r['test_model']:.3f} | {r['test_probe']:.3f} | {r['test_model'] - r['test_probe']:+.3f}"
                if r["test_model"] is not None else "- | - | -")
        print(f"| {r['seed']} | {r['model']:.3f} ({r['model_smoothing']}) | "
              f"{r['probe']:.3f} ({r['probe_smoothing']}) | "
              f"{r['model_minus_probe']:+.3f} | {test} | {r['centring']} | {r['best_epoch']} |")
    if args.out:
        from affectfuse.utils import write_json_atomic

        write_json_atomic(args.out, rows)


def levers(args) -> None:
    from sklearn.model_selection import GroupKFold

    from affectfuse.data.synthetic_affwild2 import make_affwild2_people, to_expr_videos
    from affectfuse.models.expr_decoder import label_statistics
    from affectfuse.training.expr import centred_videos
    from affectfuse.training.frame_probe import frame_probe, probe_probabilities
    from affectfuse.training.temporal import choose_smoothing

    print("| generator | seed | probe per frame | probe + best window | probe + HMM | centred probe + best window | "
          "centred probe + HMM |" + "".join(f" centred probe + HMM, runs x{r:g} |" for r in args.run_scales or []))
    print("|---|---|---|---|---|---|---|" + "---|" * len(args.run_scales or []))
    for seed in args.seeds:
        videos = to_expr_videos(make_affwild2_people(args.media, seed=seed, **_generator(args)))
        groups = np.array([_media(v.id) for v in videos])
        tr, va = next(iter(GroupKFold(3).split(videos, groups=groups)))
        train, val = [videos[i] for i in tr], [videos[i] for i in va]
        stats = label_statistics([v.labels for v in train], 8)
        cells = []
        for centre in (False, True):
            a, b = (centred_videos(train, args.prior), centred_videos(val, args.prior)) if centre else (train, val)
            probe = frame_probe(a, b, 8)
            probs = probe_probabilities(probe["fit"], b)
            hmm = choose_smoothing([v.labels for v in b], [probs[v.id] for v in b], grid=(("none", 1),),
                                   label_stats=stats)
            cells += ([f"{probe['unsmoothed_macro_f1']:.3f}"] if not centre else []) + [
                f"{probe['macro_f1']:.3f} ({probe['smoothing']['method']}:{probe['smoothing']['window']})",
                f"{hmm['macro_f1']:.3f}"]
        if args.run_scales:   # the centred probe + HMM, best emission scale per run-length multiplier
            scores = choose_smoothing([v.labels for v in b], [probs[v.id] for v in b], grid=(("none", 1),),
                                      label_stats=stats, run_scales=args.run_scales)["scores"]
            cells += [f"{max(f for k, f in scores.items() if k.endswith(f'runs x{r:g})')):.3f}"
                      for r in args.run_scales]
        gen = ", ".join(f"{k} {v:g}" for k, v in _generator(args).items())
        print(f"| {gen} | {seed} | " + " | ".join(cells) + " |", flush=True)


def clips(args) -> None:
    """What centring costs on short one-expression clips: the probe fitted on long planted videos (centred with
    each prior, or raw), its C and window chosen on long validation videos, then each 2-3 s clip (60-90 frames,
    one expression) classified by its mean frame probability."""
    from affectfuse.data.synthetic_affwild2 import make_affwild2_people, to_expr_videos
    from affectfuse.metrics.classification import classification_scores
    from affectfuse.training.expr import centred_videos
    from affectfuse.training.frame_probe import frame_probe, probe_probabilities

    print("| seed | centring prior (frames) | validation: probe + best window | clips: accuracy | clips: macro F1 |")
    print("|---|---|---|---|---|")
    for seed in args.seeds:
        train = to_expr_videos(make_affwild2_people(30, seed=seed))
        val = to_expr_videos(make_affwild2_people(15, seed=seed + 100))
        short = to_expr_videos(make_affwild2_people(60, seed=seed + 200, frames=(60, 90), run_median=1000.0))
        truth = np.array([np.bincount(v.labels[v.labels >= 0], minlength=8).argmax() for v in short])
        for prior in [None, *args.priors]:
            prep = (lambda vs: vs) if prior is None else (lambda vs, k=prior: centred_videos(vs, k))
            probe = frame_probe(prep(train), prep(val), 8)
            probs = probe_probabilities(probe["fit"], prep(short))
            scores = classification_scores(truth, np.array([probs[v.id].mean(0).argmax() for v in short]), 8)
            print(f"| {seed} | {'raw' if prior is None else f'{prior:g}'} | {probe['macro_f1']:.3f} | "
                  f"{scores['accuracy']:.3f} | {scores['macro_f1']:.3f} |", flush=True)


def main() -> None:
    from affectfuse.data.synthetic_affwild2 import AMPLITUDE, IDENTITY_AMPLITUDE, RUN_MEDIAN

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("check")
    c.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    c.add_argument("--test-media", type=int, default=20, help="media files of the test set (0: none)")
    c.add_argument("--out")
    v = sub.add_parser("levers")
    v.add_argument("--seeds", type=int, nargs="+", default=[10, 11])
    v.add_argument("--media", type=int, default=45)
    v.add_argument("--prior", type=float, default=150.0, help="centring shrinkage, frames")
    v.add_argument("--run-scales", type=float, nargs="+", help="also: the centred probe + HMM per run multiplier")
    for p in (c, v):
        p.add_argument("--run-median", type=float, default=RUN_MEDIAN, help="median expression run, frames")
        p.add_argument("--identity", type=float, default=IDENTITY_AMPLITUDE, help="per-person offset std per dim")
        p.add_argument("--amplitude", type=float, default=AMPLITUDE, help="class signal per frame")
    k = sub.add_parser("clips")
    k.add_argument("--seeds", type=int, nargs="+", default=[21, 22])
    k.add_argument("--priors", type=float, nargs="+", default=[0.0, 50.0, 150.0, 300.0])
    t = sub.add_parser("tune")
    t.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    t.add_argument("--media", type=int, nargs="+", default=[30, 60])
    t.add_argument("--folds", type=int, default=3)
    t.add_argument("--max-folds", type=int, default=1, help="folds run per set (the rest skipped, for time)")
    t.add_argument("--config", nargs="+", action="append", default=[], metavar="NAME [KEY=VALUE ...]")
    args = parser.parse_args()
    {"check": check, "tune": tune, "levers": levers, "clips": clips}[args.mode](args)


if __name__ == "__main__":
    main()
