"""Speed of the face backbones and DenseNet121: images/s and achieved GFLOP/s, fp32 eager against faster paths.

Run (one command; prints a markdown section for docs/benchmarks.md)::

    python benchmarks/bench_backbones.py                 # all backbones, batch 2
    python benchmarks/bench_backbones.py --only ViT-B/16 --batch 4 --compile

For every backbone (random weights: speed does not depend on the values) and every path:

- FLOPs per image from ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add);
- images per CPU-second = batch / median **CPU time** (this process, all its threads) of a forward pass
  (after one warm-up pass; passes repeat until ``--min-time`` CPU seconds or ``--reps`` passes), so that
  other jobs on a shared machine do not count;
- achieved GFLOP per CPU-second and its fraction of the machine's fp32 and bf16 matmul peaks, each
  measured in the same run by ``benchmarks/machine.py`` (2048^2 and 4096^2 ``torch.mm``, 5 repetitions
  each, CPU time, the same thread count; before and after the backbones, the larger is used);
- cosine similarity of the path's output to fp32 eager (flattened per image; the minimum over the batch).

Paths: ``fp32`` eager; ``+CL`` channels-last memory format (CNNs); ``bf16`` autocast; ``compile``
torch.compile (inductor, fp32) with ``--compile``. bf16 paths are skipped for the big transformer backbones
when the CPU has no bf16 units (there bf16 is computed by conversion, 10-40x slower) unless ``--bf16-all``.
The best path is the fastest with cosine >= 0.9999.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from affectfuse.features.face_common import bf16_supported
from affectfuse.features.faceapi import FaceExpressionNet
from affectfuse.features.inception_resnet import InceptionResnetV1
from affectfuse.features.ir50 import IR50
from affectfuse.features.poster_v2 import PosterV2
from affectfuse.features.regnet import regnet_y_trunk
from affectfuse.features.vit import ViTB16

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine_info, matmul_peak  # noqa: E402

MIN_COSINE = 0.9999


class Flatten(nn.Module):
    """Wrap a backbone whose output is a tuple of maps: (N, ...) each -> (N, D) concatenated."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        out = self.net(x)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return torch.cat([o.flatten(1) for o in out], 1)


def densenet121_features() -> nn.Module:
    """DenseNet121 trunk + global average pool: (N, 3, 224, 224) -> (N, 1024) (DeepSpectrum's feature)."""
    net = torchvision.models.densenet121(weights=None)
    return nn.Sequential(net.features, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


# name -> (builder, input side, is a transformer)
BACKBONES = {
    "FaceExpressionNet": (FaceExpressionNet, 112, False),
    "IR-50 (stages 1-3)": (IR50, 112, False),
    "POSTER V2": (PosterV2, 224, True),
    "ViT-B/16": (ViTB16, 224, True),
    "InceptionResnetV1": (InceptionResnetV1, 160, False),
    "RegNetY-1.6GF": (regnet_y_trunk, 224, False),
    "DenseNet121": (densenet121_features, 224, False),
}


def time_forward(fn, x, min_time: float, reps: int) -> float:
    """Median CPU seconds (this process, all threads) of ``fn(x)`` after a warm-up call."""
    fn(x)
    times, start = [], time.process_time()
    while len(times) < reps and (not times or time.process_time() - start < min_time):
        t = time.process_time()
        fn(x)
        times.append(time.process_time() - t)
    return statistics.median(times)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.float().flatten(1), b.float().flatten(1), dim=1).min().item()


def paths_for(transformer: bool, args) -> list[tuple[str, bool, bool, bool]]:
    """(name, channels_last, bf16 autocast, torch.compile) for each path to measure."""
    out = [("fp32", False, False, False)]
    if not transformer:
        out.append(("fp32+CL", True, False, False))
    if bf16_supported() or args.bf16_all or not transformer:
        out.append(("bf16", False, True, False))
        if not transformer:
            out.append(("bf16+CL", True, True, False))
    if args.compile:
        out.append(("compile", False, False, True))
    return out


def make_fn(model: nn.Module, cl: bool, bf16: bool, compiled: bool):
    """Put ``model`` in the path's memory format and return x -> fp32 output."""
    model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
    net = torch.compile(model) if compiled else model

    def fn(x):
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return net(x).float()
    return fn


def bench(args) -> str:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    info0 = machine_info()
    peaks0 = {d: matmul_peak(d, threads=args.threads) for d in ("fp32", "bf16")}
    rows, best = [], {}
    for name, (builder, size, transformer) in BACKBONES.items():
        if args.only and name not in args.only:
            continue
        model = Flatten(builder()).eval()
        x = torch.randn(args.batch, 3, size, size)
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            reference = model(x)
        gflop = counter.get_total_flops() / args.batch / 1e9
        results = {}
        for path, cl, bf16, compiled in paths_for(transformer, args):
            fn = make_fn(model, cl, bf16, compiled)
            seconds = time_forward(fn, x, args.min_time, args.reps)
            results[path] = (args.batch / seconds, cosine(fn(x), reference))
            print(f"  {name:20s} {path:8s} {results[path][0]:7.2f} img per CPU-s  cos {results[path][1]:.6f}", flush=True)
        rows.append((name, size, gflop, results))
    peaks1 = {d: matmul_peak(d, threads=args.threads) for d in ("fp32", "bf16")}
    info1 = machine_info()
    fp32_peak, bf16_peak = (max(peaks0[d]["gflops"], peaks1[d]["gflops"]) for d in ("fp32", "bf16"))

    lines = [f"Machine at start: {describe(info0)}; at end: load average "
             f"{'/'.join(f'{x:.2f}' for x in info1['load_average'])}, {info1['date_utc']}. {args.threads} intra-op "
             f"thread(s), batch {args.batch}, median CPU time of up to {args.reps} passes after one warm-up, random "
             f"weights.",
             "",
             f"Matmul peaks in the same run (benchmarks/machine.py: 2048^2 and 4096^2, 5 reps each, GFLOP per CPU-s; "
             f"start / end, the larger is used): fp32 {peaks0['fp32']['gflops']:.1f} / {peaks1['fp32']['gflops']:.1f}, "
             f"bf16 {peaks0['bf16']['gflops']:.1f} / {peaks1['bf16']['gflops']:.1f}.",
             "",
             "| backbone | input | GFLOP/img | path | img per CPU-s | GFLOP per CPU-s | % fp32 peak | % bf16 peak "
             "| cos vs fp32 | speed-up |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, size, gflop, results in rows:
        base = results["fp32"][0]
        ok = {p: r for p, r in results.items() if r[1] >= MIN_COSINE}
        best[name] = max(ok, key=lambda p: ok[p][0])
        for path, (ips, cos) in results.items():
            rate = ips * gflop
            mark = " **best**" if path == best[name] else ""
            lines.append(f"| {name} | {size} | {gflop:.2f} | {path}{mark} | {ips:.2f} | {rate:.1f} | "
                         f"{100 * rate / fp32_peak:.0f} % | {100 * rate / bf16_peak:.0f} % | {cos:.6f} | "
                         f"{ips / base:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=2.0, help="CPU seconds of timed passes per path")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="backbone names to run (default: all)")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile)")
    parser.add_argument("--bf16-all", action="store_true", help="bf16 also for transformers without bf16 units")
    args = parser.parse_args(argv)
    print(bench(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
