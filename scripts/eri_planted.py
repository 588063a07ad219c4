"""ERI on planted sets: the default model of ``affectfuse eri train`` against its built-in ridge probe.

    python scripts/eri_planted.py --videos 600 --seeds 0 1 2 --time-course burst_spread \\
        --audio-dim 32 --visual-dim 48 [--set KEY=VALUE ...] [--work DIR] [--json rows.jsonl]

For each seed: ``affectfuse synth OUT --videos N --seed S --time-course ... --audio-dim ... --visual-dim ...``
(60 % of the videos train, 20 % validate), then ``affectfuse eri train --table OUT/data_info.csv
--features audio=OUT/features/audio visual=OUT/features/visual --out RUN`` with the defaults (plus any
``--set``), and one row from the run's ``result.json``: validation mean Pearson of the model (best epoch)
and of the ridge probe, their difference, the best epoch, the epochs run and the CPU seconds of the
training command (user + sys of the child process). A table of all seeds ends the output.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _affectfuse(*args: str) -> None:
    """Run one ``affectfuse`` command as a user would (a child process); its output goes to stderr."""
    script = Path(sys.executable).with_name("affectfuse")
    command = [str(script) if script.exists() else "affectfuse", *args]
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout)
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}")


def run_seed(seed: int, args, work: Path) -> dict:
    """synth + eri train for one generator seed; returns the row of the table."""
    data = work / f"set{seed}"
    _affectfuse("synth", str(data), "--videos", str(args.videos), "--seed", str(seed),
                "--time-course", args.time_course, "--audio-dim", str(args.audio_dim),
                "--visual-dim", str(args.visual_dim))
    run = work / f"run{seed}"
    train = ["eri", "train", "--table", str(data / "data_info.csv"), "--features",
             f"audio={data / 'features' / 'audio'}", f"visual={data / 'features' / 'visual'}", "--out", str(run)]
    if args.set:
        train += ["--set", *args.set]
    before, wall = _cpu_seconds(), time.perf_counter()
    _affectfuse(*train)
    cpu, wall = _cpu_seconds() - before, time.perf_counter() - wall
    result = json.loads((run / "result.json").read_text())
    model, probe = result["best_val_mean_pearson"], result["probe"]["val_mean_pearson"]
    return {"seed": seed, "videos": args.videos, "time_course": args.time_course, "model": round(model, 4),
            "probe": round(probe, 4), "model_minus_probe": round(model - probe, 4),
            "best_epoch": result["best_epoch"], "epochs": result["epochs"], "train_cpu_s": round(cpu, 1),
            "train_wall_s": round(wall, 1),
            "precision": result.get("precision"), "set": list(args.set or [])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=600, help="videos per set (60 %% train, 20 %% val)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--time-course", default="burst_spread", choices=("mixed", "burst_spread"))
    parser.add_argument("--audio-dim", type=int, default=32)
    parser.add_argument("--visual-dim", type=int, default=48)
    parser.add_argument("--set", nargs="*", default=[], help="config overrides for eri train (none = defaults)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the sets and runs (default: temporary)")
    parser.add_argument("--json", type=Path, default=None, help="append each row to this JSON-lines file")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            row = run_seed(seed, args, work)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.json:
                with args.json.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    print("| seed | videos (train) | model | ridge probe | model - probe | best epoch / epochs | train CPU-s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['videos']} ({round(0.6 * r['videos'])}) | {r['model']:.3f} | {r['probe']:.3f} | "
              f"{r['model_minus_probe']:+.3f} | {r['best_epoch']} / {r['epochs']} | {r['train_cpu_s']:.0f} |")
    diffs = [r["model_minus_probe"] for r in rows]
    print(f"mean model - probe {sum(diffs) / len(diffs):+.3f}, min {min(diffs):+.3f}, "
          f"model > probe on {sum(d > 0 for d in diffs)}/{len(diffs)} seeds")


if __name__ == "__main__":
    main()
