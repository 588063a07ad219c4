"""EXPR speed: scoring, prediction and training of the frame transformer at the paper's input size.

    python benchmarks/expr_model.py            # ~1-2 min on a loaded 2-core CPU

1. Macro F1 of 1M frames: our one-bincount confusion matrix vs sklearn ``f1_score`` (same number).
2. Prediction over many videos: windows of all videos batched together (``predict_videos``) vs the naive
   loop (one window per forward pass), same outputs.
3. Training throughput (frames/s) and peak memory (RSS) of the paper configuration: stitched features
   512 (InceptionResnetV1-VGGFace2) + 512 (-CASIA) + 888 (RegNetY-1.6GF) = 1912-d, d_model 256, 2 layers.
"""

from __future__ import annotations

import resource
import time

import numpy as np
import torch

from affectfuse.data.affwild2 import ExprVideo
from affectfuse.data.windows import overlap_average, window_starts
from affectfuse.metrics.classification import expr_macro_f1
from affectfuse.models.expr import ExprModelConfig, ExprTransformer, count_parameters
from affectfuse.training.expr import ExprTrainConfig, predict_videos, train_expr

PAPER_DIM = 512 + 512 + 888


def timed(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_metric():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    y = rng.integers(-1, 8, 1_000_000)
    p = rng.integers(0, 8, 1_000_000)
    t_ours, ours = timed(lambda: expr_macro_f1(y, p))
    keep = y != -1
    t_sk, ref = timed(lambda: f1_score(y[keep], p[keep], labels=range(8), average="macro", zero_division=0))
    assert abs(ours - ref) < 1e-12
    print(f"| macro F1, 1M frames | ours {t_ours * 1e3:.1f} ms | sklearn {t_sk * 1e3:.1f} ms | x{t_sk / t_ours:.1f} |")


def videos(n, frames, dim, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        labels = rng.integers(0, 8, frames)
        out.append(ExprVideo(f"v{i}", rng.standard_normal((frames, dim)).astype(np.float32),
                             np.ones(frames, bool), labels, np.arange(1, frames + 1), np.ones(frames, bool)))
    return out


@torch.no_grad()
def naive_predict(model, vids, window, stride):
    out = {}
    for v in vids:
        starts = window_starts(v.n_frames, window, stride)
        probs = []
        for s in starts:
            x = torch.from_numpy(v.features[s:s + window])[None]
            probs.append(torch.softmax(model(x), -1)[0].numpy())
        out[v.id] = overlap_average(np.stack(probs), starts, v.n_frames)
    return out


def bench_predict():
    torch.manual_seed(0)
    model = ExprTransformer(ExprModelConfig(face_dim=PAPER_DIM)).eval()
    vids = videos(20, 600, PAPER_DIM)
    n_frames = sum(v.n_frames for v in vids)
    t_batched, a = timed(lambda: predict_videos(model, vids, 64, 32, batch_size=64), repeat=2)
    t_naive, b = timed(lambda: naive_predict(model, vids, 64, 32), repeat=1)
    diff = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    print(f"| predict 20 videos x 600 frames (window 64, stride 32) | batched {n_frames / t_batched:,.0f} frames/s | "
          f"naive {n_frames / t_naive:,.0f} frames/s | x{t_naive / t_batched:.1f} (max |diff| {diff:.1e}) |")
    print(f"parameters (paper input 1912-d, d_model 256, 2 layers): {count_parameters(model):,}")


def bench_train():
    tr, va = videos(40, 600, PAPER_DIM, 1), videos(4, 600, PAPER_DIM, 2)
    cfg = ExprTrainConfig(epochs=1, window=64, stride=32, batch_size=32, patience=5)
    t = time.perf_counter()
    run = train_expr(tr, va, cfg)
    seconds = time.perf_counter() - t
    frames = sum(len(window_starts(v.n_frames, 64, 32)) * 64 for v in tr)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"| train 1 epoch, 40 videos x 600 frames (incl. validation) | {seconds:.1f} s | "
          f"{frames / run.history[0]['seconds']:,.0f} window-frames/s | peak RSS {rss:.0f} MiB |")


if __name__ == "__main__":
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    bench_metric()
    bench_predict()
    bench_train()
