"""Real signal check of the audio extractors: EmoDB, 7 emotions, leave-one-speaker-out linear probe.

    python benchmarks/bench_emodb_probe.py [--data ../shared/data/emodb] [--window 2.0 --hop 2.0 --C 0.01]

Each utterance (2.0 s, 22.05 kHz) -> windows (default: the whole utterance, one window; ``--window 1
--hop 0.5`` gives the original DeepSpectrum chunking) ->
``deepspectrum-mobilenetv2`` (1280-d) and ``egemaps`` (88-d) per window -> mean and std over the windows
per utterance -> standardised features -> logistic regression (L2, fixed C, no tuning on test speakers),
leave-one-speaker-out over the 8 speakers. Reports unweighted average recall (UAR, chance 1/7) for each
feature set and for their concatenation. Features are cached in ``--cache`` so reruns are cheap.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

EMOTIONS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness", "T": "sadness",
            "N": "neutral"}


def list_emodb(folder: Path, speakers: list[str] | None = None) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """(files, labels (N,) int in EMOTIONS order, speakers (N,) str) from ``SSTTTEV.wav`` names."""
    files = sorted((folder / "wav").glob("*.wav"))
    if speakers:
        files = [f for f in files if f.name[:2] in speakers]
    codes = list(EMOTIONS)
    labels = np.array([codes.index(f.name[5]) for f in files])
    groups = np.array([f.name[:2] for f in files])
    return files, labels, groups


def pooled_features(files: list[Path], extractor, batch_size: int = 32) -> np.ndarray:
    """(N, 2 * dim): mean and std over each file's windows, windows batched across files."""
    from affectfuse.features.windows import audio_windows
    from affectfuse.media import read_audio

    rate = extractor.input.sample_rate
    owners, chunks = [], []
    for i, f in enumerate(files):
        audio = read_audio(f, sample_rate=rate)
        _, ws = audio_windows(audio, rate, extractor.input.window_s, extractor.input.hop_s,
                              getattr(extractor, "min_window_samples", 1))
        owners += [i] * len(ws)
        chunks += ws
    rows = np.concatenate([extractor(chunks[s:s + batch_size]) for s in range(0, len(chunks), batch_size)])
    owners = np.asarray(owners)
    return np.stack([np.concatenate([rows[owners == i].mean(0), rows[owners == i].std(0)])
                     for i in range(len(files))])


def loso_uar(x: np.ndarray, y: np.ndarray, groups: np.ndarray, c: float = 0.1) -> tuple[float, dict]:
    """Leave-one-speaker-out UAR of a standardised L2 logistic regression; also per-speaker UAR."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import recall_score
    from sklearn.model_selection import LeaveOneGroupOut
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pred = np.empty_like(y)
    per = {}
    for train, test in LeaveOneGroupOut().split(x, y, groups):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
        model.fit(x[train], y[train])
        pred[test] = model.predict(x[test])
        per[str(groups[test][0])] = float(recall_score(y[test], pred[test], average="macro",
                                                       labels=np.unique(y[test])))
    return float(recall_score(y, pred, average="macro")), per


def render_speed(files: list[Path], rate: int, n: int = 48) -> dict:
    """Spectrogram images/s: our batched LUT renderer vs one matplotlib figure per window (the original's way)."""
    from affectfuse.features.deepspectrum import mel_db, render, render_matplotlib
    from affectfuse.media import read_audio

    windows = np.stack([read_audio(f, sample_rate=rate)[:rate] for f in files[:n]])
    db = mel_db(windows, rate)  # (n, 128, F)
    start = time.perf_counter()
    ours = render(db, rate)
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    ref = np.stack([render_matplotlib(d, rate) for d in db])
    t_ref = time.perf_counter() - start
    return {"images": n, "lut_images_per_s": round(n / t_ours, 1), "matplotlib_images_per_s": round(n / t_ref, 1),
            "speedup": round(t_ref / t_ours, 1), "max_abs_pixel_diff": int(np.abs(ours.astype(int) - ref).max())}


def main(argv=None) -> dict:
    import torch

    from affectfuse.features import create_extractor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "emodb"))
    ap.add_argument("--sample-rate", type=int, default=22050)
    ap.add_argument("--window", type=float, default=2.0)
    ap.add_argument("--hop", type=float, default=2.0)
    ap.add_argument("--C", type=float, default=0.01, help="inverse L2 strength of the probe (fixed, not tuned per fold)")
    ap.add_argument("--cache", default="/tmp/affectfuse_emodb_probe")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    files, y, groups = list_emodb(Path(args.data))
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    opts = dict(sample_rate=args.sample_rate, window_s=args.window, hop_s=args.hop)
    feats, timing = {}, {}
    for name in ("deepspectrum-mobilenetv2", "egemaps"):
        file = cache / f"{name}_{args.sample_rate}_{args.window}_{args.hop}.npy"
        if file.is_file():
            feats[name] = np.load(file)
            continue
        ext = create_extractor(name, **opts)
        start = time.perf_counter()
        feats[name] = pooled_features(files, ext)
        timing[name] = time.perf_counter() - start
        np.save(file, feats[name])
    feats["both"] = np.concatenate([feats["deepspectrum-mobilenetv2"], feats["egemaps"]], axis=1)
    result = {"utterances": len(files), "speakers": sorted(set(groups)), "C": args.C, **opts,
              "extract_seconds": timing, "uar": {}, "uar_per_speaker": {}}
    for name, x in feats.items():
        uar, per = loso_uar(x, y, groups, args.C)
        result["uar"][name] = round(uar, 4)
        result["uar_per_speaker"][name] = {k: round(v, 3) for k, v in per.items()}
        print(f"{name:26s} dim {x.shape[1]:5d}  LOSO UAR {uar:.3f}")
    result["render"] = render_speed(files, args.sample_rate)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
