"""Faces for ``predict``: :func:`affectfuse.faces.sparse.iter_faces_sparse` (one decoding pass, detection at
``detect_fps`` frames/s on downscaled copies, landmarks interpolated in between), re-exported here where
``predict`` has always found it."""

from affectfuse.faces.sparse import DETECT_FPS, DETECT_MAX_SIDE, iter_faces_sparse

__all__ = ["DETECT_FPS", "DETECT_MAX_SIDE", "iter_faces_sparse"]
