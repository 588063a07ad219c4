"""One loader for every trained affectfuse model: :func:`load` reads a checkpoint and returns a predictor.

The file says what it is (``training.checkpoint.read_any_checkpoint`` gives its kind; a fine-tuned backbone
export is a weights file with a ``.json`` description next to it), so the caller never names the task:

================  ==========================================  ==============================================
kind              made by                                     predictor
================  ==========================================  ==============================================
``eri``           ``affectfuse eri train``                    :class:`EriPredictor`: 7 intensities per video
``expr``          ``affectfuse expr train`` (per frame)       :class:`ExprPredictor`: 8 class probs per frame
``items``         ``affectfuse classify train`` (manifests)   :class:`ItemPredictor`: class probs per item
``finetune``      ``affectfuse finetune`` (the ``<name>.pt``)  :class:`FinetunedPredictor`: probs per crop
================  ==========================================  ==============================================

Every predictor has ``kind``, ``path``, ``label_names``, ``scale``, ``feature_sets`` (what it was trained
on, with the weights files their extractors loaded) and ``describe()``. Predictions come back as
``pandas.DataFrame`` s with label names as columns; the ERI and EXPR predictors also analyse a raw video
(``predict_video`` -> :class:`~affectfuse.inference.prediction.VideoPrediction`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np


def checkpoint_kind(path: str | Path) -> tuple[str, dict | None]:
    """``(kind, payload)`` of a model file: ``"finetune"`` (payload None) for a fine-tuned export (a
    ``<name>.pt`` with its ``<name>.json``), else the checkpoint's kind; errors name the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    sidecar = path.with_suffix(".json")
    if sidecar.is_file() and "head_file" in _json(sidecar):
        return "finetune", None
    from affectfuse.training.checkpoint import read_any_checkpoint

    kind, ckpt = read_any_checkpoint(path, what="model checkpoint")
    if ckpt.get("role", "best") != "best":
        raise ValueError(f"{path}: a resume state (last.pt), not a model; load the run's best.pt")
    return kind, ckpt


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable model description ({exc})") from exc
    return data if isinstance(data, dict) else {}


