"""Benchmark: ERI training's peak memory, CPU time and data-loading share, rows in RAM vs read from disk, in one run.

    python benchmarks/bench_eri_train_memory.py [--videos 16000] [--audio-dim 1024] [--visual-dim 1536]
        [--epochs 1] [--max-steps N] [--ways disk ram default] [--micro-batch 64] [--precision auto|fp32|bf16]
        [--data DIR]

Writes a synthetic set (`affectfuse synth`: 60 % train, 20 % val, 20 % test; 30 steps per modality), then
trains the default recipe on it as a user would (`affectfuse eri train`), each way in its own process:

- ``disk``: ``AFFECTFUSE_SEQUENCES_IN_RAM_MB=0``: each feature set's fixed-length rows are written once to
  ``<set>/.sequences/`` and read batch by batch (``affectfuse.data.sequence_cache``); the default for any
  load over 256 MB;
- ``ram``: every row held in RAM as torch tensors (the way before issue 16);
- ``default``: the variable unset, as a user runs it (rows on disk past the default in-RAM limit, per load).

``--max-steps N`` ends each epoch after N optimizer steps (``ERITask.max_steps``), then validates as usual:
the peak is reached by the data set-up, the probes' fits and the first steps, so a few steps measure it
without a whole epoch (the CPU and data-loading figures then cover those steps only). ``--data DIR`` keeps the
synthetic set in DIR (made there if DIR has no ``data_info.csv``) so that later runs reuse it and its caches.
Per stage of the child (``stages``: reading the sequences, input statistics, the probe-started path's fit,
the probe, the first optimizer steps, validation) the RSS before and after and the peak RSS so far, so that
what raises the peak is named.

Per run: peak RSS (ru_maxrss of the child, from wait4), user + sys CPU seconds, wall seconds, the validation
score; from hooks on the data layer inside the child: seconds spent building the fixed-length sequences
(cache write included), and seconds (wall and CPU) in ``SequenceData.batch`` -- every batch the training loop
and validation read -- as a share of the training time (``fit``); seconds in the two ridge fits on pooled
statistics (the probe reported beside the model and the start of the probe-started path). The synthetic set's own making is a
separate process, reported apart. Machine, CPU flags, load average and date are printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine_info, run_cpu  # noqa: E402

IN_RAM = {"disk": "0", "ram": "1e9", "default": None}
STEPS_LOGGED = 4   # optimizer steps whose memory is logged as stages


def _rss_gb() -> tuple[float, float]:
    """(current RSS, peak RSS so far) of this process in GB (/proc/self/statm, ru_maxrss)."""
    import resource

    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e9, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def staged(fn, name: str, stages: list, limit: int | None = None):
    """``fn`` wrapped to append {stage, rss_before_gb, rss_after_gb, peak_after_gb} to ``stages`` (the first
    ``limit`` calls only)."""
    count = [0]

    def wrapper(*a, **k):
        count[0] += 1
        if limit is not None and count[0] > limit:
            return fn(*a, **k)
        before = _rss_gb()[0]
        try:
            return fn(*a, **k)
        finally:
            after, peak = _rss_gb()
            stages.append({"stage": name if limit is None else f"{name} {count[0]}",
                           "rss_before_gb": round(before, 3), "rss_after_gb": round(after, 3),
                           "peak_after_gb": round(peak, 3)})
    return wrapper


def child_train(mark_path: str, cli_args: list[str], max_steps: int | None = None) -> int:
    """In the measured process: time the data layer and ``fit``, log the RSS around each stage, then run
    ``affectfuse eri train``."""
    from affectfuse.data import sequences
    from affectfuse.training import eri

    marks = {"load_s": 0.0, "batch_wall_s": 0.0, "batch_cpu_s": 0.0, "batches": 0, "fit_wall_s": 0.0,
             "fit_cpu_s": 0.0, "probes_wall_s": 0.0, "probes_cpu_s": 0.0, "stages": []}
    stages = marks["stages"]
    now, peak = _rss_gb()
    stages.append({"stage": "imports", "rss_after_gb": round(now, 3), "peak_after_gb": round(peak, 3)})
    eri.ERITask.max_steps = max_steps

    def timed(fn, wall_key, cpu_key=None, count=None):
        def wrapper(*a, **k):
            w, c = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **k)
            finally:
                marks[wall_key] += time.perf_counter() - w
                if cpu_key:
                    marks[cpu_key] += time.process_time() - c
                if count:
                    marks[count] += 1
        return wrapper

    sequences.load_sequences = staged(timed(sequences.load_sequences, "load_s"), "read sequences", stages)
    sequences.SequenceData.batch = timed(sequences.SequenceData.batch, "batch_wall_s", "batch_cpu_s", "batches")
    eri.fit = timed(eri.fit, "fit_wall_s", "fit_cpu_s")
    eri.input_norm_stats = staged(eri.input_norm_stats, "input statistics", stages)
    eri.pooled_ridge = staged(timed(eri.pooled_ridge, "probes_wall_s", "probes_cpu_s"),
                              "ridge fit (probe and probe-started path)", stages)
    eri.ridge_probe = staged(timed(eri.ridge_probe, "probes_wall_s", "probes_cpu_s"), "ridge probe", stages)
    eri.init_pooled_skip = staged(timed(eri.init_pooled_skip, "probes_wall_s", "probes_cpu_s"),
                                  "probe-started path fit", stages)
    eri.backward_batch = staged(eri.backward_batch, "step (forward + backward)", stages, STEPS_LOGGED)
    eri.predict = staged(eri.predict, "validation", stages, 2)
    from affectfuse.cli import main

    try:
        return main(["eri", "train", *cli_args])
    finally:
        Path(mark_path).write_text(json.dumps(marks))


def train_once(data: Path, out: Path, way: str, epochs: int, micro_batch: int, precision: str | None,
               max_steps: int | None = None) -> dict:
    """One `affectfuse eri train` child process: its kernel accounting and the data layer's timings."""
    mark = out.with_suffix(".marks.json")
    cmd = [sys.executable, __file__, "--child-train", str(mark), str(max_steps or 0), "--", "--table",
           str(data / "data_info.csv"),
           "--features", f"audio={data / 'features' / 'audio'}", f"visual={data / 'features' / 'visual'}",
           "--out", str(out), "--set", f"train.max_epochs={epochs}", f"train.micro_batch={micro_batch}",
           "train.progress=false", "train.tensorboard=false", "train.threads=1"]
    if precision:
        cmd.append(f"train.precision={precision}")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("AFFECTFUSE_SEQUENCES_IN_RAM_MB", None)
    if IN_RAM[way] is not None:
        env["AFFECTFUSE_SEQUENCES_IN_RAM_MB"] = IN_RAM[way]
    with tempfile.TemporaryFile("w+") as stdout:
        r = run_cpu(cmd, env=env, stdout=stdout)
        stdout.seek(0)
        result = json.loads(stdout.read().strip().splitlines()[-1])
    m = json.loads(mark.read_text())
    run = json.loads((out / "result.json").read_text())
    return {"way": way, "peak_rss_gb": round(r["maxrss_mb"] / 1024, 3), "cpu_s": round(r["cpu"], 1),
            "wall_s": round(r["wall"], 1), "sequences_s": round(m["load_s"], 1), "fit_wall_s": round(m["fit_wall_s"], 1),
            "batches": m["batches"], "batch_wall_s": round(m["batch_wall_s"], 2), "batch_cpu_s": round(m["batch_cpu_s"], 2),
            "data_share_wall": round(m["batch_wall_s"] / max(m["fit_wall_s"], 1e-9), 4),
            "data_share_cpu": round(m["batch_cpu_s"] / max(m["fit_cpu_s"], 1e-9), 4),
            "probes_wall_s": round(m["probes_wall_s"], 1), "probes_cpu_s": round(m["probes_cpu_s"], 1),
            "val_mean_pearson": result.get("best_val_mean_pearson"), "precision": run.get("precision"),
            "probe_val_mean_pearson": (run.get("probe") or {}).get("val_mean_pearson"),
            "max_steps": max_steps, "stages": m["stages"]}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child-train"]:
        return child_train(argv[1], argv[4:], int(argv[2]) or None)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=16000)
    p.add_argument("--audio-dim", type=int, default=1024)
    p.add_argument("--visual-dim", type=int, default=1536)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps per epoch at most (default: all)")
    p.add_argument("--data", type=Path, default=None, help="keep (or reuse) the synthetic set here")
    p.add_argument("--micro-batch", type=int, default=64)
    p.add_argument("--ways", nargs="+", choices=sorted(IN_RAM), default=["disk", "ram"])
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=None,
                   help="train.precision (default: the recipe's, auto)")
    p.add_argument("--tmp", type=Path, default=None, help="folder for the synthetic set (default: system temp)")
    args = p.parse_args(argv)
    report = {"machine_before": machine_info(), "videos": args.videos,
              "dims": {"audio": args.audio_dim, "visual": args.visual_dim}, "steps": 30}
    print(describe(report["machine_before"]), flush=True)
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="bench_eri_mem_") as tmp:
        data = args.data or Path(tmp) / "data"
        if (data / "data_info.csv").is_file():
            report["synth"] = {"reused": str(data)}
        else:
            synth = run_cpu([sys.executable, "-m", "affectfuse.cli", "synth", str(data), "--videos",
                             str(args.videos), "--audio-dim", str(args.audio_dim), "--visual-dim", str(args.visual_dim)])
            report["synth"] = {"cpu_s": round(synth["cpu"], 1), "wall_s": round(synth["wall"], 1),
                               "peak_rss_gb": round(synth["maxrss_mb"] / 1024, 3)}
        report["features_gb"] = round(sum(f.stat().st_size for f in data.rglob("*.npz")) / 1e9, 2)
        print(json.dumps({"synth": report["synth"], "features_gb": report["features_gb"]}), flush=True)
        report["runs"] = []
        for way in args.ways:
            report["runs"].append(train_once(data, Path(tmp) / f"run_{way}", way, args.epochs, args.micro_batch,
                                              args.precision, args.max_steps))
            print(json.dumps(report["runs"][-1]), flush=True)
        report["cache_gb"] = round(sum(f.stat().st_size for f in data.glob("features/*/.sequences/*/*.npy")) / 1e9, 2)
    report["machine_after"] = machine_info()
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
