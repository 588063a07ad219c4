"""A planted EXPR set in the Aff-Wild2 layout -- per-frame labels, for tests, benchmarks and default tuning.

What it imitates (the things that make Aff-Wild2 EXPR hard for a frame model trained on few videos):

- sticky labels: each video is a sequence of expression runs whose lengths are log-normal (median
  ``RUN_MEDIAN`` frames, about 1.5 s at 30 fps), classes drawn from Aff-Wild2's skewed training prior
  (Neutral and Other common, Fear and Disgust rare), never the same class twice in a row;
- a per-frame signal too weak to read alone: the class adds ``amplitude`` x a fixed unit direction per class
  (split over the feature sets) to every frame of its run, under a strong per-person offset (identity),
  low-rank AR(1) nuisance factors (head pose, light; correlated over ~10 frames) and i.i.d. noise, so one
  frame is ambiguous and a window of frames is not;
- runs of ``-1`` (not annotated) inside videos: the person still shows the hidden class there, the file says -1;
- short faceless runs (feature rows masked, zeros), as where the detector lost the face;
- two-person videos: ``<media>_left`` / ``<media>_right`` annotation ids over one media file, each person
  with its own features, labels and identity, sharing the media's nuisance factors (same light, same camera).

The feature space (class directions, identity scale, nuisance directions, offsets) depends only on the dims
and ``WORLD_SEED``; ``seed`` draws the people and their videos. Written layout (:func:`make_affwild2_dataset`)::

    <out>/annotations/Train_Set/<id>.txt        header Neutral,...,Other, then one label per frame (-1 = none)
    <out>/annotations/Validation_Set/<id>.txt
    <out>/features/<set>/                       one row per frame at t = (k-1)/fps (feature store, rate None,
                                                meta.extra fps), masked rows where no face

so ``affectfuse expr train --features OUT/features/* --annotations OUT/annotations/Train_Set
--val-annotations OUT/annotations/Validation_Set --out RUN`` runs on it as on Aff-Wild2.
Letters: N frames, D feature dim, C = 8 classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from affectfuse.data.affwild2 import ExprVideo
from affectfuse.labels import EXPR_CLASSES, EXPR_IGNORE

WORLD_SEED = 20250313
# Aff-Wild2 EXPR training-set label shares (ABAW 5), order EXPR_CLASSES
CLASS_PRIOR = np.array([0.30, 0.03, 0.02, 0.02, 0.17, 0.13, 0.05, 0.28])
DEFAULT_DIMS = {"face_a": 48, "face_b": 32}
AMPLITUDE = 2.0          # class direction amplitude per frame (noise std 1 per dim)
RUN_MEDIAN, RUN_SIGMA = 45.0, 0.6   # log-normal run lengths, frames
IDENTITY_AMPLITUDE = 1.0  # per-person offset, std per dim
NUISANCE_RANK, NUISANCE_AMPLITUDE, NUISANCE_RHO = 8, 1.0, 0.9
UNLABELLED_RUNS, FACELESS_RUNS = 1.0, 1.5   # mean number per video
FPS = 30.0


def _world(dims: dict[str, int]) -> dict:
    """Fixed feature space: per set, class directions (C, D_s) sharing the class amplitude over the sets
    (each set carries a share proportional to its dim), nuisance directions (R, D_s) and offsets (D_s,)."""
    rng = np.random.default_rng(WORLD_SEED)
    total = sum(dims.values())
    world = {}
    for name, dim in dims.items():
        cls = rng.standard_normal((len(EXPR_CLASSES), dim))
        cls /= np.linalg.norm(cls, axis=1, keepdims=True)
        nuisance = rng.standard_normal((NUISANCE_RANK, dim)) / np.sqrt(dim)
        world[name] = {"classes": cls * np.sqrt(dim / total), "nuisance": nuisance * np.sqrt(dim),
                       "offset": rng.normal(0.0, 1.0, dim), "scale": np.exp(rng.normal(0.0, 0.5, dim))}
    return world


def sticky_labels(rng: np.random.Generator, n_frames: int, run_median: float = RUN_MEDIAN) -> np.ndarray:
    """(N,) hidden class per frame: runs of log-normal length (median ``run_median`` frames), class from
    ``CLASS_PRIOR``, no repeats."""
    out = np.empty(n_frames, np.int64)
    start, previous = 0, -1
    while start < n_frames:
        length = max(5, int(round(rng.lognormal(np.log(run_median), RUN_SIGMA))))
        prior = CLASS_PRIOR.copy()
        if previous >= 0:
            prior[previous] = 0.0
        previous = int(rng.choice(len(prior), p=prior / prior.sum()))
        out[start:start + length] = previous
        start += length
    return out


def _runs(rng: np.random.Generator, n_frames: int, mean_count: float, lengths: tuple[int, int]) -> np.ndarray:
    """(N,) bool, True inside a Poisson(``mean_count``) number of runs of uniform length in ``lengths``."""
    out = np.zeros(n_frames, bool)
    for _ in range(rng.poisson(mean_count)):
        length = int(rng.integers(*lengths))
        start = int(rng.integers(0, max(1, n_frames - length)))
        out[start:start + length] = True
    return out


def _ar1(rng: np.random.Generator, n_frames: int, rank: int) -> np.ndarray:
    """(N, rank) AR(1) factors with unit stationary variance."""
    innov = rng.standard_normal((n_frames, rank))
    out = np.empty_like(innov)
    out[0] = innov[0]
    fresh = np.sqrt(1 - NUISANCE_RHO ** 2)
    for t in range(1, n_frames):
        out[t] = NUISANCE_RHO * out[t - 1] + fresh * innov[t]
    return out


def _person(rng, world, hidden: np.ndarray, nuisance: np.ndarray, amplitude: float,
            identity_amplitude: float = IDENTITY_AMPLITUDE) -> dict[str, np.ndarray]:
    """Feature set -> (N, D_s) float32 rows of one person (see the module doc)."""
    out = {}
    for name, w in world.items():
        dim = w["offset"].shape[0]
        identity = rng.normal(0.0, identity_amplitude, dim)
        x = (amplitude * w["classes"][hidden] + identity + NUISANCE_AMPLITUDE * nuisance @ w["nuisance"]
             + rng.standard_normal((len(hidden), dim)))
        out[name] = ((x + w["offset"]) * w["scale"]).astype(np.float32)
    return out


def make_affwild2_people(n_media: int, seed: int = 0, frames: tuple[int, int] = (300, 900),
                         dims: dict[str, int] | None = None, amplitude: float = AMPLITUDE,
                         two_person: float = 0.25, run_median: float = RUN_MEDIAN,
                         identity: float = IDENTITY_AMPLITUDE) -> list[dict]:
    """People of ``n_media`` media files (a share ``two_person`` of them with a ``_left`` and a ``_right``).
    ``run_median``: median expression run in frames; ``identity``: std per dim of the per-person offset.

    Returns one dict per annotation id: ``id``, ``hidden`` (N,) true class, ``labels`` (N,) with -1 runs,
    ``face`` (N,) bool, ``features`` {set: (N, D_s) float32, zeros where no face}.
    """
    if n_media < 1 or frames[0] < 1 or frames[1] < frames[0]:
        raise ValueError(f"need n_media >= 1 and 1 <= frames[0] <= frames[1], got {n_media}, {frames}")
    dims = dict(DEFAULT_DIMS if dims is None else dims)
    world = _world(dims)
    rng = np.random.default_rng([seed, 13])
    people = []
    for m in range(n_media):
        n = int(rng.integers(frames[0], frames[1] + 1))
        nuisance = _ar1(rng, n, NUISANCE_RANK)          # shared by the people of one media file
        sides = ("_left", "_right") if rng.random() < two_person else ("",)
        for side in sides:
            hidden = sticky_labels(rng, n, run_median)
            labels = np.where(_runs(rng, n, UNLABELLED_RUNS, (30, 150)), EXPR_IGNORE, hidden)
            face = ~_runs(rng, n, FACELESS_RUNS, (3, 20))
            feats = _person(rng, world, hidden, nuisance, amplitude, identity)
            for v in feats.values():
                v[~face] = 0.0
            people.append({"id": f"video{seed}_{m:03d}{side}", "hidden": hidden, "labels": labels,
                           "face": face, "features": feats})
    return people


def to_expr_videos(people: list[dict]) -> list[ExprVideo]:
    """In-memory :class:`ExprVideo` list (sets stitched in dict order, faceless frames forward-filled as
    ``load_expr_videos`` does by default) -- the same inputs ``expr train`` reads from the written files."""
    from affectfuse.data.affwild2 import fill_faceless

    out = []
    for p in people:
        values, valid = fill_faceless(np.concatenate(list(p["features"].values()), axis=1), p["face"], "ffill")
        n = len(p["labels"])
        out.append(ExprVideo(p["id"], values, valid, p["labels"].copy(), np.arange(1, n + 1), p["face"].copy()))
    return out


def make_affwild2_dataset(out_dir: str | Path, n_train: int = 30, n_val: int = 15, seed: int = 0,
                          frames: tuple[int, int] = (300, 900), dims: dict[str, int] | None = None,
                          amplitude: float = AMPLITUDE, run_median: float = RUN_MEDIAN,
                          identity: float = IDENTITY_AMPLITUDE) -> dict[str, Path]:
    """Write a planted set in the Aff-Wild2 layout (module doc); ``n_train`` / ``n_val`` media files (two-person
    ones give two annotation ids). Returns {"train": annotation folder, "val": ..., "features": [set folders]}."""
    from affectfuse.data.store import FeatureSet, FeatureSetMeta, VideoFeatures
    from affectfuse.utils import write_text_atomic

    out = Path(out_dir)
    dims = dict(DEFAULT_DIMS if dims is None else dims)
    people = make_affwild2_people(n_train + n_val, seed, frames, dims, amplitude, run_median=run_median,
                                  identity=identity)
    media = sorted({p["id"].removesuffix("_left").removesuffix("_right") for p in people})
    train_media = set(media[:n_train])
    folders = {"train": out / "annotations" / "Train_Set", "val": out / "annotations" / "Validation_Set"}
    planted = {"generator": "affectfuse.data.synthetic_affwild2", "seed": seed, "amplitude": amplitude,
               "run_median": run_median, "identity": identity, "world_seed": WORLD_SEED}
    sets = {name: FeatureSet.create(out / "features" / name, FeatureSetMeta(
        name=f"planted-{name}", dim=dim, rate=None, extractor="synthetic", modality="face",
        extra={"fps": FPS, "synthetic": planted})) for name, dim in dims.items()}
    header = ",".join(EXPR_CLASSES)
    for p in people:
        split = "train" if p["id"].removesuffix("_left").removesuffix("_right") in train_media else "val"
        write_text_atomic(folders[split] / f"{p['id']}.txt",
                          header + "\n" + "\n".join(str(int(v)) for v in p["labels"]) + "\n")
        t = np.arange(len(p["labels"])) / FPS
        for name, fs in sets.items():
            fs.write(VideoFeatures(p["id"], p["features"][name], t, p["face"].copy()))
    for fs in sets.values():
        fs.write_index()
    write_text_atomic(out / "README.txt", (
        f"Planted EXPR set in the Aff-Wild2 layout made by affectfuse.data.synthetic_affwild2 (seed={seed}, "
        f"amplitude={amplitude}, run_median={run_median}, identity={identity}). How the signal is planted: "
        "that module's docstring.\n"))
    return {**folders, "features": [out / "features" / name for name in dims]}
