"""How much of the planted synthetic signal each modality set carries, read by a small MLP.

    python benchmarks/synthetic_signal.py [--videos 3000] [--epochs 40]

A 2-layer MLP (256 units) on time-averaged, standardised features, trained with MSE on 80 % of the
videos and scored by per-emotion Pearson on the rest, for audio only, visual only and both. This is a
reference for the fusion model's ablations on the same data (it is no substitute for them: it sees
pooled features, not sequences). Prints one JSON line per modality set.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from affectfuse.data.synthetic import make_eri_arrays
from affectfuse.labels import ERI_EMOTIONS
from affectfuse.metrics.regression import pearson_per_column


def fit_mlp(x_train, y_train, x_test, epochs: int, seed: int = 0) -> np.ndarray:
    torch.manual_seed(seed)
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    xt = torch.tensor((x_train - mu) / sd)
    xv = torch.tensor((x_test - mu) / sd)
    yt = torch.tensor(y_train)
    net = torch.nn.Sequential(torch.nn.Linear(xt.shape[1], 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                              torch.nn.ReLU(), torch.nn.Linear(256, yt.shape[1]), torch.nn.Sigmoid())
    opt = torch.optim.Adam(net.parameters(), 1e-3, weight_decay=1e-4)
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 128):
            idx = perm[i:i + 128]
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(xt[idx]), yt[idx]).backward()
            opt.step()
    with torch.no_grad():
        return net(xv).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--signal", default="planted", choices=("planted", "shuffled"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    feats, labels = make_eri_arrays(args.videos, steps=30, signal=args.signal, seed=0)
    cut = int(0.8 * args.videos)
    pooled = {m: f.mean(axis=1) for m, f in feats.items()}
    for name, mods in (("A", ["audio"]), ("V", ["visual"]), ("A+V", ["audio", "visual"])):
        x = np.concatenate([pooled[m] for m in mods], axis=1)
        pred = fit_mlp(x[:cut], labels[:cut], x[cut:], args.epochs)
        r = pearson_per_column(labels[cut:], pred)
        print(json.dumps({"modalities": name, "signal": args.signal, "videos": args.videos,
                          "mean_pearson": round(float(r.mean()), 3),
                          "pearson": {e: round(float(v), 3) for e, v in zip(ERI_EMOTIONS, r)}}))


if __name__ == "__main__":
    main()
