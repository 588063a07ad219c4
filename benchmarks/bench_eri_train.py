"""Benchmark: one training step of the paper's ERI model (d=256, audio 1024, visual 1536, A+V+AV).

    python benchmarks/bench_eri_train.py            # 16,000 synthetic clips x 30 steps, batch 256

Measures, in one run on this machine:
- CPU seconds per step (this process, all threads; median of ``--steps`` timed steps after ``--warmup``),
  so that other jobs on a shared machine do not count, and the epoch extrapolated
  from it (ceil(clips / batch) steps); samples/s; the share of step time spent fetching a batch from
  the in-memory feature tensors (index + cast), which must stay <= 5 %;
- FLOPs of one training step (forward + backward) counted with torch.utils.flop_counter, the achieved
  FLOP per CPU-second and its fraction of this machine's peak for the precision used (fp32, and bf16 for
  the autocast variant), both measured in the same run by ``benchmarks/machine.py`` (2048^2 and 4096^2
  ``torch.mm``, 5 repetitions each, CPU time, the same thread count);
- peak resident memory (ru_maxrss) before and after training steps;
- bf16 autocast and torch.compile: step time, and how far their losses/predictions drift from fp32
  eager after the same steps on the same batches from the same initial weights.

Features are held in memory as bf16 by default (2.5 GB for 16,000 x 30 x 2,560; fp32 would take
4.9 GB on a shared 23 GB machine) and cast to fp32 per batch; the cast is part of the measured
data-loading time.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from affectfuse.data.sequences import SequenceData
from affectfuse.data.synthetic import make_eri_arrays
from affectfuse.labels import ERI_EMOTIONS
from affectfuse.models.eri import ERIFusion, ERIFusionArgs, count_parameters
from affectfuse.training.config import RunConfig
from affectfuse.training.eri import eri_loss

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine_info, peaks  # noqa: E402


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_data(clips: int, steps: int, storage: torch.dtype, chunk: int = 2000) -> SequenceData:
    feats = {"audio": [], "visual": []}
    labels = []
    for i, start in enumerate(range(0, clips, chunk)):
        f, y = make_eri_arrays(min(chunk, clips - start), steps=steps, seed=100 + i)
        for k in feats:
            feats[k].append(torch.from_numpy(f[k]).to(storage))
        labels.append(torch.from_numpy(y))
        del f
    feats = {k: torch.cat(v) for k, v in feats.items()}
    masks = {k: torch.ones(v.shape[:2], dtype=torch.bool) for k, v in feats.items()}
    ids = [str(i) for i in range(clips)]
    return SequenceData(ids, ids, feats, masks, torch.cat(labels), list(ERI_EMOTIONS))


class Trainer:
    """The recipe's step (loss, backward, clip, Adam, EMA) around a model, optionally autocast/compiled."""

    def __init__(self, model, cfg, autocast: bool = False, compiled: bool = False):
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        self.model = model
        self.forward = torch.compile(model) if compiled else model
        self.cfg = cfg
        self.autocast = autocast
        self.opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)

    def step(self, feats, masks, labels) -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            out = self.forward(feats, masks)
        loss, _, _ = eri_loss(out, labels, self.cfg)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_norm)
        self.opt.step()
        self.ema.update_parameters(self.model)
        return float(loss.detach())


def time_steps(trainer: Trainer, data: SequenceData, batch: int, warmup: int, steps: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(data), generator=gen)
    load_s, step_s, losses = [], [], []
    for i in range(warmup + steps):
        idx = perm[(i * batch) % len(data):][:batch]
        t0 = time.process_time()
        feats, masks, labels = data.batch(idx)
        t1 = time.process_time()
        losses.append(trainer.step(feats, masks, labels))
        t2 = time.process_time()
        if i == 0:
            first_s = t2 - t0
        if i >= warmup:
            load_s.append(t1 - t0)
            step_s.append(t2 - t0)
    return {"step_s": statistics.median(step_s), "load_s": statistics.median(load_s), "losses": losses,
            "first_step_s": first_s}


