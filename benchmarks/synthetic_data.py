"""Benchmark: making the in-memory synthetic ERI arrays (the training benchmark's input).

    python benchmarks/synthetic_data.py [--videos 16000] [--steps 30]

Compares ``make_eri_arrays`` (noise bank + one small matmul per chunk, two threads) with the naive way
(every value drawn by ``rng.standard_normal``, the same structure added by one matmul) at the same size.
Prints one JSON line: wall and CPU seconds (CPU = all threads, user + kernel), peak RSS, and the ratios.
CPU seconds are the stable figure on a shared machine; wall seconds depend on its load.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import time

import numpy as np

from affectfuse.data import synthetic


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def naive(n: int, steps: int, dims: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """The same kind of features, every noise value drawn fresh: the slow reference."""
    rng = np.random.default_rng(seed)
    out = {}
    for modality, dim in dims.items():
        k = 5 + synthetic.BACKGROUND_RANK
        latent = rng.standard_normal((n * steps, k), dtype=np.float32)
        basis = rng.standard_normal((k, dim), dtype=np.float32)
        x = rng.standard_normal((n * steps, dim), dtype=np.float32)
        x *= 0.5
        for start in range(0, n * steps, 7680):  # chunked like ours, so memory stays comparable
            x[start:start + 7680] += latent[start:start + 7680] @ basis
        out[modality] = x.reshape(n, steps, dim)
    return out


def measure(fn) -> dict:
    gc.collect()
    wall, cpu = time.perf_counter(), _cpu()
    result = fn()
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    gbytes = sum(a.nbytes for a in (result[0] if isinstance(result, tuple) else result).values()) / 1e9
    del result
    gc.collect()
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "gbytes": round(gbytes, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=16000)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    dims = dict(synthetic.DEFAULT_DIMS)
    ours = measure(lambda: synthetic.make_eri_arrays(args.videos, steps=args.steps, dims=dims))
    peak_ours = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    ref = measure(lambda: naive(args.videos, args.steps, dims))
    print(json.dumps({
        "videos": args.videos, "steps": args.steps, "dims": dims, "ours": ours, "naive": ref,
        "peak_rss_gb_ours": round(peak_ours, 2),
        "speedup_cpu": round(ref["cpu_s"] / ours["cpu_s"], 2),
        "speedup_wall": round(ref["wall_s"] / ours["wall_s"], 2),
        "load_avg_1min": os.getloadavg()[0], "cpus": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
