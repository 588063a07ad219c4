"""The models ``affectfuse predict`` runs, each behind one small interface.

- face model: ``model.features(crops {CropSpec: (F, S, S, 3) uint8}) -> (F, D)`` per batch of frames with a
  face, then ``model.finish(features (T, D), found (T,)) -> (T, 8)`` probabilities over ``labels.EXPR_CLASSES``
  once the whole video is seen (a temporal model needs all frames); with ``face_plans`` (the
  :class:`~affectfuse.faces.plan.FacePlan` of each network it runs: the crops predict cuts), ``class_names``
  (the ABAW classes it can output), ``name`` and ``describe()``. Default: the face-api
  FaceExpressionNet (7 classes mapped to ABAW names, Other = 0; frame by frame).
- voice model: :class:`affectfuse.inference.voice.VoiceModel` around a trained head.
- ERI model: see :mod:`affectfuse.inference.eri`.
"""

from __future__ import annotations

import numpy as np

from affectfuse.labels import EXPR_CLASSES


class FaceApiExpressions:
    """Default face model: face-api.js FaceExpressionNet on its declared crop (112 px, MTCNN-box framing)
    -> (F, 8) ABAW probabilities."""

    frame_wise = True  # ``finish`` needs no other frame: predict streams its rows

    def __init__(self, device: str = "cpu", random_weights: bool = False, batch_size: int | None = None,
                 precision: str = "fp32"):
        from affectfuse.features.faceapi import FACEAPI_CLASSES, FACEAPI_TO_ABAW
        from affectfuse.features.registry import create_extractor

        sized = {} if batch_size is None else {"batch_size": batch_size}  # None: the network's own (cache-sized)
        self.extractor = create_extractor("faceexpressionnet", device=device, random_weights=random_weights,
                                          precision=precision, **sized)
        self.name = "faceexpressionnet"
        self.face_plans = (self.extractor.input,)
        self.class_names = tuple(c for c in EXPR_CLASSES if c in set(FACEAPI_TO_ABAW[k] for k in FACEAPI_CLASSES))

    @property
    def dim(self) -> int:
        return len(EXPR_CLASSES)

    def features(self, crops: dict) -> np.ndarray:
        return self.extractor.predict_abaw(crops[self.extractor.input.crop])  # (F, 8)

    def finish(self, features: np.ndarray, found: np.ndarray) -> np.ndarray:
        return features

    def describe(self) -> dict:
        d = self.extractor.describe()
        from affectfuse.features.faceapi import FACEAPI_TO_ABAW

        return {"role": "face expressions", "name": self.name, "weights": d.get("weights"),
                "random_weights": d.get("random_weights", False), "precision": d.get("precision"),
                "bf16": d.get("bf16"), "face_plan": d.get("input"), "classes": list(self.class_names),
                "class_mapping": dict(FACEAPI_TO_ABAW),
                "note": "7 face-api classes mapped to the ABAW names; Other is never predicted (0)"}


def load_face_model(expr_checkpoint: str | None = None, device: str = "cpu", random_weights: bool = False,
                    precision: str = "fp32"):
    """The per-frame expression model: an EXPR checkpoint when given, else FaceExpressionNet.

    ``precision`` (``fp32`` / ``bf16`` / ``auto``) goes to the face networks (``features.face_common``)."""
    if expr_checkpoint:
        from affectfuse.inference.expr import ExprCheckpointExpressions

        return ExprCheckpointExpressions(expr_checkpoint, device=device, random_weights=random_weights,
                                         precision=precision)
    return FaceApiExpressions(device=device, random_weights=random_weights, precision=precision)


def default_voice_head_path():
    """The voice head shipped in the package (``assets/voice/voice_head.json``, trained on EmoDB)."""
    from importlib import resources
    from pathlib import Path

    return Path(str(resources.files("affectfuse").joinpath("assets/voice/voice_head.json")))


def load_voice_model(voice_head: str | None = "default", device: str = "cpu", random_weights: bool = False):
    """The voice model, or None for ``voice_head in (None, 'none')``."""
    if voice_head is None or str(voice_head).lower() == "none":
        return None
    from affectfuse.inference.voice import VoiceModel, load_voice_head

    if str(voice_head) == "default":
        voice_head = str(default_voice_head_path())
    head = load_voice_head(voice_head)
    from affectfuse.features.registry import create_extractor

    extractors = [create_extractor(name, device=device, random_weights=random_weights) for name in head.extractors]
    return VoiceModel(head, extractors)


def load_eri_model(eri_checkpoint: str | None = None, device: str = "cpu", random_weights: bool = False,
                   precision: str = "fp32"):
    if not eri_checkpoint:
        return None
    from affectfuse.inference.eri import EriOnTheFly

    return EriOnTheFly(eri_checkpoint, device=device, random_weights=random_weights, precision=precision)
