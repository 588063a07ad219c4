"""The whole ``affectfuse predict`` command on every frame of a real clip: CPU seconds, start-up, stages.

One command, one run, every figure from fresh processes measured with ``wait4`` (user + sys CPU seconds of
the whole command, interpreter start-up included), alternated round by round so that the machine's load
hits every configuration alike:

- **ours**: this working tree's ``affectfuse predict VIDEO`` with its defaults (1 intra-op thread);
- **ours, 2 threads**: the same with ``AFFECTFUSE_THREADS=2`` (the default before issue 16);
- **earlier paths**: the code of each ``--baseline`` commit (unpacked with ``git archive`` into a temporary
  folder and put first on ``PYTHONPATH``) with 1 thread (503cae6's own default was 2, as in the row above);
- **naive**: this tree with every frame detected at full size (``--detect-fps 0 --detect-max-side 0``).

Each process also records its start-up: CPU seconds (``getrusage``) and wall seconds from the launch to
the first decoded video frame (a hook on ``affectfuse.media.decode.apply_rotation``; models are loaded by
then). Per-stage CPU seconds of the whole command come from the pipeline's own timer
(``Timer.cpu_seconds``, read from the measured process; its wall seconds are ``summary.json``
``timings_s``); older code's timer has wall seconds only, so some of its stages are "n/a" and fall into
"rest". Each stage is also run alone, CPU-timed, in one more process with 1 thread.

Bytecode: ``pip install`` compiles ``.pyc`` files, but this project's environment sets
``PYTHONDONTWRITEBYTECODE=1`` and its venv has none, so every import would be compiled from source (about
8 CPU-s per run). The children get a private ``PYTHONPYCACHEPREFIX`` instead; the first run of each code
version fills it and is reported apart as "first run, no bytecode".

Usage::

    python benchmarks/bench_predict.py [--video ../shared/data/media/talking_face_pexels.mp4] [--rounds 3]
        [--baseline 503cae6 [COMMIT ...]] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine_info, run_cpu, user_bytecode_env  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = ROOT.parent / "shared" / "data" / "media" / "talking_face_pexels.mp4"
BASELINE = "503cae6"  # the last commit before issue 16's start-up and thread changes
NAIVE = ["--detect-fps", "0", "--detect-max-side", "0"]


def child_predict(mark_path: str, cli_args: list[str]) -> int:
    """In the measured process: hook the first decoded frame, then run ``affectfuse predict``."""
    import resource

    from affectfuse.media import decode  # av + numpy, which predict imports first anyway

    original = decode.apply_rotation
    mark: dict = {}

    def first_frame(image, rotation):
        if not mark:
            ru = resource.getrusage(resource.RUSAGE_SELF)
            mark.update(cpu=ru.ru_utime + ru.ru_stime, time=time.time())
        return original(image, rotation)

    decode.apply_rotation = first_frame
    timers = _hook_timers()
    from affectfuse.cli import main

    try:
        return main(["predict", *cli_args])
    finally:
        stages: dict = {}
        for t in timers:  # a deep copy (VideoPrediction.save's) holds the stages before it too: the most
            for k, v in getattr(t, "cpu_seconds", {}).items():
                stages[k] = max(stages.get(k, 0.0), v)
        Path(mark_path).write_text(json.dumps(dict(mark, stage_cpu=stages)))


def _hook_timers() -> list:
    """Every ``affectfuse.inference.video.Timer`` used in this process (deep copies included); each has
    ``cpu_seconds`` per stage (CPU seconds of the process while the stage ran). Older code's Timer counts
    wall seconds only: its ``with timer(stage)`` blocks are given CPU seconds here, its
    ``timer.add(stage, wall)`` calls none."""
    import contextlib

    try:
        from affectfuse.inference import video
    except ImportError:
        return []
    made: list = []
    cls, init, call = video.Timer, video.Timer.__init__, video.Timer.__call__
    native = "cpu_seconds" in cls().__dict__

    def keep(self, *a, **k):
        init(self, *a, **k)
        if not native:
            self.cpu_seconds = {}
        made.append(self)

    @contextlib.contextmanager
    def timed(self, stage):
        if not any(t is self for t in made):
            made.append(self)
        cpu = time.process_time()
        try:
            with call(self, stage):
                yield
        finally:
            if not native:
                self.cpu_seconds[stage] = self.cpu_seconds.get(stage, 0.0) + time.process_time() - cpu

    cls.__init__, cls.__call__ = keep, timed
    return made


def child_stages(video: str, out_path: str) -> int:
    """Each stage of the default path alone, 1 thread, CPU seconds (process_time)."""
    import cv2
    import numpy as np
    import torch

    from affectfuse.faces import align_face, load_mtcnn
    from affectfuse.features.registry import create_extractor
    from affectfuse.media import iter_frames
    from affectfuse.media.decode import FrameSampler

    torch.set_num_threads(1)
    out: dict = {}

    def timed(name, fn):
        c0 = time.process_time()
        result = fn()
        out[name] = time.process_time() - c0
        return result

    timed("decode at 320 px (the former pass 1)", lambda: list(iter_frames(video, batch_size=8, max_side=320)))
    full = timed("decode at full size (the one pass)", lambda: list(iter_frames(video, batch_size=8)))
    frames = np.concatenate([b.images for b in full])
    times = np.concatenate([b.timestamps for b in full])
    sampler = FrameSampler(8.0)
    picked = frames[[sampler.keep(float(t)) for t in times]]
    h, w = frames.shape[1:3]
    scale = 320 / max(h, w)
    small = timed("downscale the detection frames (cv2 area)", lambda: np.stack(
        [cv2.resize(f, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) for f in picked]))
    det = load_mtcnn(min_face_size=20.0)
    found = timed("MTCNN at 320 px, 8 frames/s, whole pyramid", lambda: [d for k in range(0, len(small), 11)
                                                                         for d in det.detect(small[k:k + 11])])
    try:  # the default path's search (batches of 11: predict's for this 640x360 clip)
        from affectfuse.faces.sparse import detect_tracked

        timed("MTCNN at 320 px, 8 frames/s, tracked scales", lambda: [
            d for k in range(0, len(small), 11) for d in detect_tracked(det, small[k:k + 11])])
    except ImportError:
        pass
    lm = [d.landmarks[0] / scale for d in found if len(d)]
    marks = np.stack([lm[min(k * len(lm) // len(frames), len(lm) - 1)] for k in range(len(frames))])
    crops = timed("align (every frame)", lambda: np.stack([align_face(f, m, 112, "mtcnn_box")
                                                           for f, m in zip(frames, marks)]))
    net = create_extractor("faceexpressionnet")
    net.predict_abaw(crops[:32])
    timed("FaceExpressionNet (every frame's crop, batches of 32)",
          lambda: [net.predict_abaw(crops[k:k + 32]) for k in range(0, len(crops), 32)])
    Path(out_path).write_text(json.dumps({"frames": len(frames), "detected_frames": len(picked),
                                          "faces": len(lm), "cpu_s": out}))
    return 0


def _code_folder(rev: str, tmp: Path) -> Path:
    """``src`` of commit ``rev`` unpacked under ``tmp`` (for PYTHONPATH)."""
    dest = tmp / f"src_{rev}"
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest / "src"


def _run(config: dict, video: Path, tmp: Path, env0: dict) -> dict:
    env = dict(env0, AFFECTFUSE_THREADS=str(config["threads"]))
    if config.get("src"):
        env["PYTHONPATH"] = str(config["src"])
    mark = tmp / "mark.json"
    out = tmp / "out"
    cmd = [sys.executable, __file__, "--child-predict", str(mark), "--", str(video), "--out", str(out),
           "--overwrite", *config.get("args", [])]
    launched = time.time()
    r = run_cpu(cmd, env=env)
    m = json.loads(mark.read_text())
    summary = json.loads((out / video.stem / "summary.json").read_text())
    r.update(startup_cpu=m["cpu"], startup_wall=m["time"] - launched, timer=summary.get("timings_s", {}),
             stage_cpu=m.get("stage_cpu", {}),
             frames=summary["media"]["analysed_frames"], faces=summary["expressions"]["face_found_frames"],
             top_emotion=summary.get("top_emotion"))
    r.pop("stderr_tail", None)
    return r


def measure(video: Path, rounds: int, baselines: list[str], tmp: Path, src: str,
            keep: tuple = ("ours", "threads2", "today", "naive")) -> dict:
    env = user_bytecode_env(tmp / "pycache", {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"})
    configs = {"ours (1 thread, the default)": {"threads": 1, "src": src}}
    if "threads2" in keep:
        configs["ours, 2 threads"] = {"threads": 2, "src": src}
    for baseline in baselines if "today" in keep else []:
        old = _code_folder(baseline, tmp)
        configs[f"earlier path ({baseline}), 1 thread"] = {"threads": 1, "src": old}
    if "naive" in keep:
        configs["naive: every frame detected at full size, 1 thread"] = {"threads": 1, "src": src, "args": NAIVE}
    first = {}
    for name, cfg in configs.items():  # fills the bytecode cache of each code version
        if cfg["src"] not in [c["src"] for c in first.values()]:
            first[name] = dict(_run(cfg, video, tmp, env), src=cfg["src"])
    runs: dict[str, list] = {name: [] for name in configs}
    loads = [os.getloadavg()[0]]
    for _ in range(rounds):
        for name, cfg in configs.items():
            runs[name].append(_run(cfg, video, tmp, env))
            loads.append(os.getloadavg()[0])
    stages_json = tmp / "stages.json"
    run_cpu([sys.executable, __file__, "--child-stages", str(stages_json), "--video", str(video)],
            env=dict(env, PYTHONPATH=src))
    first = {k: {kk: vv for kk, vv in v.items() if kk != "src"} for k, v in first.items()}
    return {"configs": list(configs), "runs": runs, "first_run_no_bytecode": first,
            "stages_alone": json.loads(stages_json.read_text()), "load_average_samples": loads}


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


STAGES = {"decode": ("decode",), "detect": ("detect",), "align": ("align",), "face model": ("face_model",),
          "voice": ("audio_decode", "voice_features", "voice_model"), "report": ("report",)}


def _stage_table(runs: dict) -> None:
    """Per-stage CPU seconds of the whole command (median over rounds): start-up (launch to the first
    decoded frame), the pipeline timer's stages, and the rest (exit, the unnamed glue between stages)."""
    print("\nper stage, CPU s (median over rounds) | start-up | " + " | ".join(STAGES) + " | rest | total")
    for name, rows in runs.items():
        cells, known = [], []
        for keys in STAGES.values():
            vals = [sum(r["stage_cpu"][k] for k in keys if k in r["stage_cpu"]) if any(
                k in r["stage_cpu"] for k in keys) else None for r in rows]
            v = None if None in vals else statistics.median(vals)
            cells.append("n/a" if v is None else f"{v:.2f}")
            known.append(vals)
        rest = [r["cpu"] - r["startup_cpu"] - sum(k[i] or 0.0 for k in known) for i, r in enumerate(rows)]
        print(f"{name} | {_median(rows, 'startup_cpu'):.2f} | " + " | ".join(cells) +
              f" | {statistics.median(rest):.2f} | {_median(rows, 'cpu'):.2f}")
    print("(n/a: that code's timer counts the stage in wall seconds only; its CPU falls into 'rest')")


