"""Benchmark: does ERI training keep its quality in bf16? Validation mean Pearson, fp32 vs bf16, a few seeds.

    python benchmarks/eri_precision_quality.py [--seeds 0 1 2] [--epochs 6]

The planted set of ``tests/test_eri_training.py`` (``make_eri_arrays``: 600 training clips, 200 validation
clips, 64-d audio + 96-d visual, 10 steps, noise 0.3; every emotion planted, Fear only in the interaction of
the two modalities) and its small but complete model (d = 32), trained twice per seed from the same
start (``train.precision=fp32`` and ``=bf16``), for two recipes: the network alone (``model.pooled_skip=
false``, no weight decay, no clipping: what the test checks) and the default recipe (probe-started path on).
Validation always runs in fp32. Prints one JSON row per run and the mean / max absolute difference per recipe.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from affectfuse.data.sequences import from_arrays
from affectfuse.data.synthetic import make_eri_arrays
from affectfuse.labels import ERI_EMOTIONS
from affectfuse.training.config import resolve_config
from affectfuse.training.eri import fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine_info  # noqa: E402

DIMS = {"audio": 64, "visual": 96}
SMALL = ["model.d_model=32", "model.ff_dim=128", "model.proj_dim=64", "model.modality_dropout=0.0",
         "model.interaction_dropout=0.0", "model.tcn_dropout=0.0", "data.seq_len=10", "train.lr=5e-3",
         "train.batch_size=64", "train.ema_decay=0.9", "train.threads=1", "train.progress=false",
         "train.tensorboard=false"]
RECIPES = {"network alone": ["train.weight_decay=0", "train.clip_norm=0", "model.pooled_skip=false"],
           "default recipe": []}


def planted(seed: int):
    f, y = make_eri_arrays(600, steps=10, dims=DIMS, signal="planted", seed=2 * seed, noise=0.3)
    fv, yv = make_eri_arrays(200, steps=10, dims=DIMS, signal="planted", seed=2 * seed + 1, noise=0.3)
    return from_arrays(f, y, ERI_EMOTIONS), from_arrays(fv, yv, ERI_EMOTIONS)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=6)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    print(describe(machine_info()), flush=True)
    rows = []
    for recipe, extra in RECIPES.items():
        for seed in a.seeds:
            train, val = planted(seed)
            for precision in ("fp32", "bf16"):
                cfg = resolve_config(None, SMALL + extra + [f"train.max_epochs={a.epochs}", f"train.seed={seed}",
                                                            f"train.precision={precision}"])
                c0 = time.process_time()
                res = fit(cfg, train, val)
                rows.append({"recipe": recipe, "seed": seed, "precision": res.precision,
                             "val_mean_pearson": round(res.best_metric, 5),
                             "probe": round(res.probe["val_mean_pearson"], 5) if res.probe else None,
                             "cpu_s": round(time.process_time() - c0, 1)})
                print(json.dumps(rows[-1]), flush=True)
    for recipe in RECIPES:
        pairs = [(r["val_mean_pearson"], s["val_mean_pearson"]) for r in rows for s in rows
                 if r["recipe"] == s["recipe"] == recipe and r["seed"] == s["seed"]
                 and (r["precision"], s["precision"]) == ("fp32", "bf16")]
        diff = np.array([b - a for a, b in pairs])
        print(json.dumps({"recipe": recipe, "fp32_mean": round(float(np.mean([a for a, _ in pairs])), 5),
                          "bf16_mean": round(float(np.mean([b for _, b in pairs])), 5),
                          "mean_diff_bf16_minus_fp32": round(float(diff.mean()), 5),
                          "max_abs_diff": round(float(np.abs(diff).max()), 5)}), flush=True)
    return rows


if __name__ == "__main__":
    main()
