"""Per-item inputs of a manifest (one label per speech file, photo or clip): rows -> pooled statistics.

An item is a short sequence of feature rows per feature set (an image is one row, a 2 s utterance a few
1 s audio windows). Item-level classifiers never see single rows: each feature set is standardised with
the training split's statistics, then pooled over the item's valid rows into its mean and std.

Letters: N items, T_i rows of item i, D_s dims of feature set s, P = sum_s 2 D_s pooled dims.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from affectfuse.data.moments import row_mean_std
from affectfuse.data.store import FeatureSet, FeatureStoreError


@dataclass
class ItemRows:
    """The valid rows of N items in S feature sets.

    Attributes:
        ids: N item ids (feature-store keys).
        set_names: S feature-set names, in the order their pooled columns are concatenated.
        rows: rows[s][i] = (T_i, D_s) float32 valid rows (mask True) of item i in set s; T_i may be 0.
        labels: (N,) int64 class index per item, -1 = unlabelled.
        groups: N group names (speaker / person) or None.
    """

    ids: list[str]
    set_names: list[str]
    rows: list[list[np.ndarray]]
    labels: np.ndarray
    groups: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def dims(self) -> list[int]:
        return [int(r[0].shape[1]) if r else 0 for r in self.rows]

    def subset(self, index) -> "ItemRows":
        """The items at ``index`` (array of positions)."""
        index = [int(i) for i in np.asarray(index).reshape(-1)]
        return ItemRows([self.ids[i] for i in index], list(self.set_names),
                        [[r[i] for i in index] for r in self.rows], self.labels[index],
                        [self.groups[i] for i in index] if self.groups is not None else None)


def load_item_rows(ids: list[str], labels, feature_sets: list[FeatureSet], groups=None,
                   names: list[str] | None = None) -> ItemRows:
    """Read every item's valid rows from each feature set; one error lists every id without features.

    ``names``: the keys under which the sets' statistics are stored (default: each set's name, made
    unique with ``#k`` when two sets share one).
    """
    from affectfuse.data.affwild2 import _read_for

    names = names or _unique_names([fs.meta.name for fs in feature_sets])
    rows: list[list[np.ndarray]] = [[] for _ in feature_sets]
    problems = []
    for vid in ids:
        for s, fs in enumerate(feature_sets):
            try:
                vf = _read_for(fs, vid)
            except FeatureStoreError as exc:
                problems.append(str(exc))
                break
            values = np.asarray(vf.values, dtype=np.float32).reshape(-1, fs.meta.dim)
            rows[s].append(values[np.asarray(vf.mask, dtype=bool).reshape(-1)[:len(values)]])
    if problems:
        raise FeatureStoreError(f"{len(problems)} item(s) without features:\n" + "\n".join(problems))
    return ItemRows(list(ids), list(names), rows, np.asarray(labels, dtype=np.int64).reshape(-1),
                    list(groups) if groups is not None else None)


def _unique_names(names: list[str]) -> list[str]:
    out = []
    for n in names:
        out.append(n if n not in out else f"{n}#{len(out)}")
    return out


def row_norm_stats(items: ItemRows) -> dict[str, dict[str, np.ndarray]]:
    """Per feature set, the mean and std (population, ddof 0) of every dim over all valid rows of ``items``.

    Returns {set name: {"mean": (D_s,) float32, "std": (D_s,) float32}}. Items are merged one at a time in
    float64 with Chan's pairwise update, so dims whose scales differ by orders of magnitude (eGeMAPS) lose
    nothing; a constant dim (std <= 1e-6 |mean|) or a set without rows gets std 1, so it maps to 0, not NaN
    -- :func:`affectfuse.data.moments.row_mean_std`, as for ERI sequences.
    """
    out = {}
    for name, rows, dim in zip(items.set_names, items.rows, items.dims()):
        mean, std = row_mean_std(rows, dim)
        out[name] = {"mean": mean, "std": std}
    return out


def pool_items(items: ItemRows, norm: dict[str, dict] | None) -> np.ndarray:
    """(N, P) float32: per feature set, the mean then the std (ddof 0) of the item's standardised valid rows
    (``norm``: :func:`row_norm_stats`; None = raw rows). An item without rows in a set gets zeros there."""
    parts = []
    for name, rows, dim in zip(items.set_names, items.rows, items.dims()):
        mean = np.zeros(dim, np.float64) if norm is None else np.asarray(norm[name]["mean"], np.float64)
        std = np.ones(dim, np.float64) if norm is None else np.asarray(norm[name]["std"], np.float64)
        block = np.zeros((len(rows), 2 * dim), np.float32)
        for i, r in enumerate(rows):
            if len(r):
                z = (r.astype(np.float64) - mean) / std
                block[i, :dim], block[i, dim:] = z.mean(0), z.std(0)
        parts.append(block)
    return np.concatenate(parts, axis=1) if parts else np.zeros((len(items), 0), np.float32)


def standardise_per_group(items: ItemRows) -> ItemRows:
    """``items`` with every feature set's rows standardised by the statistics of their own group's rows
    (speaker / person normalisation: each group's mean and std over all its items, labels unused).
    Items without a group are left as they are; a group of one item with one row maps to zeros."""
    if items.groups is None:
        raise ValueError("per-group standardisation needs a 'group' column in the manifest")
    rows = [list(r) for r in items.rows]
    groups = np.asarray(items.groups, dtype=object)
    for g in dict.fromkeys(items.groups):
        if g is None or g == "":
            continue
        index = np.flatnonzero(groups == g)
        stats = row_norm_stats(items.subset(index))
        for s, name in enumerate(items.set_names):
            mean, std = stats[name]["mean"], stats[name]["std"]
            for i in index:
                rows[s][i] = ((rows[s][i] - mean) / std).astype(np.float32)
    return ItemRows(list(items.ids), list(items.set_names), rows, items.labels, list(items.groups))