def load(checkpoint: str | Path, device: str = "cpu"):
    """The predictor of any affectfuse model file (a run folder means its ``best.pt``); see the module table."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "best.pt"
    kind, payload = checkpoint_kind(path)
    if kind == "finetune" and payload is not None:
        raise ValueError(f"{path}: a fine-tuning run's checkpoint; load its export instead "
                         f"({path.parent / 'export'}/<extractor>.pt, with its .json and .head.pt)")
    if kind == "finetune":
        return FinetunedPredictor(path, device=device)
    cls = {"eri": EriPredictor, "expr": ExprPredictor, "items": ItemPredictor}.get(kind)
    if cls is None:
        raise ValueError(f"{path}: a {kind!r} checkpoint has no predictor (kinds: eri, expr, items, finetune)")
    return cls(path, device=device, ckpt=payload)  # the payload already read: the file is read once


class _Predictor:
    kind = ""

    def describe(self) -> dict:
        """Kind, file (path, sha256), label names, scale and the feature sets it was trained on."""
        from affectfuse.weights import loaded_file

        return {"kind": self.kind, "checkpoint": loaded_file(self.path), "label_names": list(self.label_names),
                "scale": self.scale, "feature_sets": self.feature_sets}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, labels={list(self.label_names)})"


class _VideoMixin:
    def predict_video(self, video: str | Path, **options):
        """A raw video analysed with this checkpoint -> VideoPrediction; ``options``: the other
        :class:`~affectfuse.inference.video.PredictOptions` fields (models load on every call: for many
        videos use ``affectfuse.predict(video, eri_checkpoint=...)``, which keeps them)."""
        from affectfuse.inference.video import PredictOptions, VideoPredictor

        opts = PredictOptions(**{**options, self._video_option: str(self.path)})
        return VideoPredictor(opts).analyse(video)


class EriPredictor(_VideoMixin, _Predictor):
    """An ERI checkpoint: :meth:`predict` on feature sets, :meth:`predict_video` on a raw video."""

    kind, _video_option = "eri", "eri_checkpoint"

    def __init__(self, path: Path, device: str = "cpu", ckpt: dict | None = None):
        from affectfuse.training.checkpoint import load_checkpoint, model_from_checkpoint

        self.path = Path(path)
        self.ckpt = load_checkpoint(path) if ckpt is None else {**ckpt, "path": str(path)}
        self.model = model_from_checkpoint(self.ckpt).to(device)
        self.label_names = tuple(self.ckpt["label_names"])
        self.scale = (self.ckpt.get("task") or {}).get("scale") or self.ckpt.get("scale", "")
        self.feature_sets = dict(self.ckpt["feature_sets"])

    def predict(self, features: Mapping[str, str | Path], table: str | Path | None = None, split: str = "test"):
        """``features``: {modality: feature-set folder} as trained (``describe()["feature_sets"]``); every
        video present in all of them, or a ``table`` split. Returns a DataFrame: index ``File_ID``, one
        column per emotion, intensities in [0, 1]. Random-weight vs real features is an error."""
        import pandas as pd

        from affectfuse.inference.from_features import eri_predictions

        data, pred = eri_predictions(self.ckpt, self.model, features, table, split)
        values = np.asarray(pred, dtype=np.float64)  # (N, 7)
        return pd.DataFrame(values, index=pd.Index(list(data.file_ids), name="File_ID"),
                            columns=list(self.label_names))


class ExprPredictor(_VideoMixin, _Predictor):
    """A per-frame EXPR checkpoint: :meth:`predict` on feature sets, :meth:`predict_video` on a raw video's
    faces (frames as ``VideoPrediction.to_pandas()``). Both apply the checkpoint's ``smoothing`` (the window or
    HMM decoder chosen on validation; ``describe()["smoothing"]``)."""

    kind, _video_option = "expr", "expr_checkpoint"

    def __init__(self, path: Path, device: str = "cpu", ckpt: dict | None = None):
        from affectfuse.training.expr import load_checkpoint, model_from_payload
        from affectfuse.training.temporal import resolve_smoothing

        self.path = Path(path)
        if ckpt is None:
            self.model, self.ckpt = load_checkpoint(path, device=device)
        else:
            self.model, self.ckpt = model_from_payload(ckpt, device), ckpt
        info = self.ckpt.get("info") or {}
        self.label_names = tuple(info.get("class_names") or self.ckpt.get("label_names") or ())
        self.scale = "probability in [0, 1] per class and frame"
        self.feature_sets = {d["name"]: d for d in info.get("feature_sets") or []}
        self.smoothing = resolve_smoothing(None, info.get("smoothing"))

    def describe(self) -> dict:
        from affectfuse.training.temporal import describe

        return {**super().describe(), "smoothing": describe(self.smoothing)}

    def predict(self, features: Sequence[str | Path], ids: Sequence[str], smooth: str | None = None):
        """``features``: the face feature-set folders it was trained on, in order; ``ids``: the videos. Returns
        a DataFrame: index (``id``, ``frame``, 1-based), one column per class, after the stored smoothing
        (``smooth``: ``none`` / ``mean:N`` / ``mode:N`` instead, as ``expr predict --smooth``)."""
        import pandas as pd

        from affectfuse.data.affwild2 import load_expr_videos
        from affectfuse.data.manifest_splits import checkpoint_sets
        from affectfuse.training.expr import predict_videos
        from affectfuse.training.temporal import resolve_smoothing

        info, cfg = self.ckpt["info"], self.ckpt["train_config"]
        face, _ = checkpoint_sets(self.path, info, [str(f) for f in features])
        videos = load_expr_videos(list(ids), face, None, info.get("fps"), info.get("fill", "ffill"))
        spec = resolve_smoothing(smooth, info.get("smoothing")) if smooth else self.smoothing
        probs = predict_videos(self.model, videos, cfg["window"], cfg["predict_stride"], smoothing=spec)
        index = pd.MultiIndex.from_tuples([(v.id, int(f)) for v in videos for f in v.frames], names=["id", "frame"])
        return pd.DataFrame(np.concatenate([probs[v.id] for v in videos]), index=index, columns=list(self.label_names))


class ItemPredictor(_Predictor):
    """A per-item classifier (manifests): :meth:`predict` gives class probabilities per item."""

    kind = "items"

    def __init__(self, path: Path, device: str = "cpu", ckpt: dict | None = None):
        from affectfuse.training.checkpoint import read_checkpoint
        from affectfuse.training.items import ITEMS_FORMAT, classifier_from_payload

        self.path = Path(path)
        self.ckpt = read_checkpoint(path, ITEMS_FORMAT, "item checkpoint") if ckpt is None else ckpt
        self.classifier = classifier_from_payload(self.ckpt)
        self.label_names = tuple(self.classifier.class_names)
        self.scale = "probability in [0, 1] per class; rows sum to 1"
        sets = self.ckpt.get("feature_sets") or (self.ckpt.get("info") or {}).get("feature_sets") or {}
        self.feature_sets = sets if isinstance(sets, dict) else {d["name"]: d for d in sets}

    def predict(self, features: Sequence[str | Path], ids: Sequence[str]):
        """``features``: the feature-set folders it was trained on, in order; ``ids``: the items. Returns a
        DataFrame: index ``id``, one column per class. Random-weight vs real features is an error."""
        import pandas as pd

        from affectfuse.data.items import load_item_rows
        from affectfuse.data.manifest_splits import checkpoint_sets

        stored = [{"name": k, **v} for k, v in self.feature_sets.items()]
        sets, _ = checkpoint_sets(self.path, {"feature_sets": stored}, [str(f) for f in features])  # dims, weights
        items = load_item_rows(list(ids), np.full(len(ids), -1), sets)
        items.set_names = list(self.classifier.norm)  # the checkpoint's keys for the same sets, in its order
        probs = self.classifier.probabilities(items)  # (N, C)
        return pd.DataFrame(probs, index=pd.Index(list(ids), name="id"), columns=list(self.label_names))


class FinetunedPredictor(_Predictor):
    """A fine-tuned backbone export (``<name>.pt`` + ``.json`` + ``.head.pt``): class probabilities of
    aligned face crops."""

    kind = "finetune"

    def __init__(self, path: Path, device: str = "cpu"):
        from affectfuse.training.finetune_export import load_finetuned

        self.path = Path(path)
        self.model, self.extractor = load_finetuned(path, device=device)
        meta = _json(self.path.with_suffix(".json"))
        self.label_names = tuple(meta["classes"])
        self.scale = "probability in [0, 1] per class; rows sum to 1"
        self.feature_sets = {meta["extractor"]: {"extractor": meta["extractor"], "weights": meta.get("base_weights"),
                                                 "random_weights": bool(meta.get("base_random_weights"))}}

    def predict(self, crops: np.ndarray):
        """``crops``: (N, S, S, 3) uint8 RGB faces aligned as the extractor expects (``extractor.input``).
        Returns a DataFrame: one row per crop, one column per class."""
        import pandas as pd
        import torch

        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
            raise ValueError(f"crops must be (N, S, S, 3) uint8 RGB, got {crops.shape} {crops.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2)))  # (N, 3, S, S) uint8
        with torch.inference_mode():
            probs = torch.softmax(self.model(x), dim=-1).float().numpy()
        return pd.DataFrame(probs, columns=list(self.label_names))
