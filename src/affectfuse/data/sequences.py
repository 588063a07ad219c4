"""Per-video feature sequences -> fixed-length tensors for the ERI model.

Letters: N videos, T fixed steps (30 by default, as the authors), D feature dim, K labels.

Two ways to bring a video's (T_v, D) rows to T steps (``mode``):

- ``"truncate"`` (default): keep the first T rows, zero-pad shorter videos; the mask marks padding.
  This is what the authors do, and with their inputs (DeepSpectrum at 1 s / 0.5 s hop, ~20 rows for a
  ~10 s Hume-Reaction clip) nothing is cut, so it reproduces the paper's recipe exactly.
- ``"resample"``: videos longer than T are split into T uniform segments and each segment is the mean
  of its valid rows (a segment with none is masked); shorter videos are zero-padded as above. Use it
  for per-frame features (e.g. 30 fps face features: truncation would keep only the first second).
  A warning is logged when truncation drops more than half of the rows of most videos.

Where the rows live: in RAM as torch tensors while the stacked arrays of a load stay under
``AFFECTFUSE_SEQUENCES_IN_RAM_MB`` (default 256 MB); past it, each feature set's rows are written once to a
``.npy`` cache inside its folder and read batch by batch (:mod:`affectfuse.data.sequence_cache`), so the
training set may exceed RAM. Either way :meth:`SequenceData.batch` gives the same tensors, bit for bit.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass

import numpy as np
import torch

from affectfuse.data import sequence_cache as cache
from affectfuse.data.moments import masked_mean_std, row_mean_std
from affectfuse.data.sequence_cache import DiskRows
from affectfuse.data.store import FeatureSet, FeatureStoreError

log = logging.getLogger(__name__)

SEQUENCE_MODES = ("truncate", "resample")


def fix_length(values: np.ndarray, mask: np.ndarray, steps: int, mode: str = "truncate") -> tuple[np.ndarray, np.ndarray]:
    """(T_v, D) rows + (T_v,) valid mask -> (steps, D) float32 and (steps,) bool; see module doc."""
    if mode not in SEQUENCE_MODES:
        raise ValueError(f"unknown sequence mode {mode!r}; valid: {', '.join(SEQUENCE_MODES)}")
    n, dim = values.shape
    out = np.zeros((steps, dim), dtype=np.float32)
    out_mask = np.zeros(steps, dtype=bool)
    values = np.where(mask[:, None], values, 0.0).astype(np.float32)
    if n <= steps or mode == "truncate":
        k = min(n, steps)
        out[:k] = values[:k]
        out_mask[:k] = mask[:k]
        return out, out_mask
    edges = np.linspace(0, n, steps + 1).round().astype(int)       # uniform segments, each >= 1 row
    for i in range(steps):
        seg_mask = mask[edges[i]:edges[i + 1]]
        if seg_mask.any():
            out[i] = values[edges[i]:edges[i + 1]][seg_mask].mean(axis=0)
            out_mask[i] = True
    return out, out_mask


@dataclass
class SequenceData:
    """Fixed-length model inputs for N videos.

    Attributes:
        ids: canonical feature-store ids; file_ids: ids as the source spells them (for output files).
        features: {modality: (N, T, D_m) float32}, a tensor or rows on disk (:class:`DiskRows`; read them
            through :meth:`batch` / :func:`rows_of`); masks: {modality: (N, T) bool, True = valid}.
        labels: (N, K) float32 intensities, or None (unlabelled test split).
        label_names: the K label names, in column order.
    """

    ids: list[str]
    file_ids: list[str]
    features: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    labels: torch.Tensor | None
    label_names: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, index: torch.Tensor, dtype: torch.dtype = torch.float32):
        """Rows ``index`` -> (features, masks, labels or None), features cast to ``dtype``."""
        feats = {k: rows_of(v, index).to(dtype) for k, v in self.features.items()}
        masks = {k: v[index] for k, v in self.masks.items()}
        labels = self.labels[index] if self.labels is not None else None
        return feats, masks, labels

    def dims(self) -> dict[str, int]:
        return {k: int(v.shape[-1]) for k, v in self.features.items()}


def rows_of(values: torch.Tensor | DiskRows, index) -> torch.Tensor:
    """Rows ``index`` (a 1-D index tensor/array, or a ``slice``) of an in-RAM tensor or of rows on disk."""
    if isinstance(values, DiskRows):
        if isinstance(index, slice):
            index = np.arange(*index.indices(len(values)))
        return torch.from_numpy(values.take(np.asarray(index)))
    return values[index]


def _chunk_for(values, chunk: int) -> int:
    """Rows per chunk: ``chunk``, fewer for rows on disk (about 64 MB a read)."""
    if isinstance(values, DiskRows):
        return max(1, min(chunk, (64 << 20) // max(values.row_bytes, 1)))
    return chunk


def _video_rows(feature_set: FeatureSet, name: str, ids: list[str], steps: int, mode: str, errors: list[str]):
    """Yield (i, (steps, D) float32, (steps,) bool) per readable video; problems go to ``errors``."""
    cut = 0
    for i, vid in enumerate(ids):
        try:
            vf = feature_set.read(vid)
        except FeatureStoreError as exc:
            errors.append(f"{name}: {exc}")
            continue
        if vf.steps == 0:
            errors.append(f"{name}: {feature_set.path}: video {vid!r} has no feature rows")
            continue
        if not np.isfinite(vf.values[vf.mask]).all():
            errors.append(f"{name}: {feature_set.file_for(vid)}: NaN or infinite feature values")
            continue
        yield (i, *fix_length(vf.values, vf.mask, steps, mode))
        cut += vf.steps > 2 * steps
    if mode == "truncate" and ids and cut > len(ids) / 2:
        log.warning("%s: truncation to %d steps drops more than half of the rows of %d/%d videos; "
                    "consider data.sequence_mode=resample", name, steps, cut, len(ids))


def _stack(feature_set: FeatureSet, name: str, ids: list[str], steps: int, mode: str, errors: list[str],
           on_disk: bool = False):
    """(N, steps, D) values (a tensor, or :class:`DiskRows` when ``on_disk`` and the folder takes a cache)
    and (N, steps) bool masks of ``ids``."""
    if on_disk:
        found = _stack_on_disk(feature_set, name, ids, steps, mode, errors)
        if found is not None:
            return found
    values = np.zeros((len(ids), steps, feature_set.meta.dim), dtype=np.float32)
    masks = np.zeros((len(ids), steps), dtype=bool)
    for i, v, m in _video_rows(feature_set, name, ids, steps, mode, errors):
        values[i], masks[i] = v, m
    return torch.from_numpy(values), torch.from_numpy(masks)


def _stack_on_disk(fs: FeatureSet, name: str, ids: list[str], steps: int, mode: str, errors: list[str]):
    """The rows from (or first written to) ``fs``'s sequence cache -> (DiskRows, (N, steps) bool tensor);
    None when the set cannot have one (MuSe CSV folder, a missing file: the in-RAM path reports it, a
    read-only folder: logged)."""
    if type(fs) is not FeatureSet:
        return None
    try:
        files = [fs._find(v) for v in ids]
    except FeatureStoreError:
        return None
    if any(f is None for f in files):
        return None
    key = cache.cache_key(files, ids, steps, mode, fs.meta.dim)
    folder = fs.path / cache.CACHE_DIR / key
    found = cache.open_cached(folder)
    if found is None:
        n_errors = len(errors)
        try:
            cache.remove_unfinished(folder)
            cache.write_cache(folder, _video_rows(fs, name, ids, steps, mode, errors), len(ids), steps, fs.meta.dim)
        except OSError as exc:
            log.warning("%s: cannot write the sequence cache (%s); keeping the rows in RAM", name, exc)
            shutil.rmtree(folder, ignore_errors=True)
            return None
        if len(errors) > n_errors:  # reported by the caller; never leave a cache of a broken set
            shutil.rmtree(folder, ignore_errors=True)
            return torch.zeros(0), torch.zeros(0, dtype=torch.bool)
        found = cache.finish_cache(folder, {"ids": list(map(str, ids)), "steps": steps, "mode": mode,
                                            "dim": fs.meta.dim, "key": key})
    values, masks = found
    return values, torch.from_numpy(masks)


def _on_disk(feature_sets: dict[str, FeatureSet], n: int, steps: int) -> bool:
    """True when the stacked float32 arrays of ``n`` videos would exceed the in-RAM limit."""
    total = sum(n * steps * fs.meta.dim * 4 for fs in feature_sets.values())
    return total > cache.in_ram_limit_bytes()


def load_sequences(table, feature_sets: dict[str, FeatureSet], steps: int = 30, mode: str = "truncate",
                   split: str | None = None) -> SequenceData:
    """Read every video of ``table`` (a :class:`affectfuse.data.layouts.VideoTable`, optionally one
    split) from each feature set into fixed-length tensors. Missing or broken feature files are
    collected and raised as one :class:`FeatureStoreError` listing every offending video.
    """
    if split is not None:
        table = table.subset(split)
    if len(table.ids) == 0:
        raise ValueError(f"{getattr(table, 'source', 'table')}: no videos in split {split!r}")
    if hasattr(table, "check_features"):
        table.check_features(feature_sets)
    ids = list(table.ids)
    feats, masks = _stack_all(feature_sets, ids, steps, mode)
    labels = None
    if table.labels is not None:
        labels = torch.as_tensor(np.asarray(table.labels, dtype=np.float32))
    return SequenceData(ids, list(table.file_ids), feats, masks, labels, list(table.label_names))


def load_unlabelled(feature_sets: dict[str, FeatureSet], label_names, steps: int = 30,
                    mode: str = "truncate", ids: list[str] | None = None) -> SequenceData:
    """Sequences of every video present in all ``feature_sets`` (or of ``ids``), without labels."""
    if ids is None:
        common = None
        for fs in feature_sets.values():
            common = set(fs.ids()) if common is None else common & set(fs.ids())
        ids = sorted(common or [])
        if not ids:
            raise FeatureStoreError("no video has features in every feature set: "
                                    + ", ".join(str(fs.path) for fs in feature_sets.values()))
    feats, masks = _stack_all(feature_sets, ids, steps, mode)
    return SequenceData(list(ids), list(ids), feats, masks, None, list(label_names))


def _stack_all(feature_sets: dict[str, FeatureSet], ids: list[str], steps: int, mode: str):
    """Every set's (N, T, D) features and (N, T) masks of ``ids``; all problems raised at once as one
    :class:`FeatureStoreError`."""
    errors: list[str] = []
    feats, masks = {}, {}
    on_disk = _on_disk(feature_sets, len(ids), steps)
    for name, fs in feature_sets.items():
        feats[name], masks[name] = _stack(fs, name, ids, steps, mode, errors, on_disk)
    if errors:
        raise FeatureStoreError(f"{len(errors)} feature problem(s):\n  " + "\n  ".join(errors))
    return feats, masks


def from_arrays(features: dict[str, np.ndarray], labels: np.ndarray | None, label_names,
                masks: dict[str, np.ndarray] | None = None, ids: list[str] | None = None) -> SequenceData:
    """Wrap in-memory (N, T, D) arrays (e.g. ``make_eri_arrays``) as :class:`SequenceData`."""
    n = next(iter(features.values())).shape[0]
    ids = ids or [f"{i:05d}" for i in range(n)]
    feats = {k: torch.as_tensor(np.asarray(v, dtype=np.float32)) for k, v in features.items()}
    if masks is None:
        masks_t = {k: torch.ones(v.shape[:2], dtype=torch.bool) for k, v in feats.items()}
    else:
        masks_t = {k: torch.as_tensor(np.asarray(v, dtype=bool)) for k, v in masks.items()}
    lab = torch.as_tensor(np.asarray(labels, dtype=np.float32)) if labels is not None else None
    return SequenceData(list(ids), list(ids), feats, masks_t, lab, list(label_names))


def input_norm_stats(data: SequenceData, chunk: int = 1024) -> dict[str, dict[str, torch.Tensor]]:
    """Per modality, the mean and std of every feature dim over the valid rows of ``data``.

    Returns {modality: {"mean": (D,) float32, "std": (D,) float32}}, from :func:`row_mean_std` over chunks of
    ``chunk`` videos (memory stays flat); a constant dim (or a modality without valid rows) gets std 1.
    """
    out = {}
    for name, values in data.features.items():
        masks, step = data.masks[name], _chunk_for(values, chunk)
        chunks = (rows_of(values, slice(s, s + step))[masks[s:s + step]].numpy()
                  for s in range(0, values.shape[0], step))
        mean, std = row_mean_std(chunks, values.shape[-1])
        out[name] = {"mean": torch.from_numpy(mean), "std": torch.from_numpy(std)}
    return out


def pooled_statistics(data: SequenceData, modalities: list[str], norm: dict | None = None,
                      chunk: int = 1024) -> np.ndarray:
    """(N, 2 sum D_m) per-video mean and std over the valid rows of each modality (:func:`masked_mean_std`),
    after ``norm`` (:func:`input_norm_stats`); zeros for a modality without valid rows. The probes' input."""
    out = []
    chunk = min(_chunk_for(data.features[name], chunk) for name in modalities) if modalities else chunk
    for start in range(0, len(data), chunk):
        parts = []
        for name in modalities:
            x = rows_of(data.features[name], slice(start, start + chunk))       # (n, T, D)
            if norm is not None and name in norm:
                x = (x - norm[name]["mean"]) / norm[name]["std"]
            parts += masked_mean_std(x, data.masks[name][start:start + chunk])
        out.append(torch.cat(parts, dim=1))
    return torch.cat(out).numpy()
