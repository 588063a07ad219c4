"""Benchmark: one training step of the paper's ERI model against this machine's peak, per precision.

    python benchmarks/bench_eri_train.py                 # fp32 and the precision `auto` picks here
    python benchmarks/bench_eri_train.py --profile       # + where the step's CPU time goes (GEMM or not)

The step is the default recipe's, run by the training code itself: the paper's model (``eri_fusion``, d = 256,
audio 1024 + visual 1536, A+V+AV, behind its input standardisation, probe-started path on), batch 256
backwarded in micro-batches of 64 (``training.eri.backward_batch``) under the precision's autocast, then
clipping, Adam and the EMA update (``training.step.apply_gradients``, what the engine calls). Per precision,
in one run on this machine:

- CPU seconds per step (this process, all its threads; median of ``--steps`` after ``--warmup``), so other
  jobs on a shared machine do not count;
- the step's FLOPs (forward + backward, ``torch.utils.flop_counter.FlopCounterMode``; the same count for
  every precision), the achieved GFLOP per CPU-second and its **fraction of this machine's matmul peak for
  that precision**, measured in the same run with the same thread count (``benchmarks/machine.py``);
- with ``--profile``: the step's self CPU time per operator (``torch.profiler``), split into GEMM/convolution
  kernels and the rest (optimizer, EMA, layer norm, softmax, elementwise, casts).

The clips are synthetic (``make_eri_arrays``, in RAM; only their count per step matters here).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from affectfuse.data.sequences import from_arrays
from affectfuse.data.synthetic import make_eri_arrays
from affectfuse.labels import ERI_EMOTIONS
from affectfuse.models.eri import count_parameters
from affectfuse.training.config import resolve_config
from affectfuse.training.eri import backward_batch, build_model, model_args
from affectfuse.training.precision import keep_heads_in_fp32, resolve_precision
from affectfuse.training.step import apply_gradients

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine_info, peaks  # noqa: E402

GEMM_OPS = ("addmm", "mm", "bmm", "baddbmm", "matmul", "linear", "convolution", "conv1d", "mkldnn", "_scaled_dot",
            "flash_attention", "_efficient_attention")


class Step:
    """The recipe's optimisation step around one model: micro-batched backward, clip, Adam, EMA."""

    def __init__(self, cfg, data, precision: str, optimizer: str):
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        torch.manual_seed(0)
        self.tc, self.data, self.precision = cfg.train, data, precision
        self.model, _ = build_model(cfg, model_args(cfg, data.dims(), data.labels.shape[1]), data)
        if precision == "bf16":
            keep_heads_in_fp32(self.model)
        kw = {"foreach": True} if optimizer == "foreach" else {"fused": True} if optimizer == "fused" else {}
        self.opt = torch.optim.Adam(self.model.parameters(), lr=self.tc.lr, weight_decay=self.tc.weight_decay, **kw)
        self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(self.tc.ema_decay), use_buffers=True)

    def __call__(self, index: torch.Tensor) -> float:
        self.opt.zero_grad(set_to_none=True)
        sums = backward_batch(self.model, self.data, index, self.tc, self.precision)
        apply_gradients(self.model, self.opt, self.tc.clip_norm, self.ema)
        return float(sums[0] / len(index))


def count_flops(step: Step, index: torch.Tensor) -> int:
    """FLOPs of one step's forward and backward passes (fp32; autocast does not change the count)."""
    from torch.utils.flop_counter import FlopCounterMode

    step.model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counter:
        backward_batch(step.model, step.data, index, step.tc, "fp32")
    step.model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def time_steps(step: Step, batch: int, warmup: int, steps: int) -> dict:
    perm = torch.randperm(len(step.data), generator=torch.Generator().manual_seed(0))
    cpu, losses = [], []
    for i in range(warmup + steps):
        index = perm[(i * batch) % len(step.data):][:batch]
        c0 = time.process_time()
        losses.append(step(index))
        if i >= warmup:
            cpu.append(time.process_time() - c0)
    return {"step_cpu_s": statistics.median(cpu), "all_cpu_s": [round(c, 3) for c in cpu],
            "losses": [round(x, 6) for x in losses]}


def profile_step(step: Step, index: torch.Tensor, top: int = 14) -> dict:
    """Self CPU time of one step per operator: GEMM/convolution kernels vs the rest."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(index)
    rows = [(e.key, e.self_cpu_time_total / 1e6) for e in prof.key_averages()]
    total = sum(t for _, t in rows)
    gemm = sum(t for k, t in rows if any(g in k for g in GEMM_OPS))
    rows.sort(key=lambda r: -r[1])
    return {"self_cpu_s": round(total, 3), "gemm_share": round(gemm / max(total, 1e-9), 3),
            "top": [(k, round(t, 3), round(t / max(total, 1e-9), 3)) for k, t in rows[:top]]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=1024, help="synthetic clips in RAM (steps cycle over them)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--micro-batch", type=int, default=64)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precisions", nargs="+", default=None, choices=["fp32", "bf16"],
                   help="default: fp32 and the one train.precision=auto resolves to here")
    p.add_argument("--optimizer", choices=["default", "foreach", "fused"], default="default",
                   help="Adam's implementation (default: what training uses)")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    chosen = resolve_precision("auto")
    precisions = a.precisions or sorted({"fp32", chosen}, key=["fp32", "bf16"].index)
    res = {"machine": describe(machine_info()), "threads": torch.get_num_threads(), "auto_precision": chosen,
           "batch": a.batch, "micro_batch": a.micro_batch, "optimizer": a.optimizer}
    print(res["machine"], flush=True)
    feats, labels = make_eri_arrays(a.clips, steps=30, seed=0)
    data = from_arrays(feats, labels, ERI_EMOTIONS)
    del feats
    cfg = resolve_config(None, [f"train.micro_batch={a.micro_batch}", f"train.batch_size={a.batch}"])
    pk = peaks(threads=a.threads)
    res["peak_gflops"] = {d: round(v["gflops"], 1) for d, v in pk.items()}
    flops = None
    res["runs"] = {}
    for precision in precisions:
        step = Step(cfg, data, precision, a.optimizer)
        if flops is None:
            flops = count_flops(step, torch.arange(a.batch))
            res.update(parameters=count_parameters(step.model), step_gflop=round(flops / 1e9, 1))
        r = time_steps(step, a.batch, a.warmup, a.steps)
        r["gflops_per_cpu_s"] = round(flops / r["step_cpu_s"] / 1e9, 1)
        r["fraction_of_peak"] = round(r["gflops_per_cpu_s"] / res["peak_gflops"][precision], 3)
        r["clips_per_cpu_s"] = round(a.batch / r["step_cpu_s"], 1)
        if a.profile:
            r["profile"] = profile_step(step, torch.arange(a.batch))
        res["runs"][precision] = r
        print(json.dumps({precision: r}), flush=True)
    end = peaks(threads=a.threads)
    res["peak_gflops_end"] = {d: round(v["gflops"], 1) for d, v in end.items()}
    if "fp32" in res["runs"] and "bf16" in res["runs"]:
        res["bf16_speedup_per_cpu_s"] = round(res["runs"]["fp32"]["step_cpu_s"] / res["runs"]["bf16"]["step_cpu_s"], 2)
    res["machine_end"] = describe(machine_info())
    print(json.dumps(res, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
