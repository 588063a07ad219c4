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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from affectfuse.data.moments import masked_mean_std, row_mean_std
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
        features: {modality: (N, T, D_m) float32}; masks: {modality: (N, T) bool, True = valid}.
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
        feats = {k: v[index].to(dtype) for k, v in self.features.items()}
        masks = {k: v[index] for k, v in self.masks.items()}
        labels = self.labels[index] if self.labels is not None else None
        return feats, masks, labels

    def dims(self) -> dict[str, int]:
        return {k: int(v.shape[-1]) for k, v in self.features.items()}


def _stack(feature_set: FeatureSet, name: str, ids: list[str], steps: int, mode: str, errors: list[str]):
    values = np.zeros((len(ids), steps, feature_set.meta.dim), dtype=np.float32)
    masks = np.zeros((len(ids), steps), dtype=bool)
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
        values[i], masks[i] = fix_length(vf.values, vf.mask, steps, mode)
        cut += vf.steps > 2 * steps
    if mode == "truncate" and ids and cut > len(ids) / 2:
        log.warning("%s: truncation to %d steps drops more than half of the rows of %d/%d videos; "
                    "consider data.sequence_mode=resample", name, steps, cut, len(ids))
    return torch.from_numpy(values), torch.from_numpy(masks)


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
    ids, errors = list(table.ids), []
    feats, masks = {}, {}
    for name, fs in feature_sets.items():
        feats[name], masks[name] = _stack(fs, name, ids, steps, mode, errors)
    if errors:
        raise FeatureStoreError(f"{len(errors)} feature problem(s):\n  " + "\n  ".join(errors))
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
    errors: list[str] = []
    feats, masks = {}, {}
    for name, fs in feature_sets.items():
        feats[name], masks[name] = _stack(fs, name, ids, steps, mode, errors)
    if errors:
        raise FeatureStoreError(f"{len(errors)} feature problem(s):\n  " + "\n  ".join(errors))
    return SequenceData(list(ids), list(ids), feats, masks, None, list(label_names))


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
        masks = data.masks[name]
        chunks = (values[s:s + chunk][masks[s:s + chunk]].numpy() for s in range(0, values.shape[0], chunk))
        mean, std = row_mean_std(chunks, values.shape[-1])
        out[name] = {"mean": torch.from_numpy(mean), "std": torch.from_numpy(std)}
    return out


def pooled_statistics(data: SequenceData, modalities: list[str], norm: dict | None = None,
                      chunk: int = 1024) -> np.ndarray:
    """(N, 2 sum D_m) per-video mean and std over the valid rows of each modality (:func:`masked_mean_std`),
    after ``norm`` (:func:`input_norm_stats`); zeros for a modality without valid rows. The probes' input."""
    out = []
    for start in range(0, len(data), chunk):
        parts = []
        for name in modalities:
            x = data.features[name][start:start + chunk]                          # (n, T, D)
            if norm is not None and name in norm:
                x = (x - norm[name]["mean"]) / norm[name]["std"]
            parts += masked_mean_std(x, data.masks[name][start:start + chunk])
        out.append(torch.cat(parts, dim=1))
    return torch.cat(out).numpy()
