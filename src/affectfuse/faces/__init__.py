"""Faces: MTCNN detection (5 landmarks), alignment to 5-point templates by each network's face-preprocessing
plan (:mod:`affectfuse.faces.plan`), tracking of the main person, and a streaming video -> aligned crops
pipeline (see docs/faces.md).

Names are imported on first use (PEP 562), so ``affectfuse.faces.plan`` -- which every extractor's
declaration imports -- does not pull in torch, OpenCV and the detector.
"""

import importlib

_HOME = {
    "ARCFACE_112": "align", "MTCNN_BOX_TEMPLATE": "align", "align_face": "align", "similarity_transform": "align",
    "template": "align",
    "CropSpec": "plan", "FacePlan": "plan", "crop_faces": "plan",
    "iter_face_images": "images", "read_image": "images",
    "MTCNN": "mtcnn", "MTCNN_WEIGHTS": "mtcnn", "Detections": "mtcnn", "load_mtcnn": "mtcnn",
    "FaceBatch": "pipeline", "VideoDetections": "pipeline", "default_detector": "pipeline",
    "detect_video": "pipeline", "iter_faces": "pipeline",
    "IoUTracker": "track", "TrackStats": "track", "select_main_track": "track", "stitch_tracks": "track",
}

__all__ = list(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'affectfuse.faces' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"affectfuse.faces.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
