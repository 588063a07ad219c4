"""Synthetic ERI data with a planted, documented signal -- for tests, benchmarks and ablations.

The data look like Hume-Reaction features: per video a sequence of T steps per modality
(DeepSpectrum-like audio, 1024-d; PosterV2+ViT-like visual, 1536-d), correlated and anisotropic
features with temporal structure, and 7 labels per video normalised by the row maximum (max = 1).

How the signal is planted (per video, nine latent drives ~ N(0, 1)):

=================  =====================================  ========================
emotion            raw drive                              seen by
=================  =====================================  ========================
Adoration          v1                                     visual only
Amusement          a1                                     audio only
Anxiety            a2                                     audio only
Disgust            v2                                     visual only
Empathic-Pain      v3                                     visual only
Fear               (a3 + v4 + a3 * v4) / sqrt(3)          needs both (one third interaction)
Surprise           (a4 + v5) / sqrt(2)                    half audio, half visual
=================  =====================================  ========================

Raw intensity ``r_k = sigmoid(GAIN * drive_k)``; labels ``y = r / max(r)`` per row (as Hume-Reaction
self-reports are normalised), so every row's max is exactly 1 and each label depends on all drives.
A modality's features carry its drives (``a*`` in audio, ``v*`` in visual) as amplitudes of fixed
random directions, each modulated over time by a smooth per-video envelope (a sustained level plus a
reaction bump at a random time), on top of a low-rank AR(1) background (slowly varying nuisance
factors), i.i.d. noise and per-dimension offsets and scales. So: audio alone explains Amusement,
Anxiety and half of Surprise, visual alone Adoration, Disgust, Empathic-Pain and the other half,
and Fear needs both: its additive part is read from either modality, its product part (a third of
its variance) only by a model that combines them. ``signal="shuffled"`` permutes the label rows across videos (no signal left).

``time_course`` sets the drives' envelopes: ``"mixed"`` (default, above); ``"burst_spread"``: in the
audio modality (the first) each video's drives appear only in a short burst (about two steps at a random
time) and in the visual modality (the second) they are spread evenly and weakly over every step, so a
model must find a moment in one stream and integrate the other (pooled statistics dilute the burst).

The feature space (directions, offsets, scales, background factors) depends only on the dims and
``WORLD_SEED``, not on ``seed``: arrays made with different seeds share one "extractor", so a model
trained on one seed transfers to another. ``seed`` draws the videos.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from affectfuse.labels import ERI_EMOTIONS, ERI_SCALE

DEFAULT_DIMS = {"audio": 1024, "visual": 1536}
WORLD_SEED = 20230317
GAIN = 1.5               # drive -> logit of the raw intensity
SIGNAL_AMPLITUDE = 2.0   # amplitude of a drive's direction per unit drive (noise std = ``noise``)
BACKGROUND_RANK = 16     # nuisance factors per modality
BACKGROUND_AMPLITUDE = 5.0
BACKGROUND_RHO = 0.85    # AR(1) coefficient of the nuisance factors per step
NOISE_BANK_ROWS = 8192   # i.i.d. noise rows drawn once per call and re-used (fast for big N)
CHUNK_VIDEOS = 256

# drive name -> role; the emotion columns follow ERI_EMOTIONS order
AUDIO_DRIVES = ("a1", "a2", "a3", "a4")
VISUAL_DRIVES = ("v1", "v2", "v3", "v4", "v5")
DRIVES = AUDIO_DRIVES + VISUAL_DRIVES
SIGNALS = ("planted", "shuffled")
TIME_COURSES = ("mixed", "burst_spread")
BURST_PEAK, BURST_WIDTH = 2.5, 0.6        # burst envelope: peak and Gaussian width in steps
SPREAD_LEVEL = 0.35                       # spread envelope: constant level at every step


def _emotion_drives(z: dict[str, np.ndarray]) -> np.ndarray:
    """(N, 7) raw drives of the 7 ERI emotions from the latent drives (see the module table)."""
    return np.stack([
        z["v1"], z["a1"], z["a2"], z["v2"], z["v3"],
        (z["a3"] + z["v4"] + z["a3"] * z["v4"]) / np.sqrt(3.0), (z["a4"] + z["v5"]) / np.sqrt(2.0),
    ], axis=1)


def _roles(modalities: list[str]) -> dict[str, tuple[str, ...]]:
    """Which drives each modality carries: 'audio'/'visual' by name, else the first two by position;
    a single modality carries all; further modalities carry none (distractors)."""
    if len(modalities) == 1:
        return {modalities[0]: DRIVES}
    roles = {m: () for m in modalities}
    if "audio" in roles and "visual" in roles:
        roles["audio"], roles["visual"] = AUDIO_DRIVES, VISUAL_DRIVES
    else:
        roles[modalities[0]], roles[modalities[1]] = AUDIO_DRIVES, VISUAL_DRIVES
    return roles


def _world(modality: str, dim: int, n_drives: int) -> dict[str, np.ndarray]:
    """Fixed feature space of one modality: drive + background directions, offsets, scales."""
    seed = [WORLD_SEED, dim, sum(map(ord, modality))]
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.normal(0.0, 0.25, dim)).astype(np.float32)             # (D,)
    offset = rng.normal(0.0, 0.5, dim).astype(np.float32)                      # (D,)
    directions = rng.standard_normal((n_drives + BACKGROUND_RANK, dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)            # unit rows
    amplitude = np.r_[np.full(n_drives, SIGNAL_AMPLITUDE), np.full(BACKGROUND_RANK, BACKGROUND_AMPLITUDE)]
    # one matmul makes a step: [drives*envelope, background, 1] @ basis, scale folded in
    basis = np.vstack([directions * amplitude[:, None] * scale, offset[None, :]]).astype(np.float32)
    return {"scale": scale, "basis": basis}


def _envelopes(rng: np.random.Generator, n: int, steps: int, channels: int) -> np.ndarray:
    """(N, T, C) positive smooth time courses, mean about 1: a sustained level plus a reaction bump."""
    t = np.arange(steps, dtype=np.float32)[None, :, None]
    onset = rng.uniform(0, steps, (n, 1, channels)).astype(np.float32)
    width = rng.uniform(0.05, 0.2, (n, 1, channels)).astype(np.float32) * steps + 1.0
    level = rng.uniform(0.4, 0.8, (n, 1, channels)).astype(np.float32)
    return level + 1.2 * np.exp(-0.5 * ((t - onset) / width) ** 2)


def _burst_envelopes(rng: np.random.Generator, n: int, steps: int, channels: int) -> np.ndarray:
    """(N, T, C) one short Gaussian burst per video, at the same random step for all its channels."""
    t = np.arange(steps, dtype=np.float32)[None, :, None]
    onset = rng.uniform(0, steps - 1, (n, 1, 1)).astype(np.float32)
    burst = BURST_PEAK * np.exp(-0.5 * ((t - onset) / BURST_WIDTH) ** 2)
    return np.broadcast_to(burst, (n, steps, channels)).astype(np.float32)


def _spread_envelopes(n: int, steps: int, channels: int) -> np.ndarray:
    """(N, T, C) the same weak level at every step."""
    return np.full((n, steps, channels), SPREAD_LEVEL, dtype=np.float32)


def _envelopes_for(kind: str, rng: np.random.Generator, n: int, steps: int, channels: int) -> np.ndarray:
    if kind == "burst":
        return _burst_envelopes(rng, n, steps, channels)
    if kind == "spread":
        return _spread_envelopes(n, steps, channels)
    return _envelopes(rng, n, steps, channels)


def _background(rng: np.random.Generator, n: int, steps: int) -> np.ndarray:
    """(N, T, R) AR(1) nuisance factors with unit stationary variance."""
    innov = rng.standard_normal((n, steps, BACKGROUND_RANK), dtype=np.float32)
    out = np.empty_like(innov)
    out[:, 0] = innov[:, 0]
    keep, fresh = BACKGROUND_RHO, np.sqrt(1 - BACKGROUND_RHO ** 2)
    for i in range(1, steps):
        out[:, i] = keep * out[:, i - 1] + fresh * innov[:, i]
    return out


def _modality_features(rng, drives: np.ndarray, steps: int, dim: int, modality: str, noise: float,
                       envelope: str = "mixed") -> np.ndarray:
    """(N, T, D) float32 features of one modality carrying ``drives`` (N, C); ``envelope``: ``mixed``,
    ``burst`` or ``spread`` (see the module doc)."""
    n, c = drives.shape
    world = _world(modality, dim, c)
    # latent per step: [drive * envelope (C), background (R), 1]            (N, T, C + R + 1)
    latent = np.concatenate([
        drives[:, None, :].astype(np.float32) * _envelopes_for(envelope, rng, n, steps, c),
        _background(rng, n, steps),
        np.ones((n, steps, 1), np.float32),
    ], axis=2)
    out = np.empty((n, steps, dim), dtype=np.float32)
    flat_out, flat_latent = out.reshape(n * steps, dim), latent.reshape(n * steps, -1)
    bank_rows = min(n * steps, NOISE_BANK_ROWS)
    if noise > 0:
        bank = rng.standard_normal((bank_rows, dim), dtype=np.float32)
        bank *= noise * world["scale"]
        rows = rng.permutation(bank_rows) if bank_rows == n * steps else rng.integers(0, bank_rows, n * steps)
    chunk = CHUNK_VIDEOS * steps
    workers = max(1, min(2, os.cpu_count() or 1))

    def fill(first: int) -> None:
        """Every ``workers``-th chunk of steps, with one reused buffer (fresh temporaries would page-fault).
        numpy releases the GIL in take and matmul, so the workers run in parallel."""
        buffer = np.empty((min(chunk, n * steps), dim), dtype=np.float32)
        for start in range(first * chunk, n * steps, workers * chunk):
            part = slice(start, start + chunk)
            target = flat_out[part]
            np.matmul(flat_latent[part], world["basis"], out=target)
            if noise > 0:
                tmp = buffer[:target.shape[0]]
                np.take(bank, rows[part], axis=0, out=tmp)
                target += tmp

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(fill, range(workers)))
    return out


def make_eri_arrays(n_videos: int, steps: int | dict[str, int] = 30, dims: dict[str, int] | None = None,
                    signal: str = "planted", seed: int = 0, noise: float = 0.5,
                    label_noise: float = 0.0, time_course: str = "mixed") -> tuple[dict[str, np.ndarray], np.ndarray]:
    """In-memory synthetic ERI data.

    Args:
        n_videos: N.
        steps: T per video, one int or one per modality.
        dims: feature dim per modality (default audio 1024, visual 1536).
        signal: ``'planted'`` (labels follow the features, see the module doc) or ``'shuffled'``.
        seed: draws the videos; the feature space is fixed (see ``WORLD_SEED``).
        noise: std of the i.i.d. per-step noise (drive directions have amplitude 2 per unit drive).
        label_noise: std of Gaussian noise added to the raw drives of the labels (0 = exact).
        time_course: ``"mixed"`` or ``"burst_spread"`` (see the module doc).

    Returns:
        ``features``: modality -> (N, T, D) float32; ``labels``: (N, 7) float32 in [0, 1], each row's max
        exactly 1, columns ``ERI_EMOTIONS``.
    """
    if signal not in SIGNALS:
        raise ValueError(f"unknown signal {signal!r}; valid: {', '.join(SIGNALS)}")
    if time_course not in TIME_COURSES:
        raise ValueError(f"unknown time course {time_course!r}; valid: {', '.join(TIME_COURSES)}")
    dims = dict(DEFAULT_DIMS if dims is None else dims)
    if not dims or n_videos < 1:
        raise ValueError("need at least one modality and one video")
    steps_of = steps if isinstance(steps, dict) else {m: steps for m in dims}
    rng = np.random.default_rng(seed)
    z = {name: rng.standard_normal(n_videos) for name in DRIVES}              # (N,) each, float64
    raw = _emotion_drives(z)
    if label_noise > 0:
        raw = raw + rng.normal(0.0, label_noise, raw.shape)
    intensity = 1.0 / (1.0 + np.exp(-GAIN * raw))                             # (N, 7) in (0, 1)
    labels = (intensity / intensity.max(axis=1, keepdims=True)).astype(np.float32)
    if signal == "shuffled":
        labels = labels[rng.permutation(n_videos)]
    features = {}
    for modality, role in _roles(list(dims)).items():
        drives = np.stack([z[d] for d in role], axis=1) if role else np.zeros((n_videos, 0))
        mod_rng = np.random.default_rng([seed, sum(map(ord, modality)), 1])
        envelope = "mixed" if time_course == "mixed" else ("burst" if role == AUDIO_DRIVES else "spread")
        features[modality] = _modality_features(mod_rng, drives, int(steps_of[modality]), int(dims[modality]),
                                                modality, noise, envelope)
    return features, labels


def make_eri_dataset(out_dir: str | Path, n_videos: int = 200, dims: dict[str, int] | None = None,
                     steps: dict[str, int] | None = None, rates: dict[str, float] | None = None,
                     signal: str = "planted", seed: int = 0,
                     split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
                     missing_face: float = 0.05, label_test: bool = False, noise: float = 0.5,
                     time_course: str = "mixed") -> Path:
    """Write a synthetic Hume-Reaction-like dataset and return the path of its ``data_info.csv``.

    Layout::

        <out>/data_info.csv                 File_ID ([00001]), Split (Train/Val/Test), 7 emotions, Age, Country
        <out>/features/<modality>/          one feature set per modality (affectfuse feature store)

    Each video gets 80-100 % of ``steps[modality]`` rows (videos differ in length), timestamps
    ``k / rate`` s; a fraction ``missing_face`` of visual rows are faceless (zeros, mask False).
    Test rows leave the emotions blank as in the challenge unless ``label_test``.
    """
    from affectfuse.data.store import FeatureSet, FeatureSetMeta, VideoFeatures
    from affectfuse.utils import write_text_atomic

    dims = dict(DEFAULT_DIMS if dims is None else dims)
    steps = {m: 30 for m in dims} if steps is None else dict(steps)
    rates = {m: 2.0 if m == "audio" else 3.0 for m in dims} if rates is None else dict(rates)
    if abs(sum(split_fractions) - 1.0) > 1e-6 or len(split_fractions) != 3:
        raise ValueError(f"split_fractions must be 3 numbers summing to 1, got {split_fractions}")
    out = Path(out_dir)
    features, labels = make_eri_arrays(n_videos, steps=steps, dims=dims, signal=signal, seed=seed, noise=noise,
                                       time_course=time_course)
    rng = np.random.default_rng([seed, 7])
    width = max(5, len(str(n_videos)))
    ids = [f"{i + 1:0{width}d}" for i in range(n_videos)]
    order = rng.permutation(n_videos)
    n_train = int(round(split_fractions[0] * n_videos))
    n_val = int(round(split_fractions[1] * n_videos))
    split = np.empty(n_videos, dtype=object)
    split[order[:n_train]], split[order[n_train:n_train + n_val]], split[order[n_train + n_val:]] = \
        "Train", "Val", "Test"

    planted = {"generator": "affectfuse.data.synthetic", "signal": signal, "seed": seed, "noise": noise,
               "world_seed": WORLD_SEED, "time_course": time_course}
    for modality, values in features.items():
        fs = FeatureSet.create(out / "features" / modality, FeatureSetMeta(
            name=f"synthetic-{modality}", dim=values.shape[2], rate=rates[modality], extractor="synthetic",
            modality=modality, extra={"synthetic": planted}))
        full = values.shape[1]
        lengths = rng.integers(max(1, int(np.ceil(0.8 * full))), full + 1, n_videos)
        for i, vid in enumerate(ids):
            rows = values[i, :lengths[i]].copy()                                # (T_i, D)
            mask = np.ones(lengths[i], dtype=bool)
            if modality != "audio" and missing_face > 0:
                mask = rng.random(lengths[i]) >= missing_face
                rows[~mask] = 0.0
            fs.write(VideoFeatures(vid, rows, np.arange(lengths[i]) / rates[modality], mask))
        fs.write_index()

    countries = np.where(rng.random(n_videos) < 0.6, "United States", "South Africa")
    ages = rng.integers(18, 66, n_videos)
    lines = [",".join(["File_ID", "Split", *ERI_EMOTIONS, "Age", "Country"])]
    for i, vid in enumerate(ids):
        blank = split[i] == "Test" and not label_test
        cells = [""] * len(ERI_EMOTIONS) if blank else [f"{v:.6g}" for v in labels[i]]
        lines.append(",".join([f"[{vid}]", split[i], *cells, str(ages[i]), countries[i]]))
    target = out / "data_info.csv"
    write_text_atomic(target, "\n".join(lines) + "\n")
    write_text_atomic(out / "README.txt", (
        f"Synthetic ERI data made by affectfuse.data.synthetic (signal={signal}, seed={seed}).\n"
        f"Labels: {', '.join(ERI_EMOTIONS)}; {ERI_SCALE}.\n"
        "The planted signal is documented in the module docstring of affectfuse.data.synthetic.\n"))
    return target
