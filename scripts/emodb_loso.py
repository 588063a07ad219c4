"""EmoDB speech emotion, leave one speaker out, with affectfuse's default commands (docs/speech.md).

The one command behind docs/speech.md's headline figure. It runs, as a user would:

1. a manifest from the file names (``path,label,group``: speaker = first two characters, emotion = 6th);
2. ``affectfuse extract <emodb>/wav --extractors <the sets' extractors> --out <out>/feats`` (no window options:
   each extractor's defaults; resumable, files already there are skipped);
3. ``affectfuse classify cv --manifest <out>/emodb.csv --features <out>/feats/<set> ... --out <out>/cv_<sets>``
   for every feature-set combination asked for (default: ``compare-2016``, the documented one);

With ``--defaults`` step 2 is ``affectfuse extract <emodb>/wav --out <out>/feats_default`` with no option at
all (the default extractors for audio files) and step 3 one ``classify cv`` over every feature set that
extract wrote rows into: the must-show of issue 13 (the default commands only).

Then it prints one table row per combination: the default model's and its built-in probe's UAR and macro F1
(pooled out-of-speaker predictions), the per-speaker UAR of the model, and the extraction CPU-seconds per file
(user + sys of the ``extract`` process; blank when the features were already there).

    python scripts/emodb_loso.py --out /tmp/emodb_loso
    python scripts/emodb_loso.py --out /tmp/emodb_loso --sets compare-2016 egemaps compare-2016+egemaps
    python scripts/emodb_loso.py --out /tmp/emodb_w2 --window 2 --hop 2 --sets egemaps   # not the defaults
    python scripts/emodb_loso.py --out /tmp/emodb_default --defaults                        # the default commands

``--window`` / ``--hop`` are passed to ``affectfuse extract`` (every extractor then uses them); ``--feats`` reuses
feature sets extracted before (an extractor whose folder holds every file is not run again).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

EMOTIONS = dict(W="anger", L="boredom", E="disgust", A="fear", F="happiness", T="sadness", N="neutral")
DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "emodb"


def write_manifest(wav_dir: Path, path: Path) -> int:
    """``path,label,group`` rows for every ``SSTTTEV.wav`` in ``wav_dir``; returns the number of files."""
    files = sorted(wav_dir.resolve().glob("*.wav"))
    if not files:
        raise FileNotFoundError(f"{wav_dir}: no .wav files (EmoDB expected)")
    rows = ["path,label,group"] + [f"{p},{EMOTIONS[p.name[5]]},{p.name[:2]}" for p in files]
    path.write_text("\n".join(rows) + "\n")
    return len(files)


def child_cpu_s() -> float:
    """User + sys CPU seconds of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` (echoed), its output to ``log``; returns its CPU seconds. Fails loudly with the log's tail."""
    print("$ " + " ".join(cmd), flush=True)
    before = child_cpu_s()
    with open(log, "w") as fh:
        rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if rc != 0:
        raise SystemExit(f"{cmd[1]} {cmd[2]} exited {rc}; see {log}:\n" + "".join(open(log).readlines()[-20:]))
    return child_cpu_s() - before


def extract(wav_dir: Path, extractors: list[str], feats: Path, n_files: int, out: Path,
            options: list[str]) -> dict[str, float | None]:
    """Extract what is missing; CPU-s per file of each extractor run here (None: the features were there)."""
    cost = {}
    for name in extractors:  # one process per extractor, so each one's cost is its own
        done = len(list((feats / name).glob("*.npz"))) if (feats / name).is_dir() else 0
        if done >= n_files:
            cost[name] = None
            continue
        cpu = run(["affectfuse", "extract", str(wav_dir), "--extractors", name, "--out", str(feats), "--no-progress",
                   *options], out / f"extract_{name}.log")
        cost[name] = cpu / n_files if done == 0 else None
    return cost


def extract_defaults(wav_dir: Path, feats: Path, out: Path) -> tuple[str, dict[str, float | None]]:
    """``affectfuse extract`` with no option into ``feats``; ('+'-joined sets with rows, {set: CPU-s per file}).
    The CPU seconds of the one process are split evenly over the sets (None when nothing was extracted)."""
    n_before = sum(1 for _ in feats.glob("*/*.npz")) if feats.is_dir() else 0
    cpu = run(["affectfuse", "extract", str(wav_dir), "--out", str(feats), "--no-progress"], out / "extract_default.log")
    sets = [m.parent.name for m in sorted(feats.glob("*/meta.json")) if any(m.parent.glob("*.npz"))]
    if not sets:
        raise SystemExit(f"{feats}: the default extract wrote no feature set with rows")
    n_files = sum(1 for _ in wav_dir.glob("*.wav"))
    share = cpu / n_files / len(sets) if n_before == 0 else None
    return "+".join(sets), {s: share for s in sets}


def table_row(sets: str, cv: dict, cost: dict) -> str:
    per_speaker = " ".join(f"{f['held_out'][0]} {f['model_uar']:.3f}" for f in cv["folds"])
    cpu = [cost.get(s) for s in sets.split("+")]
    cpu_text = "" if any(c is None for c in cpu) else f"{sum(cpu):.3f}"
    m, p = cv["model"], cv["probe"]
    return (f"| {sets} | {m['uar']:.3f} | {m['macro_f1']:.3f} | {p['uar']:.3f} | {p['macro_f1']:.3f} | "
            f"{per_speaker} | {cpu_text} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="work folder (manifest, feats/, cv_*/, logs)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help="the EmoDB folder with wav/ (default ../shared/data/emodb)")
    ap.add_argument("--sets", nargs="+", default=["compare-2016"],
                    help="feature-set combinations to score, '+' between sets (default: compare-2016)")
    ap.add_argument("--window", type=float, help="audio window (s) for extract (default: each extractor's own)")
    ap.add_argument("--hop", type=float, help="audio hop (s) for extract (default: each extractor's own)")
    ap.add_argument("--feats", type=Path, help="feature-set root to use / fill (default <out>/feats)")
    ap.add_argument("--defaults", action="store_true",
                    help="extract with no option (the default extractors) into <out>/feats_default and score "
                         "every set it wrote, together (--sets, --window, --hop ignored)")
    args = ap.parse_args(argv)
    wav_dir = args.data / "wav"
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = args.out / "emodb.csv"
    n_files = write_manifest(wav_dir, manifest)
    feats = args.feats or args.out / "feats"
    options = [*(["--window", f"{args.window:g}"] if args.window else []),
               *(["--hop", f"{args.hop:g}"] if args.hop else [])]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if args.defaults:
        feats, options = args.out / "feats_default", []
        combo, cost = extract_defaults(wav_dir, feats, args.out)
        args.sets = [combo]
    else:
        extractors = list(dict.fromkeys(s for combo in args.sets for s in combo.split("+")))
        cost = extract(wav_dir, extractors, feats, n_files, args.out, options)
    rows = []
    for combo in args.sets:
        name = combo.replace("+", "_")
        run(["affectfuse", "classify", "cv", "--manifest", str(manifest), "--features",
             *[str(feats / s) for s in combo.split("+")], "--out", str(args.out / f"cv_{name}")],
            args.out / f"cv_{name}.log")
        rows.append(table_row(combo, json.loads((args.out / f"cv_{name}" / "cv.json").read_text()), cost))
    print(f"\nEmoDB, {n_files} files, leave one speaker out, extract {' '.join(options) or ('with no option' if args.defaults else 'with its default windows')}, "
          f"classify cv with its defaults; features in {feats}; started {started}, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end")
    print("| feature sets | model UAR | model macro F1 | probe UAR | probe macro F1 | per-speaker model UAR | "
          "extract CPU-s / file |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
