"""Extraction pipeline (decode + detect + align + features) against the face network alone, in one run.

For each extractor and analysed frame rate, on a real clip, in this process with 1 intra-op thread, CPU
seconds (``time.process_time``: user + sys of this process; a job waiting for a core on a loaded machine is
not charged):

- **backbone only**: the extractor on the already cut crops of the found faces, batches of ``--batch-size``
  (extract's default 32) cycled for at least 5 CPU-s, after one warm-up batch (the decode side and the whole
  pipeline, too, are warmed up by one untimed pass before the first row);
- **decode side**: :func:`affectfuse.features.pipeline.decode_video` -- what an ``extract --workers N`` worker
  process does per video: decode, detect, track, interpolate, cut the crops; per path: **ours** (the defaults:
  detection at 8 frames/s on 320-px copies, one decoding pass) and **naive** (every sampled frame detected at
  full size, ``--detect-fps 0 --detect-max-side 0``: the path of ``extract`` before issue 16);
- **pipeline**: the whole :func:`affectfuse.features.pipeline.extract` of the clip in this process
  (``workers=0``): decode side + networks + writing the feature file.

Throughput (analysed frames per CPU-second) is counted two ways, both printed:

- **1 core**: everything in one process, one after the other: pipeline vs backbone only;
- **2 cores** (``extract --workers 1`` with the main process only waiting: decoding in a worker process, the
  networks in the main one, on the next video while the worker decodes the one after; ``--dataset`` measures
  the real thing, where the main process decodes too): a two-stage pipeline runs at its slower stage, so
  ``frames / max(decode side, networks + write)`` against ``frames / backbone only``, both stages timed
  within the one pipeline run (the CPU seconds spent in its ``iter_decoded``, and the rest). This is
  computed from CPU seconds, because wall time on a shared, loaded machine measures the queue.

Detection quality next to it: frames with the face found and the box IoU of the main face against MTCNN at
full size on every analysed frame.

**Dataset** (``--dataset K``, for every ``--runs`` entry): ``extract`` of K copies of the clip (K videos),
decoding in this process only (``--workers 0``), with one worker process that this process waits for (the old
``--workers 1``), and with one worker while this process decodes too whenever no worker's video is ready
(``--workers 1`` now, and the default from 8 videos on 2 cores): wall seconds, this process's and the worker's
CPU seconds (``RUSAGE_CHILDREN``: its start-up included), which process decoded how many videos; throughput
per frame against the backbone only, by wall time and by the 2-core CPU model (the busier process's CPU). The
backbone is timed again just before and just after each path (the mean is the reference; the machine's speed
drifts by up to ~20 % over minutes, so the single-clip row's figure, taken earlier, is not used). A second
reference, free of that drift: the backbone timed inside the run itself (this process's CPU seconds in the
extractor's calls per row), under the run's conditions -- the other core busy with decoding, the caches shared
-- so that the ratio against it measures what the pipeline adds, not what the host does.

Bytecode: the benchmark re-runs itself with a private ``PYTHONPYCACHEPREFIX`` when the environment forbids
writing ``.pyc`` files (``machine.user_bytecode_env``), so that a worker's start-up imports what a user's
compiled install gives (this process's first pass fills the cache before any worker starts).

Usage::

    python benchmarks/bench_extract.py [--video ../shared/data/media/talking_face_pexels.mp4]
        [--runs "faceexpressionnet:5" "faceexpressionnet:0" "posterv2:5"] [--dataset K] [--json OUT.json]

``NAME[@RUNTIME]:FPS``: extractor (POSTER V2 with random weights: speed only), optionally its runtime
(``faceexpressionnet@torch``: PyTorch instead of its default ONNX Runtime), and analysed frames/s (0 = every
frame).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detect_quality import main_face_iou, reference  # noqa: E402
from machine import describe, machine_info, user_bytecode_env  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = ROOT.parent / "shared" / "data" / "media" / "talking_face_pexels.mp4"
PATHS = {"ours": {}, "naive": {"detect_fps": None, "detect_max_side": None}}
RANDOM = {"posterv2", "posterv2-vit"}  # no pretrained file offline: random weights (speed is the same)


def _cpu(fn):
    start = time.process_time()
    out = fn()
    return time.process_time() - start, out


@contextlib.contextmanager
def _iter_decoded_as(wrap):
    """``affectfuse.features.pipeline.iter_decoded`` (what ``extract`` decodes through) replaced by
    ``wrap(original)`` inside the block."""
    import affectfuse.features.pipeline as pl

    original = pl.iter_decoded
    pl.iter_decoded = wrap(original)
    try:
        yield
    finally:
        pl.iter_decoded = original


def _pipeline_split(fn):
    """CPU s of ``fn()`` (an in-process ``extract``) and of the part spent producing decoded videos
    (``iter_decoded``'s ``next``: decode, detect, align, crops), both from this one run."""
    spent = [0.0]

    def timing(original):
        def timed(*args, **kwargs):
            it = original(*args, **kwargs)
            while True:
                start = time.process_time()
                video = next(it, None)
                spent[0] += time.process_time() - start
                if video is None:
                    return
                yield video

        return timed

    with _iter_decoded_as(timing):
        cpu, out = _cpu(fn)
    return cpu, spent[0], out


def _box_quality(video, fps, decoded, detector) -> dict:
    """Faces found and IoU of the main face's box against MTCNN at full size on every analysed frame."""
    import numpy as np

    ref_found, ref_boxes, _ = reference([video], detector, fps)[video]
    found = decoded["found"]
    _, iou = main_face_iou(ref_found, ref_boxes, found, decoded["boxes"])
    return {"frames": int(len(found)), "found": int(found.sum()), "found_full_size": int(ref_found.sum()),
            "iou_median": float(np.median(iou)) if len(iou) else None,
            "iou_min": float(np.min(iou)) if len(iou) else None}


def _decode_side(video, fps, path_opts, ext, detector) -> tuple[float, dict]:
    """CPU s of extract's per-video work unit for one extractor, and its faces."""
    import numpy as np

    from affectfuse.faces.sparse import iter_faces_sparse
    from affectfuse.features.decoding import decode_plan, decode_video
    from affectfuse.features.inputs import MediaItem

    plan = decode_plan({ext.name: ext}, [ext.name], fps=fps, **path_opts)
    cpu, out = _cpu(lambda: decode_video(MediaItem(video.stem, str(video)), plan, detector))
    if out.face_error:
        raise SystemExit(out.face_error)
    opts = {"detect_fps": plan.detect_fps, "detect_max_side": plan.detect_max_side}
    boxes = np.concatenate([b.boxes for b in iter_faces_sparse(video, detector, fps=fps, **opts)])
    return cpu, {"found": out.found, "boxes": boxes, "crops": out.crops[ext.input.crop]}


@functools.lru_cache(maxsize=None)
def _run(spec: str):
    """``NAME[@RUNTIME]:FPS`` -> name, runtime ("" = the extractor's default), analysed fps (None = every frame)
    and the built extractor (built once per spec: the rows and the dataset share it)."""
    from affectfuse.features.build import build_extractors

    name, _, rate = spec.partition(":")
    name, _, runtime = name.partition("@")
    fps = (float(rate) or None) if rate else 5.0
    return name, runtime, fps, build_extractors([name], random_weights=name in RANDOM, runtime=runtime or None)[0]


def _backbone_ms(ext, crops, batch_size: int, min_s: float = 5.0) -> float:
    """Backbone only, CPU ms a frame: ``ext`` on batches of the clip's crops, cycled until ``min_s`` CPU-s."""
    frames, spent, start = 0, 0.0, 0
    while spent < min_s:
        batch = crops[start:start + batch_size]
        start = (start + batch_size) % len(crops)
        cpu, _ = _cpu(lambda: ext(batch))
        spent, frames = spent + cpu, frames + len(batch)
    return 1000 * spent / frames


def measure(video: Path, runs: list[str], batch_size: int) -> tuple[list[dict], dict]:
    """The single-clip rows, and per run spec the clip's crops of the found faces ((n, S, S, 3) uint8)."""
    import torch

    from affectfuse.faces import load_mtcnn
    from affectfuse.features.pipeline import extract
    from affectfuse.features.inputs import MediaItem

    torch.set_num_threads(1)
    detector = load_mtcnn()
    rows, crops_of = [], {}
    for spec in runs:
        name, runtime, fps, ext = _run(spec)
        row = {"extractor": name + (f" ({runtime})" if runtime else ""), "fps": fps, "random_weights": name in RANDOM}
        if not rows:  # warm-up: the process's first pass pays lazy imports and first calls, not per-frame work
            _decode_side(video, fps, PATHS["ours"], ext, detector)
            with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:  # and so does the first extract
                extract([MediaItem(video.stem, str(video))], [ext], tmp, fps=fps, batch_size=batch_size, progress=False)
        for label, opts in PATHS.items():
            cpu, faces = _decode_side(video, fps, opts, ext, detector)
            row[f"decode_side_{label}"] = cpu
            row[f"quality_{label}"] = _box_quality(video, fps, faces, detector)
            if label == "ours":
                crops, row["frames"] = faces["crops"], int(len(faces["found"]))
        row["faces"], crops_of[spec] = int(len(crops)), crops
        ext(crops[:batch_size])  # warm-up
        row["backbone"] = _backbone_ms(ext, crops, batch_size) * len(crops) / 1000  # CPU s for the clip's crops
        for label, opts in PATHS.items():
            with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
                cpu, decoding, report = _pipeline_split(lambda: extract(
                    [MediaItem(video.stem, str(video))], [ext], tmp, fps=fps, batch_size=batch_size,
                    progress=False, **opts))
            if not report.ok:
                raise SystemExit(f"extract failed: {report.failures}")
            row[f"pipeline_{label}"], row[f"pipeline_decoding_{label}"] = cpu, decoding
        rows.append(row)
        print(json.dumps(row, default=str), flush=True)
    return rows, crops_of


DATASET_PATHS = {"one process": (0, True), "1 worker, waits": (1, False), "1 worker, shares": (1, True)}


class _Timed:
    """The extractor, with the CPU seconds this process spends in its calls and the rows they return: the backbone
    timed inside a pipeline run, under the run's own conditions (the other core busy, caches shared)."""

    def __init__(self, ext):
        self._ext, self.cpu_s, self.rows = ext, 0.0, 0

    def __getattr__(self, name):
        return getattr(self._ext, name)

    def __call__(self, batch):
        start = time.process_time()
        out = self._ext(batch)
        self.cpu_s += time.process_time() - start
        self.rows += len(out)
        return out


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure_dataset(video: Path, spec: str, copies: int, batch_size: int, crops) -> list[dict]:
    """``extract`` of ``copies`` copies of ``video`` per :data:`DATASET_PATHS` entry (see the module doc), the
    backbone alone on the clip's ``crops`` timed just before and just after each (the machine's speed drifts
    over minutes)."""
    from affectfuse.features.inputs import MediaItem
    from affectfuse.features.pipeline import extract

    _, _, fps, ext = _run(spec)
    items = [MediaItem(f"copy{k:03d}", str(video)) for k in range(copies)]
    rows = []
    for label, (workers, share) in DATASET_PATHS.items():
        decoded = []

        def recording(original, share=share):
            def recorded(*args, **kwargs):
                for v in original(*args, share=share, **kwargs):
                    decoded.append((v.pid, v.cpu_s, 0 if v.found is None else len(v.found)))
                    yield v

            return recorded

        before, timed = _backbone_ms(ext, crops, batch_size), _Timed(ext)
        with _iter_decoded_as(recording), tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
            wall, cpu, children = time.time(), time.process_time(), _children_cpu()
            report = extract(items, [timed], tmp, fps=fps, batch_size=batch_size, workers=workers, progress=False)
            wall, cpu, children = time.time() - wall, time.process_time() - cpu, _children_cpu() - children
        if not report.ok:
            raise SystemExit(f"extract failed: {report.failures}")
        after = _backbone_ms(ext, crops, batch_size)
        here = [d for d in decoded if d[0] == os.getpid()]
        frames = sum(d[2] for d in decoded)
        rows.append({"path": label, "extractor": spec, "videos": copies, "frames": frames, "wall_s": wall,
                     "main_cpu_s": cpu, "worker_cpu_s": children, "decoded_here": len(here),
                     "decode_cpu_here_s": sum(d[1] for d in here),
                     "decode_cpu_worker_s": sum(d[1] for d in decoded if d[0] != os.getpid()),
                     "backbone_ms": (before + after) / 2, "backbone_ms_before_after": [before, after],
                     "backbone_in_run_ms": 1000 * timed.cpu_s / max(timed.rows, 1), "load": os.getloadavg()[0]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def report_dataset(rows: list[dict]) -> None:
    print("\ndataset | path | videos decoded here / by the worker | wall s (load) | CPU s this process / worker "
          "(its start-up + decoding) | ms per frame: wall / 2-core CPU model | backbone only, ms a frame: mean "
          "(just before / after) | throughput vs backbone only: wall / CPU model | the same against the backbone "
          "timed in the run: ms a frame, wall / CPU model")
    for r in rows:
        n, busier = r["frames"], max(r["main_cpu_s"], r["worker_cpu_s"])
        startup = r["worker_cpu_s"] - r["decode_cpu_worker_s"]
        print(f"{r['videos']} x {r['extractor']} | {r['path']} | {r['decoded_here']} / {r['videos'] - r['decoded_here']} | "
              f"{r['wall_s']:.1f} ({r['load']:.2f}) | {r['main_cpu_s']:.1f} / {r['worker_cpu_s']:.1f} "
              f"({startup:.1f} + {r['decode_cpu_worker_s']:.1f}) | {1000 * r['wall_s'] / n:.2f} / {1000 * busier / n:.2f} | "
              f"{r['backbone_ms']:.2f} ({' / '.join(f'{x:.2f}' for x in r['backbone_ms_before_after'])}) | "
              f"{r['backbone_ms'] * n / 1000 / r['wall_s']:.0%} / "
              f"{r['backbone_ms'] * n / 1000 / busier:.0%} | {r['backbone_in_run_ms']:.2f}, "
              f"{r['backbone_in_run_ms'] * n / 1000 / r['wall_s']:.0%} / {r['backbone_in_run_ms'] * n / 1000 / busier:.0%}")


def report(rows: list[dict], result: dict) -> None:
    print(f"\nmachine: {describe(result['machine'])}")
    print(f"video: {result['video']}; load average {result['load_start']:.2f} at the start, {result['load_end']:.2f} "
          f"at the end; {result['started']} - {result['ended']} UTC; 1 intra-op thread; CPU seconds")
    print("\nextractor | analysed fps | path | frames (faces) | ms CPU per frame: decode side / networks+write "
          "(split of the pipeline run) / decode side alone / backbone only | 1 core: pipeline vs backbone | "
          "2 cores: pipeline vs backbone | found (full size) | IoU median (min)")
    for r in rows:
        n = r["frames"]
        for label in PATHS:
            pipe, back = r[f"pipeline_{label}"], r["backbone"]
            dec = r.get(f"pipeline_decoding_{label}", r[f"decode_side_{label}"])  # the same run's split
            rest = max(pipe - dec, 1e-9)
            q = r[f"quality_{label}"]
            print(f"{r['extractor']}{' (random weights)' if r['random_weights'] else ''} | "
                  f"{r['fps'] or 'every frame'} | {label} | {n} ({r['faces']}) | "
                  f"{1000 * dec / n:.1f} / {1000 * rest / n:.1f} / {1000 * r[f'decode_side_{label}'] / n:.1f} / "
                  f"{1000 * back / n:.1f} | "
                  f"{back / pipe:.0%} | {back / max(dec, rest):.0%} | {q['found']} ({q['found_full_size']}) | "
                  f"{q['iou_median']:.3f} ({q['iou_min']:.3f})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--runs", nargs="+", default=["faceexpressionnet:5", "faceexpressionnet:0", "posterv2:5"],
                        help="NAME:FPS pairs (FPS 0 = every frame; default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dataset", type=int, default=0, metavar="K",
                        help="also extract K copies of the clip with each run's extractor (see the module doc)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if not args.video.is_file():
        raise SystemExit(f"{args.video}: benchmark video not found (../shared/data/media)")
    if sys.flags.dont_write_bytecode and argv is None:  # worker processes start as a user's do: with bytecode
        env = user_bytecode_env(Path(tempfile.gettempdir()) / "affectfuse_bench_pycache")
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    stamp = lambda: time.strftime("%Y-%m-%d %H:%M", time.gmtime())  # noqa: E731
    result = {"machine": machine_info(), "video": str(args.video), "load_start": os.getloadavg()[0],
              "started": stamp()}
    rows, crops_of = measure(args.video, args.runs, args.batch_size)
    dataset = [r for spec in args.runs if args.dataset
               for r in measure_dataset(args.video, spec, args.dataset, args.batch_size, crops_of[spec])]
    result.update(rows=rows, dataset=dataset, load_end=os.getloadavg()[0], ended=stamp())
    report(rows, result)
    if dataset:
        report_dataset(dataset)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
