"""Benchmark: decode + detect + align (the face pipeline) against the naive loop, and peak memory vs length.

    python benchmarks/bench_faces.py                 # speed on the Pexels clip + memory for 1/10/30 min
    python benchmarks/bench_faces.py --skip-memory   # speed only
    python benchmarks/bench_faces.py --minutes 1 10  # memory for other lengths
    python benchmarks/bench_faces.py --figure docs/img/aligned_crops_pexels.jpg  # the docs figure

Speed: ``affectfuse.faces.iter_faces`` (two passes: detection-resolution decode + batched MTCNN +
tracking, then full-resolution decode + 112 px alignment) versus the naive loop (decode every frame
into a list, then detect one frame at a time at full size and align the largest face), on the same
frames, in the same run: the Pexels clip at 5 fps, its first seconds at every frame, and the same
seconds upscaled to 1920x1080 at 5 fps. Reported per CPU-second of this process (stable on a shared
machine) and per wall-clock second. Memory: peak RSS of a fresh process running
``iter_faces`` at 1 fps over generated 320x180, 25 fps videos of each length (a real face photo
drifting around), next to a process that only loads the detector.
Prints markdown tables for docs/benchmarks.md.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def naive(path, fps, detector, size=112):
    """Decode all frames into a list, then detect one frame at a time (the usual script)."""
    import av

    from affectfuse.faces import align_face
    from affectfuse.media.decode import _Sampler

    frames, times = [], []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(float(f.time))
    sampler, found, n = _Sampler(fps), 0, 0
    for img, t in zip(frames, times):
        if not sampler.keep(t - times[0]):
            continue
        n += 1
        det = detector.detect(img)[0]
        if len(det):
            k = int(np.argmax((det.boxes[:, 2] - det.boxes[:, 0]) * (det.boxes[:, 3] - det.boxes[:, 1])))
            align_face(img, det.landmarks[k], size, "mtcnn_box")
            found += 1
    return n, found


def ours(path, fps, detector, size=112):
    from affectfuse.faces import iter_faces

    n = found = 0
    from affectfuse.faces.plan import CropSpec

    for batch in iter_faces(path, fps=fps, crops=(CropSpec(size, "mtcnn_box"),), detector=detector):
        n += len(batch)
        found += int(batch.found.sum())
    return n, found


def clip_of(path: Path, seconds: float, out: Path, height: int | None = None) -> Path:
    """The first ``seconds`` of a video re-encoded (H.264, ``height`` px high if given, e.g. 1080 to get a
    large-frame case from a small clip), so both loops see the same frames."""
    import av
    import cv2

    with av.open(str(path)) as src, av.open(str(out), "w") as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream("libx264", rate=vin.average_rate, options={"preset": "veryfast", "crf": "18"})
        h = height or vin.codec_context.height
        w = int(round(vin.codec_context.width * h / vin.codec_context.height / 2)) * 2
        vout.width, vout.height, vout.pix_fmt = w, h, "yuv420p"
        for frame in src.decode(vin):
            if frame.time is not None and frame.time >= seconds:
                break
            img = frame.to_ndarray(format="rgb24")
            if height:
                img = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)
            for packet in vout.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                dst.mux(packet)
        for packet in vout.encode():
            dst.mux(packet)
    return out


def _timed(fn, *args):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def speed(args) -> list[str]:
    import torch

    from affectfuse.faces import load_mtcnn
    from affectfuse.media import probe

    torch.set_num_threads(args.threads)
    detector = load_mtcnn()
    video = Path(args.video)
    rows = ["| video | sampling | frames | ours: frames per CPU-s (wall) | naive: frames per CPU-s (wall) | "
            "speed-up, CPU (wall) | faces found (ours / naive) |", "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        cases = [(video, 5.0), (clip_of(video, args.every_frame_seconds, Path(tmp) / "clip.mp4"), None),
                 (clip_of(video, args.every_frame_seconds, Path(tmp) / "clip1080.mp4", height=1080), 5.0)]
        ours(cases[1][0], 1.0, detector)  # warm-up (allocations, caches)
        for path, fps in cases:
            (n_o, f_o), w_o, c_o = _timed(ours, path, fps, detector)
            (n_n, f_n), w_n, c_n = _timed(naive, path, fps, detector)
            assert n_o == n_n, (n_o, n_n)
            info = probe(path)
            label = f"{info.width}x{info.height}, {info.duration_s:.1f} s"
            rows.append(f"| {label} | {f'{fps:g} fps' if fps else 'every frame'} | {n_o} | "
                        f"{n_o / c_o:.1f} ({n_o / w_o:.1f}) | {n_n / c_n:.1f} ({n_n / w_n:.1f}) | "
                        f"{c_n / c_o:.2f}x ({w_n / w_o:.2f}x) | {f_o} / {f_n} |")
            print(rows[-1], flush=True)
    return rows


def make_long_video(path: Path, minutes: float, face_path: Path | None) -> Path:
    """320x180, 25 fps H.264; a face photo drifting slowly (or a blank frame without shared data)."""
    import av
    import cv2

    canvas = np.full((180, 320, 3), 70, np.uint8)
    face = None
    if face_path is not None and face_path.exists():
        img = cv2.cvtColor(cv2.imread(str(face_path)), cv2.COLOR_BGR2RGB)
        face = cv2.resize(img, (110, 110), interpolation=cv2.INTER_AREA)
    n = int(minutes * 60 * 25)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25, options={"preset": "ultrafast", "crf": "28"})
        s.width, s.height, s.pix_fmt = 320, 180, "yuv420p"
        for k in range(n):
            frame = canvas.copy()
            if face is not None:
                x = 40 + int(60 * (1 + np.sin(k / 200)))
                frame[35:145, x:x + 110] = face
            for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM; unlike ru_maxrss it is not inherited from the parent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def memory_child(video: str | None, threads: int, naive_loop: bool = False) -> None:
    """Run in a fresh process: print JSON with peak RSS (MiB) and what was processed."""
    import torch

    from affectfuse.faces import iter_faces, load_mtcnn

    torch.set_num_threads(threads)
    detector = load_mtcnn()
    n = found = 0
    t = time.perf_counter()
    if video and naive_loop:
        n, found = naive(video, 1.0, detector)
    elif video:
        from affectfuse.faces.plan import CropSpec

        crops = (CropSpec(112, "mtcnn_box"), CropSpec(224, "mtcnn_box"))
        for batch in iter_faces(video, fps=1.0, crops=crops, detector=detector):
            n += len(batch)
            found += int(batch.found.sum())
    peak = _peak_rss_mib()
    print(json.dumps({"peak_rss_mib": peak, "frames": n, "found": found, "seconds": time.perf_counter() - t}))


def memory(args) -> list[str]:
    def child(video, naive_loop=False):
        extra = ["--naive"] if naive_loop else []
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        if args.mmap_threshold:
            env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
        out = subprocess.run([sys.executable, __file__, "--memory-child", video or "", "--threads", str(args.threads)]
                             + extra,
                             check=True, capture_output=True, text=True, env=env)
        return json.loads(out.stdout.strip().splitlines()[-1])

    rows = ["| video length | sampled frames (1 fps) | faces found | peak RSS (MiB) | naive loop: peak RSS (MiB) |",
            "|---|---|---|---|---|"]
    base = child(None)
    rows.append(f"| (detector loaded, no video) | - | - | {base['peak_rss_mib']:.0f} | - |")
    print(rows[-1], flush=True)
    face = SHARED / "media" / "single_face.jpg"
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            path = make_long_video(Path(tmp) / f"long_{minutes:g}.mp4", minutes, face)
            r = child(str(path))
            if minutes in args.naive_minutes:
                naive_rss = f"{child(str(path), naive_loop=True)['peak_rss_mib']:.0f}"
            else:  # the frame list alone
                naive_rss = f"> {minutes * 60 * 25 * 320 * 180 * 3 / 2 ** 20 + base['peak_rss_mib']:,.0f} (not run)"
            rows.append(f"| {minutes:g} min ({minutes * 60 * 25:.0f} frames) | {r['frames']} | {r['found']} | "
                        f"{r['peak_rss_mib']:.0f} | {naive_rss} |")
            print(rows[-1], flush=True)
            path.unlink()
    return rows


def figure(video: Path, out: Path, n: int = 6) -> None:
    """docs figure: one frame with box + landmarks, and aligned crops of ``n`` frames at 112/160/224 px."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from affectfuse.faces import detect_video, iter_faces
    from affectfuse.media import probe

    fps = n / max(probe(video).duration_s, 1e-3)
    det = detect_video(video, fps=fps)
    from affectfuse.faces.plan import CropSpec

    specs = {112: CropSpec(112, "arcface"), 160: CropSpec(160, "mtcnn_box"), 224: CropSpec(224, "mtcnn_box")}
    batches = list(iter_faces(video, fps=fps, crops=tuple(specs.values()), detections=det))
    crops = {s: np.concatenate([b.crops[spec] for b in batches])[:n] for s, spec in specs.items()}
    nums = np.concatenate([b.frame_numbers for b in batches])[:n]
    from affectfuse.media import iter_frames

    first = next(iter_frames(video, fps=fps)).images[0]
    fig = plt.figure(figsize=(2 * n, 6.2), dpi=75)
    grid = fig.add_gridspec(3, n + 3)
    ax = fig.add_subplot(grid[:, :3])
    ax.imshow(first)
    box, _, marks, _ = det.frame(0)
    box, lm = box[0], marks[0]
    ax.add_patch(plt.Rectangle(box[:2], *(box[2:] - box[:2]), fill=False, color="lime", lw=2))
    ax.scatter(lm[:, 0], lm[:, 1], s=18, c=["red", "red", "yellow", "cyan", "cyan"])
    ax.set_title(f"frame {nums[0]}: MTCNN box + 5 landmarks", fontsize=10)
    ax.axis("off")
    for row, (size, label) in enumerate([(112, "112 ArcFace"), (160, "160 MTCNN box"), (224, "224 MTCNN box")]):
        for k in range(len(nums)):
            a = fig.add_subplot(grid[row, 3 + k])
            a.imshow(crops[size][k])
            a.set_xticks([])
            a.set_yticks([])
            if k == 0:
                a.set_ylabel(label, fontsize=9)
            if row == 0:
                a.set_title(f"frame {nums[k]}", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, pil_kwargs={"quality": 80, "optimize": True})
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default=str(SHARED / "media" / "talking_face_pexels.mp4"))
    parser.add_argument("--every-frame-seconds", type=float, default=6.0,
                        help="length of the clip for the every-frame comparison (s)")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 30])
    parser.add_argument("--naive-minutes", type=float, nargs="*", default=[1],
                        help="lengths at which the naive loop's memory is measured too (it grows with length)")
    parser.add_argument("--naive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mmap-threshold", type=int, default=0,
                        help="run the memory processes with MALLOC_MMAP_THRESHOLD_ set (glibc; 0 = default)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--figure", type=Path, default=None,
                        help="only write the aligned-crops figure (e.g. docs/img/aligned_crops_pexels.jpg)")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child is not None:
        memory_child(args.memory_child or None, args.threads, args.naive)
        return 0
    if args.figure is not None:
        figure(Path(args.video), args.figure)
        return 0
    lines = []
    if not args.skip_speed:
        lines += speed(args) + [""]
    if not args.skip_memory:
        lines += memory(args)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
