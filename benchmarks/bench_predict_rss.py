"""Peak memory of ``affectfuse predict`` against video length: is it flat?

Generates talking-face videos of the asked lengths (default 1, 10 and 20 minutes) by looping the bundled
6.1 s CREMA-D clip (frames downscaled to ``--size`` and taken at ``--fps`` frames/s, default 10, to keep
the run short; its sound resampled to 16 kHz, H.264 + AAC, written
frame by frame so the generator itself stays small), then runs ``affectfuse predict VIDEO`` on each in
a fresh process with the shipped defaults and reads the process's peak resident set size
(``ru_maxrss`` from ``wait4``). Prints one JSON line per video and a markdown table; the figures go to
docs/benchmarks.md.

Usage (one command; run it on a quiet machine, it takes about as long as the videos)::

    OMP_NUM_THREADS=1 python benchmarks/bench_predict_rss.py [--minutes 1 10 20] [--size 160x120] [--fps 10] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np


def clip_media(size: tuple[int, int]) -> tuple[list[np.ndarray], np.ndarray, float]:
    """The bundled clip: frames (H, W, 3) uint8 at ``size`` (W, H), 16 kHz mono float32 audio, frame rate."""
    from affectfuse.inference.video import sample_clip_path
    from affectfuse.media import probe, read_audio

    path = sample_clip_path()
    frames = []
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            frames.append(np.asarray(frame.to_image().resize(size)))
    return frames, read_audio(path, 16000), probe(path).fps


def write_looped(path: Path, minutes: float, size: tuple[int, int] = (160, 120), fps: int = 10) -> Path:
    """A ``minutes``-long H.264/AAC mp4 looping the bundled clip (its frames taken at ``fps`` frames/s, its
    sound whole), written streaming."""
    frames, audio, clip_fps = clip_media(size)
    frames = frames[::max(1, round(clip_fps / fps))]
    n_frames = int(minutes * 60 * fps)
    n_samples = int(minutes * 60 * 16000)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        aus = c.add_stream("aac", rate=16000, layout="mono")
        step, sent = 1024, 0
        for k in range(n_frames):
            vf = av.VideoFrame.from_ndarray(frames[k % len(frames)], format="rgb24")
            for p in vs.encode(vf):
                c.mux(p)
            while sent < min(n_samples, int((k + 1) / fps * 16000)):  # interleave the sound with the frames
                idx = (np.arange(sent, min(sent + step, n_samples)) % len(audio))
                af = av.AudioFrame.from_ndarray(audio[idx][None].astype(np.float32), format="flt", layout="mono")
                af.sample_rate, af.pts = 16000, sent
                for p in aus.encode(af):
                    c.mux(p)
                sent += len(idx)
        for stream in (vs, aus):
            for p in stream.encode():
                c.mux(p)
    return path


def peak_rss_mb(cmd: list[str]) -> tuple[float, float, int]:
    """Run ``cmd``; returns (peak RSS in MB (1e6 bytes), wall seconds, exit code)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    if proc.returncode:
        print(err[-2000:], file=sys.stderr)
    return usage.ru_maxrss * 1024 / 1e6, time.perf_counter() - start, proc.returncode


def machine() -> dict:
    """Date, CPU model and flags (``lscpu``), cores and load average, for the record."""
    info = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cores": os.cpu_count(),
            "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
            "ONEDNN_PRIMITIVE_CACHE_CAPACITY": os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY")}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        info.update(cpu=fields.get("Model name", "").strip(), flags=fields.get("Flags", "").strip())
    except OSError:
        pass
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 20])
    ap.add_argument("--size", default="160x120", help="frame size WxH of the generated videos")
    ap.add_argument("--fps", type=int, default=10, help="frame rate of the generated videos (the clip has 30)")
    ap.add_argument("--work", default=None, help="folder for the videos and outputs (default: a temp folder)")
    args = ap.parse_args(argv)
    size = tuple(int(x) for x in args.size.split("x"))
    work = Path(args.work or tempfile.mkdtemp(prefix="rss_"))
    work.mkdir(parents=True, exist_ok=True)
    print(json.dumps(machine()), flush=True)
    rows = []
    for minutes in args.minutes:
        video = work / f"looped_{minutes:g}min_{args.fps}fps.mp4"
        if not video.is_file():
            write_looped(video, minutes, size, args.fps)
        cmd = [sys.executable, "-m", "affectfuse.cli", "predict", str(video), "--out", str(work / "out"), "--overwrite"]
        rss, wall, rc = peak_rss_mb(cmd)
        summary = json.loads((work / "out" / video.stem / "summary.json").read_text()) if rc == 0 else {}
        row = {"minutes": minutes, "peak_rss_mb": round(rss, 1), "wall_s": round(wall, 1), "exit": rc,
               "frames": summary.get("media", {}).get("analysed_frames"),
               "voice_windows": len((summary.get("voice") or {}).get("windows") or [])}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps({"loadavg_end": Path("/proc/loadavg").read_text().split()[:3]}), flush=True)
    base = rows[0]["peak_rss_mb"]
    print("\n| video | frames analysed | voice windows | peak RSS (MB) | vs first | wall (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['minutes']:g} min | {r['frames']} | {r['voice_windows']} | {r['peak_rss_mb']:.0f} | "
              f"{100 * (r['peak_rss_mb'] / base - 1):+.1f} % | {r['wall_s']:.0f} |")
    return 0 if all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
