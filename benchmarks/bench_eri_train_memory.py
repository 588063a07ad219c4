"""Benchmark: peak memory and CPU time of `affectfuse eri train` with and without micro-batches, in one run.

    python benchmarks/bench_eri_train_memory.py [--videos 400] [--epochs 2]

Writes a synthetic set (`affectfuse synth`, 1024-d audio + 1536-d visual, 30 steps), then trains the
default recipe on it twice as a user would, `train.micro_batch=0` (the whole batch of 256 at once, the
naive way) and the default (parts of 64), each in its own process. Prints, per run: peak RSS (ru_maxrss of
the child, from wait4), user + sys CPU seconds, wall seconds and the validation score; plus the machine's CPU model,
its bf16 flags and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cpu_info() -> dict:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = re.search(r"model name\s*:\s*(.*)", text)
    flags = set(re.search(r"flags\s*:\s*(.*)", text).group(1).split()) if "flags" in text else set()
    return {"model": model.group(1) if model else platform.processor(), "cores": os.cpu_count(),
            "bf16_flags": sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile"})}


def train_once(data: Path, out: Path, micro_batch: int, epochs: int) -> dict:
    """One `affectfuse eri train` child process; its peak RSS and CPU time from the kernel's accounting."""
    cmd = [sys.executable, "-m", "affectfuse.cli", "eri", "train", "--table", str(data / "data_info.csv"),
           "--features", f"audio={data / 'features' / 'audio'}", f"visual={data / 'features' / 'visual'}",
           "--out", str(out), "--set", f"train.max_epochs={epochs}", f"train.micro_batch={micro_batch}",
           "train.progress=false", "train.tensorboard=false"]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stdout:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.DEVNULL, text=True)
        _, status, usage = os.wait4(proc.pid, 0)                 # this child's own rusage
        wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed")
        stdout.seek(0)
        result = json.loads(stdout.read().strip().splitlines()[-1])
    return {"micro_batch": micro_batch, "peak_rss_gb": round(usage.ru_maxrss / 1024 ** 2, 3),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "wall_s": round(wall, 1),
            "val_mean_pearson": result["best_val_mean_pearson"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=400)
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args()
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu_info(), "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        subprocess.run([sys.executable, "-m", "affectfuse.cli", "synth", str(data), "--videos", str(args.videos)],
                       capture_output=True, check=True)
        report["features_mb"] = round(sum(f.stat().st_size for f in data.rglob("*.npz")) / 1e6, 1)
        report["runs"] = [train_once(data, Path(tmp) / f"run{m}", m, args.epochs) for m in (0, 64)]
    report["load_after"] = os.getloadavg()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
