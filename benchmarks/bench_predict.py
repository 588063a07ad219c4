"""End-to-end ``affectfuse predict`` speed on every frame of a real clip, and where the time goes.

Runs, in one process with ``torch.set_num_threads(2)``:

1. end to end (cold: the first video after loading the models): :class:`affectfuse.inference.video.
   VideoPredictor` with the shipped defaults (detection at 8 frames/s on frames downscaled to 320 px,
   faces of 20+ px there, landmarks interpolated in between), writing all report files; its own timer
   splits the time into detect (decode at detection size + MTCNN + tracking), align (decode at full
   size + alignment), face model, voice, report;
2. the naive way for comparison, end to end: every frame detected, at full resolution (640 px);
3. the stages one by one on the same video (decode, detect, align, face network, voice), each alone.

Wall-clock and process CPU seconds are both given (CPU / 2 is what an idle 2-core machine would need
when both threads are busy; the shared build machine is often loaded, so wall time can be inflated).

Usage::

    python benchmarks/bench_predict.py [--video ../shared/data/media/talking_face_pexels.mp4] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = ROOT.parent / "shared" / "data" / "media" / "talking_face_pexels.mp4"


class Clock:
    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c
        return False


def stages(video: Path, opts, fps: float) -> dict:
    """Each stage alone; returns {stage: {"wall": s, "cpu": s, ...}}."""
    from affectfuse.faces import align_face, load_mtcnn
    from affectfuse.inference.models import load_voice_model
    from affectfuse.media import iter_frames, read_audio
    from affectfuse.features.registry import create_extractor

    out = {}
    with Clock() as c:
        small = [b for b in iter_frames(video, batch_size=32, max_side=opts.detect_max_side)]
    out["decode (detection size)"] = {"wall": c.wall, "cpu": c.cpu}
    with Clock() as c:
        full = [b for b in iter_frames(video, batch_size=32)]
    out["decode (full size)"] = {"wall": c.wall, "cpu": c.cpu}
    frames = sum(len(b) for b in full)
    det = load_mtcnn(min_face_size=opts.min_face_size)
    with Clock() as c:
        dets = [d for b in small for d in det.detect(b.images)]
    out["detect (every frame)"] = {"wall": c.wall, "cpu": c.cpu, "frames_with_face": sum(len(d) > 0 for d in dets)}
    every = max(1, int(round(fps / opts.detect_fps))) if opts.detect_fps else 1
    imgs = np.concatenate([b.images for b in small])[::every]
    with Clock() as c:
        for k in range(0, len(imgs), 32):
            det.detect(imgs[k:k + 32])
    out[f"detect (every {every} frames, ~{opts.detect_fps:g}/s as predict does)"] = {"wall": c.wall, "cpu": c.cpu}
    scale = small[0].scale
    with Clock() as c:
        crops = [align_face(img, d.landmarks[0] / scale, 112) for b, ds in zip(full, _chunks(dets, full))
                 for img, d in zip(b.images, ds) if len(d)]
    out["align"] = {"wall": c.wall, "cpu": c.cpu}
    net = create_extractor("faceexpressionnet")
    with Clock() as c:
        for k in range(0, len(crops), 32):
            net.predict_abaw(np.stack(crops[k:k + 32]))
    out["face features + expression head"] = {"wall": c.wall, "cpu": c.cpu}
    with Clock() as c:
        audio = read_audio(video, 16000)
        voice = load_voice_model("default")
        if audio is not None:
            voice(audio)
    out["voice (decode + eGeMAPS + head)"] = {"wall": c.wall, "cpu": c.cpu}
    return {"frames": frames, "stages": out}


def _chunks(dets, batches):
    k = 0
    for b in batches:
        yield dets[k:k + len(b)]
        k += len(b)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--skip-naive", action="store_true", help="leave out the naive end-to-end run")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if not args.video.is_file():
        raise SystemExit(f"{args.video}: benchmark video not found (../shared/data/media)")
    torch.set_num_threads(2)
    from affectfuse.inference.video import PredictOptions, VideoPredictor
    from affectfuse.media import probe

    info = probe(args.video)
    opts = PredictOptions()
    load = os.getloadavg()[0]
    with Clock() as c_load:
        predictor = VideoPredictor(opts)
    with tempfile.TemporaryDirectory() as tmp, Clock() as c_e2e:
        summary = predictor.predict(args.video, Path(tmp) / args.video.stem)
    result = {"video": str(args.video), "duration_s": info.duration_s, "load_average_1min": load,
              "model_loading": {"wall": c_load.wall, "cpu": c_load.cpu},
              "end_to_end": {"wall": c_e2e.wall, "cpu": c_e2e.cpu, "frames": summary["media"]["analysed_frames"],
                             "face_found_frames": summary["expressions"]["face_found_frames"],
                             "realtime_factor": c_e2e.wall / info.duration_s, "timer": summary["timings_s"]}}
    if not args.skip_naive:  # the naive way: every frame detected at full resolution
        naive = VideoPredictor(PredictOptions(detect_max_side=None, detect_fps=None))
        with tempfile.TemporaryDirectory() as tmp, Clock() as c_naive:
            s_naive = naive.predict(args.video, Path(tmp) / args.video.stem)
        result["naive_end_to_end"] = {"wall": c_naive.wall, "cpu": c_naive.cpu, "timer": s_naive["timings_s"],
                                      "speedup_wall": c_naive.wall / c_e2e.wall}
    result.update(stages(args.video, opts, info.fps))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["load_average_1min_end"] = os.getloadavg()[0]
    e = result["end_to_end"]
    print(f"{args.video.name}: {e['frames']} frames, {info.duration_s:.1f} s of video")
    print(f"end to end: {e['wall']:.2f} s wall ({e['realtime_factor']:.2f} x real time), {e['cpu']:.2f} s CPU; "
          f"load average {load:.1f}")
    print("pipeline timer (s):", json.dumps(e["timer"]))
    if "naive_end_to_end" in result:
        n = result["naive_end_to_end"]
        print(f"naive (every frame detected at full size): {n['wall']:.2f} s wall, {n['cpu']:.2f} s CPU; "
              f"ours is {n['speedup_wall']:.1f}x faster; timer {json.dumps(n['timer'])}")
    for name, s in result["stages"].items():
        print(f"  {name:42s} {s['wall']:7.2f} s wall {s['cpu']:7.2f} s CPU  {1000 * s['cpu'] / result['frames']:6.1f} ms CPU/frame")
    print(f"peak RSS {result['peak_rss_mb']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