def report(result: dict, duration_s: float) -> None:
    print(f"machine: {describe(result['machine'])}")
    print(f"video: {result['video']} ({duration_s:.1f} s); {result['rounds']} rounds; load average during the "
          f"runs {min(result['load_average_samples']):.2f}-{max(result['load_average_samples']):.2f}")
    print("\nmedian over rounds | CPU s (user+sys) | start-up CPU s (share) | start-up wall s | wall s | "
          "x real time (wall) | peak RSS MB | decode / detect / align / face model / report (timer, wall s)")
    for name, rows in result["runs"].items():
        cpu, st = _median(rows, "cpu"), _median(rows, "startup_cpu")
        timer = {k: statistics.median(r["timer"].get(k, 0.0) for r in rows)
                 for k in ("decode", "detect", "align", "face_model", "report")}
        each = ", ".join(f"{r['cpu']:.2f}" for r in rows)
        print(f"{name} | {cpu:.2f} (runs {each}) | {st:.2f} ({st / cpu:.0%}) | "
              f"{_median(rows, 'startup_wall'):.2f} | {_median(rows, 'wall'):.2f} | "
              f"{_median(rows, 'wall') / duration_s:.2f} | {_median(rows, 'maxrss_mb'):.0f} | "
              + " / ".join(f"{v:.2f}" for v in timer.values()))
    _stage_table(result["runs"])
    for name, r in result["first_run_no_bytecode"].items():
        print(f"first run of {name}'s code, bytecode compiled on the way: {r['cpu']:.2f} CPU s, start-up {r['startup_cpu']:.2f}")
    s = result["stages_alone"]
    print(f"\nstages alone, 1 thread ({s['frames']} frames; {s['detected_frames']} detected, {s['faces']} faces):")
    for name, cpu in s["cpu_s"].items():
        print(f"  {name:45s} {cpu:6.2f} CPU s  {1000 * cpu / s['frames']:6.1f} ms per video frame")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child-predict"]:
        return child_predict(argv[1], argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds of every configuration (default 3)")
    parser.add_argument("--baseline", nargs="*", default=[BASELINE],
                        help=f"commits of earlier paths to run alike (default {BASELINE}, issue 16's start)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--configs", nargs="+", default=["threads2", "today", "naive"],
                        choices=["threads2", "today", "naive"], help="what to run beside ours (default: all)")
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the code measured as ours (default: ./src)")
    parser.add_argument("--child-stages", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.video.is_file():
        raise SystemExit(f"{args.video}: benchmark video not found (../shared/data/media)")
    if args.child_stages:
        return child_stages(str(args.video), args.child_stages)
    from affectfuse.media import probe

    result = {"machine": machine_info(), "video": str(args.video), "rounds": args.rounds}
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        result.update(measure(args.video, args.rounds, args.baseline, Path(tmp), str(args.src.resolve()),
                              ("ours", *args.configs)))
    result["machine_end"] = machine_info()
    report(result, probe(args.video).duration_s)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
