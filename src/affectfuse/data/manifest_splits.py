"""Manifests (one label per item) and feature sets as classifiers read them: a manifest's split with its classes
mapped, its items as pooled rows or as frame sequences, and the description of the feature sets a checkpoint
stores (and checks again when it is used).

Shared by ``affectfuse classify`` / ``affectfuse expr`` and the Python API; paths and plain values in.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from affectfuse.data.affwild2 import load_items
from affectfuse.data.items import load_item_rows
from affectfuse.data.label_map import map_classes, parse_label_map
from affectfuse.data.layouts import load_manifest
from affectfuse.data.store import FeatureSet
from affectfuse.weights import check_same_weights


def manifest_table(path: str | Path, split: str | None = None, label_map: str | None = None):
    """The classification :class:`~affectfuse.data.table.VideoTable` of a manifest (its ``split`` rows; None:
    every row), class names mapped by ``label_map`` ('abaw' or ``NAME=CLASS,...``; see data.label_map)."""
    table = load_manifest(path)
    if table.task != "classification":
        raise ValueError(f"{path}: needs a 'label' column of class names for classification")
    if label_map:
        names, labels = map_classes(table.label_names, table.labels, parse_label_map(label_map))
        table = dataclasses.replace(table, label_names=names, labels=labels)
    return table.subset(split) if split else table


def manifest_rows(path, split, face_sets: Sequence[FeatureSet], label_map: str | None = None) -> tuple:
    """(table, :class:`~affectfuse.data.items.ItemRows`) of a manifest split, the rows the item classifier reads."""
    table = manifest_table(path, split, label_map)
    return table, load_item_rows(table.ids, table.labels, face_sets, table.groups)


def manifest_frames(path, split, face_sets: Sequence[FeatureSet], fill: str, label_map: str | None = None) -> tuple:
    """(table, items as frame sequences) of a manifest split, for per-frame checkpoints and the frame probe."""
    table = manifest_table(path, split, label_map)
    return table, load_items(table.ids, table.labels, face_sets, fill)


def open_sets(paths: Sequence[str | Path]) -> list[FeatureSet]:
    return [FeatureSet.open(p) for p in paths]


def describe_sets(sets: Sequence[FeatureSet]) -> list[dict]:
    """What a checkpoint stores about each feature set it was trained on (name, folder, dim, extractor, weights,
    and for face features the crop they were cut with: ``input``, as the set's ``meta.json`` has it)."""
    return [{"name": fs.meta.name, "path": str(fs.path), "dim": fs.meta.dim, "extractor": fs.meta.extractor,
             "random_weights": fs.meta.random_weights, "weights": fs.meta.weights,
             "input": (fs.meta.extra or {}).get("input")} for fs in sets]


def checkpoint_sets(checkpoint: str | Path, info: dict, features: Sequence[str | Path] | None = None,
                    audio: str | Path | None = None) -> tuple[list[FeatureSet], FeatureSet | None]:
    """(face sets, audio set or None) for a checkpoint whose ``info`` describes its sets: those given (checked
    against the checkpoint: dims, and the weights file each was extracted with) or else the stored folders."""
    stored = info.get("feature_sets", [])
    face = open_sets(features or [d["path"] for d in stored])
    want = [d["dim"] for d in stored]
    if want and [fs.meta.dim for fs in face] != want:
        raise ValueError(f"feature dims {[fs.meta.dim for fs in face]} differ from the checkpoint's {want} "
                         f"({', '.join(d['name'] for d in stored)})")
    for d, fs in zip(stored, face):
        check_same_weights(d, fs.meta.to_dict(), f"{checkpoint} (feature set {d['name']!r})",
                           f"feature set {fs.meta.name!r} ({fs.path})")
    audio_path = audio or (info.get("audio_set") or {}).get("path")
    return face, (FeatureSet.open(audio_path) if audio_path else None)

