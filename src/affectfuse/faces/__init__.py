"""Faces: MTCNN detection (5 landmarks), similarity alignment to 112/160/224 templates, tracking of
the main person, and a streaming video -> aligned crops pipeline (see docs/faces.md)."""

from affectfuse.faces.align import ARCFACE_112, MTCNN_BOX_TEMPLATE, align_face, similarity_transform, template
from affectfuse.faces.images import iter_face_images, read_image
from affectfuse.faces.mtcnn import MTCNN, MTCNN_WEIGHTS, Detections, load_mtcnn
from affectfuse.faces.pipeline import FaceBatch, VideoDetections, default_detector, detect_video, iter_faces
from affectfuse.faces.track import IoUTracker, TrackStats, select_main_track, stitch_tracks

__all__ = [
    "ARCFACE_112", "MTCNN_BOX_TEMPLATE", "align_face", "similarity_transform", "template",
    "iter_face_images", "read_image",
    "MTCNN", "MTCNN_WEIGHTS", "Detections", "load_mtcnn",
    "FaceBatch", "VideoDetections", "default_detector", "detect_video", "iter_faces",
    "IoUTracker", "TrackStats", "select_main_track", "stitch_tracks",
]
