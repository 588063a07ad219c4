"""Fine-tuning throughput: training images per second, and the crop input pipeline.

    python benchmarks/bench_finetune.py                                   # faceexpressionnet on CPU
    python benchmarks/bench_finetune.py --model posterv2-vit --device cuda --batch-size 64 --random-weights

Model steps (forward + backward + AdamW step on uint8 crops, the same :class:`ExpressionClassifier` and
loss as ``affectfuse finetune``; random crops, 8 classes):

- CPU: full fine-tuning vs ``--freeze`` of the first block (``dense0`` for faceexpressionnet), fp32;
- CUDA: fp32 vs bf16 autocast (what ``affectfuse finetune`` uses on GPU), and peak GPU memory.

Input pipeline (CPU, one worker): a training epoch over ``--items`` cached 112/224 px PNG crops with the
augmentation, decoding every PNG per item (naive) vs decoding once into memory (``preload``, the default
for sets under 1.5 GB). Timings are medians over ``--repeats`` runs after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def time_steps(model, device, batch_size: int, steps: int, amp: bool, repeats: int) -> float:
    """Median training images per second over ``repeats`` runs of ``steps`` steps."""
    from affectfuse.training.finetune import autocast

    size = int(model.size)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    x = torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8, device=device)
    y = torch.randint(0, len(model.classes), (batch_size,), device=device)
    model.train()

    def run(n):
        for _ in range(n):
            with autocast(device, amp):
                logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    run(2)  # warm-up
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(steps)
        rates.append(steps * batch_size / (time.perf_counter() - t0))
    return statistics.median(rates)


def time_pipeline(size: int, items: int, preload: bool, repeats: int) -> float:
    """Median images per second of an augmented epoch over ``items`` PNG crops (preloading done before)."""
    from PIL import Image

    from affectfuse.training.finetune_data import CropDataset

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        files = []
        for i in range(items):
            f = Path(tmp) / f"{i}.png"
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(f)
            files.append(f)
        ds = CropDataset(files, np.zeros(items, np.int64), size, train=True, preload=preload)  # once per run
        rates = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for i in range(len(ds)):
                ds[i]
            rates.append(items / (time.perf_counter() - t0))
        return statistics.median(rates)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="faceexpressionnet")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--freeze", default="dense0", help="CPU comparison: parameters kept fixed")
    parser.add_argument("--items", type=int, default=256, help="crops in the input-pipeline test")
    parser.add_argument("--random-weights", action="store_true", help="no pretrained file needed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from affectfuse.features.registry import create_extractor
    from affectfuse.training.finetune import apply_freeze, build_classifier

    device = torch.device(args.device)
    classes = [f"c{i}" for i in range(8)]

    def fresh():
        extractor = create_extractor(args.model, random_weights=args.random_weights)
        model = build_classifier(extractor, classes).to(device)
        model.size = extractor.input.size
        return model

    result = {"model": args.model, "device": args.device, "batch_size": args.batch_size,
              "torch": torch.__version__, "threads": torch.get_num_threads()}
    model = fresh()
    result["input_size"] = model.size
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
        for name, amp in (("fp32", False), ("bf16", True)):
            torch.cuda.reset_peak_memory_stats(device)
            result[f"train_images_per_s_{name}"] = time_steps(model, device, args.batch_size, args.steps, amp,
                                                              args.repeats)
            result[f"peak_gpu_mem_gib_{name}"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
        result["bf16_speedup"] = result["train_images_per_s_bf16"] / result["train_images_per_s_fp32"]
    else:
        result["train_images_per_s_full"] = time_steps(model, device, args.batch_size, args.steps, False,
                                                       args.repeats)
        if args.freeze:
            frozen = fresh()
            apply_freeze(frozen, args.freeze)
            result[f"train_images_per_s_freeze_{args.freeze}"] = time_steps(
                frozen, device, args.batch_size, args.steps, False, args.repeats)
            result["freeze_speedup"] = result[f"train_images_per_s_freeze_{args.freeze}"] / \
                result["train_images_per_s_full"]
    result["pipeline_images_per_s_decode_each"] = time_pipeline(model.size, args.items, False, args.repeats)
    result["pipeline_images_per_s_preloaded"] = time_pipeline(model.size, args.items, True, args.repeats)
    result["preload_speedup"] = result["pipeline_images_per_s_preloaded"] / result["pipeline_images_per_s_decode_each"]
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
