"""Benchmark: one training step of the paper's ERI model (d=256, audio 1024, visual 1536, A+V+AV).

    python benchmarks/bench_eri_train.py            # 16,000 synthetic clips x 30 steps, batch 256

Measures, in one run on this machine:
- seconds per step (median of ``--steps`` timed steps after ``--warmup``) and the epoch extrapolated
  from it (ceil(clips / batch) steps); samples/s; the share of step time spent fetching a batch from
  the in-memory feature tensors (index + cast), which must stay <= 5 %;
- FLOPs of one training step (forward + backward) counted with torch.utils.flop_counter, the achieved
  FLOP/s and its fraction of this machine's fp32 matmul peak, measured here with a large torch.mm;
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
import platform
import resource
import statistics
import time

import torch

from affectfuse.data.sequences import SequenceData
from affectfuse.data.synthetic import make_eri_arrays
from affectfuse.labels import ERI_EMOTIONS
from affectfuse.models.eri import ERIFusion, ERIFusionArgs, count_parameters
from affectfuse.training.config import RunConfig
from affectfuse.training.eri import eri_loss


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def matmul_peak(dtype=torch.float32, n: int = 2048, reps: int = 5) -> float:
    """Best achieved FLOP/s of an n x n matmul (the machine's practical peak for that dtype)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


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
        t0 = time.perf_counter()
        feats, masks, labels = data.batch(idx)
        t1 = time.perf_counter()
        losses.append(trainer.step(feats, masks, labels))
        t2 = time.perf_counter()
        if i >= warmup:
            load_s.append(t1 - t0)
            step_s.append(t2 - t0)
    return {"step_s": statistics.median(step_s), "load_s": statistics.median(load_s), "losses": losses}


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
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--storage", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--variants", nargs="*", default=["bf16", "compile"], choices=["bf16", "compile"])
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = RunConfig().train
    res = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                      f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}",
           "clips": a.clips, "seq_len": a.seq_len, "batch": a.batch}
    res["fp32_matmul_peak_gflops"] = matmul_peak() / 1e9
    res["bf16_matmul_peak_gflops"] = matmul_peak(torch.bfloat16) / 1e9
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
    runs = {}
    variants = [("fp32 eager", False, False)] + [(v, v == "bf16", v == "compile") for v in a.variants]
    for name, autocast, compiled in variants:
        model.load_state_dict(init)
        torch.manual_seed(1)
        trainer = Trainer(model, cfg, autocast=autocast, compiled=compiled)
        t = time.perf_counter()
        r = time_steps(trainer, data, a.batch, a.warmup, a.steps)
        r["wall_s"] = time.perf_counter() - t
        r["epoch_s"] = r["step_s"] * steps_per_epoch
        r["samples_per_s"] = a.batch / r["step_s"]
        r["load_fraction"] = r["load_s"] / r["step_s"]
        r["achieved_gflops"] = flops / r["step_s"] / 1e9
        r["fraction_of_fp32_peak"] = r["achieved_gflops"] / res["fp32_matmul_peak_gflops"]
        r["peak_rss_mb"] = rss_mb()
        model.eval()
        with torch.no_grad():
            feats, masks, _ = data.batch(torch.arange(a.batch))
            r["_pred"] = model(feats, masks)["intensity"]
        model.train()
        runs[name] = r
    ref = runs["fp32 eager"]
    ref_pred = ref.pop("_pred")
    for name, r in runs.items():
        r["max_abs_pred_diff_vs_fp32"] = float((r.pop("_pred", ref_pred) - ref_pred).abs().max())
        r["max_abs_loss_diff_vs_fp32"] = max(abs(x - y) for x, y in zip(r["losses"], ref["losses"]))
    res["variants"] = runs
    res["rss_before_data_mb"] = rss0
    print(json.dumps(res, indent=1, default=float))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=1, default=float)
    return res


if __name__ == "__main__":
    main()
