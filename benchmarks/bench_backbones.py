"""Speed of the face backbones and DenseNet121: images/s and achieved GFLOP/s, fp32 eager against faster paths.

Run (one command; prints a markdown section for docs/benchmarks.md)::

    python benchmarks/bench_backbones.py                 # all backbones, batch 2
    python benchmarks/bench_backbones.py --only ViT-B/16 --batch 4 --compile

For every backbone (random weights: speed does not depend on the values) and every path:

- FLOPs per image from ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add);
- images/s = batch / median wall time of a forward pass (after one warm-up pass; passes repeat until
  ``--min-time`` seconds or ``--reps`` passes);
- achieved GFLOP/s and its fraction of the machine's fp32 and bf16 matmul peaks, measured in the same run
  (square ``torch.mm``; before and after the backbones, the mean is used);
- cosine similarity of the path's output to fp32 eager (flattened per image; the minimum over the batch).

Paths: ``fp32`` eager; ``fp32+CL`` channels-last memory format; ``bf16`` autocast (``+CL`` for CNNs);
``compile`` torch.compile (inductor, fp32) with ``--compile``. bf16 paths are skipped for the big
transformer backbones when the CPU has no bf16 units (emulated bf16 runs 10-40x slower) unless ``--bf16-all``.
The best path is the fastest with cosine >= 0.999.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

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


def matmul_peak(dtype: torch.dtype, n: int, reps: int) -> float:
    """GFLOP/s of an (n x n) @ (n x n) matmul in ``dtype`` (best of ``reps``)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def time_forward(fn, x, min_time: float, reps: int) -> float:
    """Median seconds of ``fn(x)`` after a warm-up call."""
    fn(x)
    times, start = [], time.perf_counter()
    while len(times) < reps and (not times or time.perf_counter() - start < min_time):
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.float().flatten(1), b.float().flatten(1), dim=1).min().item()


def paths_for(transformer: bool, args) -> list[tuple[str, bool, bool, bool]]:
    """(name, channels_last, bf16 autocast, torch.compile) for each path to measure."""
    out = [("fp32", False, False, False)]
    if not transformer:
        out.append(("fp32+CL", True, False, False))
    if bf16_supported() or args.bf16_all or not transformer:
        out.append(("bf16" + ("" if transformer else "+CL"), not transformer, True, False))
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
    load0 = os.getloadavg()[0]
    peaks0 = (matmul_peak(torch.float32, 1024, 5), matmul_peak(torch.bfloat16, 512, 2))
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
            print(f"  {name:20s} {path:8s} {results[path][0]:7.2f} img/s  cos {results[path][1]:.6f}", flush=True)
        rows.append((name, size, gflop, results))
    peaks1 = (matmul_peak(torch.float32, 1024, 5), matmul_peak(torch.bfloat16, 512, 2))
    load1 = os.getloadavg()[0]
    fp32_peak, bf16_peak = (peaks0[0] + peaks1[0]) / 2, (peaks0[1] + peaks1[1]) / 2

    lines = [f"Machine: {platform.processor() or platform.machine()}, {args.threads} threads "
             f"(2-core shared VM, no GPU; bf16 units: {'yes' if bf16_supported() else 'no (emulated)'}), "
             f"torch {torch.__version__}, date {datetime.date.today()}. Batch {args.batch}, median of up to "
             f"{args.reps} timed passes after one warm-up, random weights. 1-minute load average at start / end: "
             f"{load0:.1f} / {load1:.1f} (other jobs share the 2 cores, so absolute figures are pessimistic; the "
             f"peaks are measured under the same load).",
             "",
             f"Matmul peaks measured in the same run (start / end): fp32 {peaks0[0]:.1f} / {peaks1[0]:.1f} GFLOP/s, "
             f"bf16 {peaks0[1]:.2f} / {peaks1[1]:.2f} GFLOP/s.",
             "",
             "| backbone | input | GFLOP/img | path | img/s | GFLOP/s | % fp32 peak | % bf16 peak | cos vs fp32 "
             "| speed-up |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, size, gflop, results in rows:
        base = results["fp32"][0]
        ok = {p: r for p, r in results.items() if r[1] >= 0.999}
        best[name] = max(ok, key=lambda p: ok[p][0])
        for path, (ips, cos) in results.items():
            rate = ips * gflop
            mark = " **best**" if path == best[name] else ""
            lines.append(f"| {name} | {size} | {gflop:.2f} | {path}{mark} | {ips:.2f} | {rate:.1f} | "
                         f"{100 * rate / fp32_peak:.0f} % | {100 * rate / bf16_peak:.0f} % | {cos:.5f} | "
                         f"{ips / base:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="backbone names to run (default: all)")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile)")
    parser.add_argument("--bf16-all", action="store_true", help="bf16 also for transformers without bf16 units")
    args = parser.parse_args(argv)
    print(bench(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
