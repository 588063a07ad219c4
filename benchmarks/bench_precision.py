"""fp32 vs bf16 face features on this machine: how far bf16 moves them, and what it buys.

For FaceExpressionNet (shipped weights; real photographs from ../shared/data/faces when present, else
seeded noise) and POSTER V2 (seeded random weights: no pretrained file ships), runs the same crops with
``precision="fp32"`` and ``precision="bf16"`` and prints: the smallest / mean row cosine, the largest absolute
feature change, for FaceExpressionNet the largest probability change and the largest |sum - 1| of the
probabilities (head in float32), and the same with the head inside autocast (the old way), and images/s.

    python benchmarks/bench_precision.py [--n 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch

from affectfuse.features import create_extractor
from affectfuse.features.face_common import cpu_has_bf16, row_cosine

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces" / "images"


def crops(n: int, size: int) -> tuple[np.ndarray, str]:
    files = sorted(SHARED.glob("*.jpg"))[:n] if SHARED.is_dir() else []
    if len(files) == n:
        from PIL import Image

        return np.stack([np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR))
                         for f in files]), f"{n} photographs of ../shared/data/faces"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), f"{n} seeded noise crops"


def timed(ex, batch) -> tuple[np.ndarray, float]:
    ex(batch[:2])  # warm-up
    t = time.perf_counter()
    out = ex(batch)
    return out, len(batch) / (time.perf_counter() - t)


def compare(name: str, n: int, **kw) -> None:
    torch.manual_seed(0)
    ref_ex = create_extractor(name, precision="fp32", **kw)
    torch.manual_seed(0)
    bf_ex = create_extractor(name, precision="bf16", **kw)
    batch, what = crops(n, ref_ex.input.size)
    ref, ips_ref = timed(ref_ex, batch)
    bf, ips_bf = timed(bf_ex, batch)
    cos = row_cosine(torch.from_numpy(ref), torch.from_numpy(bf)).numpy()
    print(f"{name} ({what}{', random weights' if kw.get('random_weights') else ''}):")
    emb = slice(0, 256) if name == "faceexpressionnet" else slice(None)
    print(f"  row cosine bf16 vs fp32: min {cos.min():.6f}, mean {cos.mean():.6f}; "
          f"max |feature change| {np.abs(ref[:, emb] - bf[:, emb]).max():.4f}")
    if name == "faceexpressionnet":
        p_ref, p_bf = ref[:, 256:], bf[:, 256:]
        print(f"  probabilities: max |change| {np.abs(p_ref - p_bf).max():.4f}, "
              f"max |sum - 1| fp32 {np.abs(p_ref.sum(1) - 1).max():.1e}, bf16 {np.abs(p_bf.sum(1) - 1).max():.1e}")
        x = bf_ex.preprocess(batch)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):  # the old way: head in bf16
            old = bf_ex.model.fc(bf_ex.model.embed(x)).softmax(-1).float().numpy()
        print(f"  head + softmax inside autocast (before): max |sum - 1| {np.abs(old.sum(1) - 1).max():.1e}, "
              f"max |prob change| {np.abs(old - p_ref).max():.4f}")
    print(f"  images/s: fp32 {ips_ref:.1f}, bf16 {ips_bf:.1f} ({ips_bf / ips_ref:.2f}x)")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64, help="crops per extractor")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-poster", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    flags = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.*)", flags)
    bf = sorted(set(re.findall(r"\b(avx512_bf16|amx_bf16|amx_tile|avx512f)\b", flags)))
    print(f"{time.strftime('%Y-%m-%d')} {platform.machine()} {model[1] if model else '?'}; flags {bf}; "
          f"cpu_has_bf16() = {cpu_has_bf16()}; torch {torch.__version__}; {args.threads} threads")
    compare("faceexpressionnet", args.n)
    if not args.skip_poster:
        compare("posterv2", min(args.n, 16), random_weights=True)


if __name__ == "__main__":
    main()
