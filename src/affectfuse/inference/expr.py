"""Per-frame expressions from an EXPR checkpoint (``affectfuse expr train``) on a raw video.

The checkpoint names the face feature sets it was trained on (their extractors), the fill policy for
faceless frames and the window/stride; here those extractors run on the aligned crops of every frame
with a face, features are stitched in the checkpoint's order, faceless frames are filled by the same
policy, and the frame transformer's overlapping-window probabilities are averaged per frame, then smoothed or
decoded over the whole video as the checkpoint stores it (``info["smoothing"]``: the fixed window or the HMM
decoder chosen on validation, :mod:`affectfuse.training.temporal`); a model trained on per-video centred
frames centres this video's frames the same way (inside ``predict_video``).

Letters: F frames with a face, T frames, D stitched feature dim, C checkpoint classes.
"""

from __future__ import annotations

import numpy as np

from affectfuse.labels import EXPR_CLASSES


class ExprCheckpointExpressions:
    """Face model backed by an EXPR checkpoint: ``features`` per batch, ``finish`` over the whole video."""

    def __init__(self, path: str, device: str = "cpu", random_weights: bool = False, precision: str = "fp32"):
        from affectfuse.faces.plan import recorded_plan
        from affectfuse.features.registry import accepted_options, create_extractor
        from affectfuse.training.expr import load_checkpoint
        from affectfuse.training.temporal import resolve_smoothing
        from affectfuse.weights import check_same_weights

        self.model, self.ckpt = load_checkpoint(path, device=device)
        self.path, self.device = str(path), device
        info = self.ckpt.get("info") or {}
        sets = info.get("feature_sets") or []
        if not sets:
            raise ValueError(f"{path}: the checkpoint names no feature sets, so predict cannot rebuild its inputs")
        if info.get("audio_dim"):
            raise ValueError(f"{path}: checkpoints with an audio stream are not supported on raw videos yet; "
                             "extract features and use `affectfuse expr predict`")
        self.extractors = [create_extractor(d["extractor"], device=device, random_weights=random_weights,
                                            **accepted_options(d["extractor"], precision=precision))
                           for d in sets]
        for d, ex in zip(sets, self.extractors):
            if ex.dim != d["dim"]:
                raise ValueError(f"{path}: feature set {d['name']} has dim {d['dim']}, extractor {ex.name} gives {ex.dim}")
            check_same_weights(d, ex.describe(), f"{path} (feature set {d['name']!r})",
                               f"extractor {ex.name!r} of this predict")
            ex.input = recorded_plan(d.get("input"), ex.input, f"{path}: feature set {d['name']!r}")
        self.face_plans = tuple(ex.input for ex in self.extractors)
        self.dim = sum(ex.dim for ex in self.extractors)
        self.fill = info.get("fill", "ffill")
        cfg = self.ckpt.get("train_config") or {}
        self.window, self.stride = int(cfg.get("window", 64)), int(cfg.get("predict_stride", 16))
        self.smoothing = resolve_smoothing(None, info.get("smoothing"))  # chosen on validation at training
        self.checkpoint_classes = list(info.get("class_names") or EXPR_CLASSES)
        unknown = [c for c in self.checkpoint_classes if c not in EXPR_CLASSES]
        if unknown:
            raise ValueError(f"{path}: classes {unknown} are not ABAW expression classes {list(EXPR_CLASSES)}; "
                             "retrain with `affectfuse expr train ... --label-map abaw` (usual spellings, "
                             "contempt -> Other) or `--label-map NAME=CLASS,...`")
        self.class_names = tuple(c for c in EXPR_CLASSES if c in self.checkpoint_classes)
        self.name = f"expr-checkpoint:{'+'.join(ex.name for ex in self.extractors)}"
        self.random_weights = random_weights or any(d.get("random_weights") for d in sets)

    def features(self, crops: dict) -> np.ndarray:
        """{CropSpec: (F, S, S, 3)} -> (F, D): each extractor on its declared crop, in checkpoint order."""
        return np.concatenate([ex(crops[ex.input.crop]) for ex in self.extractors], axis=1)

    def finish(self, features: np.ndarray, found: np.ndarray) -> np.ndarray:
        """(T, D) features (rows without a face ignored), (T,) found -> (T, 8) over ``EXPR_CLASSES``."""
        from affectfuse.data.affwild2 import ExprVideo, fill_faceless
        from affectfuse.training.expr import predict_video

        t = len(found)
        out = np.zeros((t, len(EXPR_CLASSES)), np.float32)
        if t == 0 or not found.any():
            return out
        values, valid = fill_faceless(features.astype(np.float32), found.astype(bool), self.fill)
        video = ExprVideo("video", values, valid, np.full(t, -1, np.int64), np.arange(1, t + 1), found.astype(bool))
        probs = predict_video(self.model, video, self.window, self.stride, device=self.device,
                              smoothing=self.smoothing)  # (T, C)
        for j, name in enumerate(self.checkpoint_classes):
            out[:, EXPR_CLASSES.index(name)] = probs[:, j]
        return out

    def describe(self) -> dict:
        from affectfuse.training.temporal import describe
        from affectfuse.weights import sha256_file

        return {"role": "face expressions", "name": self.name, "checkpoint": self.path,
                "weights": {"path": self.path, "filename": self.path.rsplit("/", 1)[-1],
                            "sha256": sha256_file(self.path)},
                "extractors": [ex.describe() for ex in self.extractors], "fill": self.fill,
                "window": self.window, "stride": self.stride, "smoothing": describe(self.smoothing),
                "video_center": bool(self.model.config.video_center), "classes": list(self.class_names),
                "random_weights": bool(self.random_weights)}
