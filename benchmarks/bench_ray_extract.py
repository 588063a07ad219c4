"""Throughput of ``affectfuse extract --ray`` with 1 and 2 workers vs the single-process engine.

    python benchmarks/bench_ray_extract.py --videos 8 --seconds 6 --extractors egemaps

Writes ``--videos`` synthetic clips (H.264 + AAC tone, 96x96, 25 fps) with PyAV into a temporary folder,
then extracts them (1) with :func:`affectfuse.features.pipeline.extract` in this process (the naive way:
one process, models loaded once), (2) on a local Ray cluster with 1 worker, (3) with 2 workers. Ray
timings include starting the actors (loading the models) but not starting the cluster (reported apart).
Prints a markdown table (videos/s, speed-up over the single process).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_clip(path: Path, seconds: float, seed: int, fps: int = 25, size: int = 96) -> None:
    from affectfuse.media.write import noise_clip

    noise_clip(path, seconds=seconds, fps=fps, size=size, seed=seed, tone_hz=120 + 20 * seed, audio_noise=0.05)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=6.0, help="length of each clip (s)")
    ap.add_argument("--extractors", default="egemaps", help="comma-separated extractor names")
    ap.add_argument("--random-weights", action="store_true", help="network extractors without their weights")
    args = ap.parse_args(argv)

    import ray

    from affectfuse.features.build import build_extractors
    from affectfuse.cluster.ray_extract import WorkerSpec, ray_extract
    from affectfuse.features.pipeline import extract, find_inputs

    names = [n.strip() for n in args.extractors.split(",") if n.strip()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "videos").mkdir()
        for k in range(args.videos):
            write_clip(tmp / "videos" / f"v{k:03d}.mp4", args.seconds, k)
        items = find_inputs(tmp / "videos")

        import torch

        torch.set_num_threads(1)
        t0 = time.perf_counter()
        exts = build_extractors(names, random_weights=args.random_weights)
        rep = extract(items, exts, tmp / "single", progress=False)
        single = time.perf_counter() - t0
        assert rep.ok, rep.failures
        rows.append(("single process (`extract`, models loaded once, 1 thread)", single))

        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False)
        cluster_start = time.perf_counter() - t0
        for workers in (1, 2):
            out = tmp / f"ray{workers}"
            t0 = time.perf_counter()
            rep = ray_extract(items, WorkerSpec(str(out), tuple(names), random_weights=args.random_weights),
                              num_workers=workers, progress=False)
            wall = time.perf_counter() - t0
            assert rep.ok, rep.failures
            for n in names:  # the Ray features equal the single-process ones
                a = np.load(tmp / "single" / n / "v000.npz")["values"]
                b = np.load(out / n / "v000.npz")["values"]
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
            rows.append((f"Ray, {workers} worker{'s' if workers > 1 else ''} (incl. actor start)", wall))
        ray.shutdown()

    load = os.getloadavg()[0]
    print(f"{args.videos} clips x {args.seconds:g} s, extractors {','.join(names)}; python {sys.version.split()[0]}, "
          f"ray {ray.__version__}; 1-min load average at the end {load:.1f}; cluster start {cluster_start:.1f} s\n")
    print("| way | wall s | videos/s | speed-up vs single process |")
    print("|---|---|---|---|")
    for label, wall in rows:
        print(f"| {label} | {wall:.1f} | {args.videos / wall:.2f} | {single / wall:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