def count_flops(model, data: SequenceData, batch: int, cfg) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    feats, masks, labels = data.batch(torch.arange(batch))
    with FlopCounterMode(display=False) as counter:
        loss, _, _ = eri_loss(model(feats, masks), labels, cfg)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=16000)
    p.add_argument("--seq-len", type=int, default=30)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=2, help="timed steps of the main (batch 256) measurement")
    p.add_argument("--variant-batch", type=int, default=32, help="batch of the torch.compile comparison")
    p.add_argument("--bf16-batch", type=int, default=2,
                   help="batch of the bf16 comparison (bf16 matmul is slow on CPUs without native bf16)")
    p.add_argument("--variant-steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--storage", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--variants", nargs="*", default=["bf16", "compile"], choices=["bf16", "compile"])
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = RunConfig().train
    res = {"machine": describe(machine_info()), "threads": torch.get_num_threads(),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "clips": a.clips, "seq_len": a.seq_len, "batch": a.batch}
    pk = peaks(threads=a.threads)
    res["fp32_matmul_peak_gflops"], res["bf16_matmul_peak_gflops"] = pk["fp32"]["gflops"], pk["bf16"]["gflops"]
    rss0 = rss_mb()
    t = time.perf_counter()
    data = make_data(a.clips, a.seq_len, torch.bfloat16 if a.storage == "bf16" else torch.float32)
    res["data_gen_s"] = time.perf_counter() - t
    res["rss_after_data_mb"] = rss_mb()
    res["data_mb"] = sum(v.numel() * v.element_size() for v in data.features.values()) / 2 ** 20
    torch.manual_seed(0)
    model = ERIFusion(ERIFusionArgs())
    init = copy.deepcopy(model.state_dict())
    res["parameters"] = count_parameters(model)
    flops = count_flops(model, data, a.batch, cfg)
    res["train_step_gflop"] = flops / 1e9
    res["gflop_per_clip"] = flops / 1e9 / a.batch

    steps_per_epoch = math.ceil(a.clips / a.batch)

    def measure(name, batch, warmup, steps, autocast=False, compiled=False):
        model.load_state_dict(init)
        torch.manual_seed(1)
        trainer = Trainer(model, cfg, autocast=autocast, compiled=compiled)
        t = time.perf_counter()
        r = time_steps(trainer, data, batch, warmup, steps)
        r.update(variant=name, batch=batch, wall_s=time.perf_counter() - t, samples_per_s=batch / r["step_s"],
                 load_fraction=r["load_s"] / r["step_s"], peak_rss_mb=rss_mb())
        model.eval()  # the trained weights' predictions, fp32 eager (how far training drifted)
        with torch.no_grad():
            feats, masks, _ = data.batch(torch.arange(batch))
            r["pred"] = model(feats, masks)["intensity"]
        model.train()
        return r

    # 1. the paper configuration at the recipe's batch size, fp32 eager
    main_run = measure("fp32 eager", a.batch, a.warmup, a.steps)
    main_run.pop("pred")
    main_run["epoch_s"] = main_run["step_s"] * steps_per_epoch
    main_run["achieved_gflops"] = flops / main_run["step_s"] / 1e9
    main_run["fraction_of_fp32_peak"] = main_run["achieved_gflops"] / res["fp32_matmul_peak_gflops"]
    res["main"] = main_run
    # 2. bf16 autocast and torch.compile against fp32 eager at the same (smaller) batch and batches
    res["variants"] = []
    for name in a.variants:
        batch = a.bf16_batch if name == "bf16" else a.variant_batch
        ref = measure("fp32 eager", batch, 1, a.variant_steps)
        var = measure(name, batch, 1, a.variant_steps, autocast=name == "bf16", compiled=name == "compile")
        var["speedup_vs_fp32"] = ref["step_s"] / var["step_s"]
        peak = res["bf16_matmul_peak_gflops" if name == "bf16" else "fp32_matmul_peak_gflops"]
        var["fraction_of_its_peak"] = flops / a.batch * batch / var["step_s"] / 1e9 / peak
        var["max_abs_pred_diff_vs_fp32"] = float((var.pop("pred") - ref.pop("pred")).abs().max())
        var["max_abs_loss_diff_vs_fp32"] = max(abs(x - y) for x, y in zip(var["losses"], ref["losses"]))
        res["variants"] += [ref, var]
    res["rss_before_data_mb"] = rss0
    print(json.dumps(res, indent=1, default=float))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=1, default=float)
    return res


if __name__ == "__main__":
    main()
