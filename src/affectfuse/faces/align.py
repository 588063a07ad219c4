"""Face alignment: a similarity transform (rotation, uniform scale, shift) from the 5 MTCNN landmarks
to a canonical template, then one warp to a square crop.

Templates (pixel coordinates in the output crop, cv2 convention: pixel centres at integers; order
left eye, right eye, nose, mouth left, mouth right), scaled to any crop side:

- ``"arcface"`` -- the ArcFace template (InsightFace, 112 px), for ArcFace-style backbones.
- ``"mtcnn_box"`` -- the "MTCNN box" framing: where the 5 landmarks fall, on average, inside MTCNN's
  own box. InceptionResnetV1 (facenet-pytorch) was trained on crops of MTCNN boxes, and the expression
  networks on similarly loose detector boxes; we measured the median normalised landmark position
  inside our detector's boxes on 300 photographs of ``../shared/data/faces`` (``tests/test_align.py``
  re-measures it).

Which template and side a network gets is declared by the network (its
:class:`affectfuse.faces.plan.FacePlan`), never chosen here from the size.

Downscaling (a face larger than the crop, e.g. in 4K video) first shrinks only the face region
with ``cv2.INTER_AREA`` so the crop does not alias -- in whole ``k x k`` blocks, OpenCV's fast path, then a
fractional step only where the bilinear warp would still shrink by more than ``BILINEAR_MIN_SCALE``; the
final warp is bilinear. Parts of the crop outside the image are black.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import cv2
import numpy as np

# InsightFace's ArcFace 112x112 reference points (x, y).
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)

# Median landmark position inside MTCNN's box, as fractions of box width (x) and height (y), made
# left-right symmetric (mean of the medians and their mirror image); measured on 294 detected faces of
# ../shared/data/faces (tests/test_align.py::test_box_template_matches_real_faces re-measures it).
MTCNN_BOX_TEMPLATE = np.array([[0.2699, 0.3776], [0.7301, 0.3776], [0.5000, 0.5763],
                               [0.3102, 0.7703], [0.6898, 0.7703]], np.float32)


def template(size: int, kind: str, margin: float = 0.0) -> np.ndarray:
    """(5, 2) float32 reference landmarks for a ``size`` x ``size`` crop.

    Args:
        size: crop side in pixels.
        kind: ``"arcface"`` or ``"mtcnn_box"``.
        margin: context added on every side as a fraction of the template's side: the template shrinks
            by ``1 / (1 + 2 * margin)`` about the crop centre.
    """
    return np.array(_template_points(size, kind, float(margin)), np.float32)


@functools.lru_cache(maxsize=64)
def _template_points(size: int, kind: str, margin: float) -> tuple[tuple[float, float], ...]:
    """:func:`template` as a tuple of ``(x, y)`` floats (float32 arithmetic, as the templates), computed once per
    crop geometry."""
    if kind == "arcface":
        points = ARCFACE_112 * (size / 112.0)
    elif kind == "mtcnn_box":
        points = MTCNN_BOX_TEMPLATE * size - 0.5  # fractions of the crop -> cv2 pixel-centre coordinates
    else:
        raise ValueError(f"unknown template kind {kind!r}; valid: 'arcface', 'mtcnn_box'")
    if margin:
        centre = (size - 1) / 2.0
        points = centre + (points - centre) / (1.0 + 2.0 * margin)
    return tuple((float(x), float(y)) for x, y in points)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift; no reflection) mapping ``src`` (N, 2) onto
    ``dst`` (N, 2): in 2-D Umeyama's (1991) solution in closed form, ``dst_c ~= c * src_c`` for one complex
    ``c = a + ib`` (points as complex numbers, centred), ``c = sum(conj(src_c) dst_c) / sum(|src_c|^2)``.

    Returns a (2, 3) float64 matrix ``M`` with ``dst ~= M[:, :2] @ src + M[:, 2]`` (identity part when all
    ``src`` points coincide).
    """
    a, b, tx, ty = _similarity(np.asarray(src, np.float64).reshape(-1, 2).tolist(),
                               np.asarray(dst, np.float64).reshape(-1, 2).tolist())
    return np.array([[a, -b, tx], [b, a, ty]])


def _similarity(src: Sequence, dst: Sequence) -> tuple[float, float, float, float]:
    """:func:`similarity_transform` on a handful of ``(x, y)`` float pairs, in plain floats (a crop is cut per
    face and frame: numpy's per-call overhead on 5 points cost ~30 us of a ~220-us crop) -> ``a, b, tx, ty``
    of ``M = [[a, -b, tx], [b, a, ty]]``."""
    n = len(src)
    sx, sy = sum(p[0] for p in src) / n, sum(p[1] for p in src) / n
    dx, dy = sum(p[0] for p in dst) / n, sum(p[1] for p in dst) / n
    var = dot = cross = 0.0
    for (x, y), (u, v) in zip(src, dst):
        x, y, u, v = x - sx, y - sy, u - dx, v - dy
        var += x * x + y * y
        dot += x * u + y * v
        cross += x * v - y * u
    a, b = (dot / var, cross / var) if var > 0 else (1.0, 0.0)
    return a, b, dx - (a * sx - b * sy), dy - (b * sx + a * sy)


BILINEAR_MIN_SCALE = 0.8  # the final warp is bilinear; it shrinks by at most this much (no aliasing to speak of)


def _area_shrink(image: np.ndarray, m: tuple, size: int, scale: float) -> tuple[np.ndarray, tuple] | None:
    """The region of ``image`` the crop covers, area-filtered to within ``1 / BILINEAR_MIN_SCALE`` of the crop's
    scale, and the map from its pixels to ``image``'s as ``(sx, sy, ox, oy)``: pixel ``(qx, qy)`` of the region is
    ``(sx qx + ox, sy qy + oy)`` of the image (``None``: the crop lies outside the image). ``m``: the similarity
    ``a, b, tx, ty`` (:func:`_similarity`) from image to crop pixels.

    First whole ``k x k`` blocks are averaged, ``k = floor(1 / scale)`` (OpenCV's area filter at an integer
    factor: 15x cheaper than at a fractional one, 0.02 ms for a 260-px face); a fractional area step follows
    only when that leaves the warp shrinking by more than ``BILINEAR_MIN_SCALE``. The region is trimmed to a
    multiple of ``k``: at the image's right or bottom edge under ``k`` source pixels (under one crop pixel) may
    turn black.
    """
    k = max(1, int(1.0 / scale))
    a, b, tx, ty = m
    det = a * a + b * b
    xs, ys = [], []
    for cx, cy in ((0, 0), (size, 0), (0, size), (size, size)):  # the crop's corners in the image
        u, v = cx - tx, cy - ty
        xs.append((a * u + b * v) / det)
        ys.append((a * v - b * u) / det)
    h, w = image.shape[:2]
    x0, y0 = max(math.floor(min(xs)) - 2, 0), max(math.floor(min(ys)) - 2, 0)
    x1, y1 = math.ceil(max(xs)) + 2 + k, math.ceil(max(ys)) + 2 + k
    x1, y1 = x0 + (min(x1, w) - x0) // k * k, y0 + (min(y1, h) - y0) // k * k
    if x1 - x0 < 2 * k or y1 - y0 < 2 * k:
        return None
    region = image[y0:y1, x0:x1]
    # small pixel q of a k-fold area shrink covers source pixels [q k, (q + 1) k): its centre is (q + 0.5) k - 0.5
    sx = sy = float(k)
    ox, oy = x0 + 0.5 * k - 0.5, y0 + 0.5 * k - 0.5
    if k > 1:
        region = cv2.resize(region, ((x1 - x0) // k, (y1 - y0) // k), interpolation=cv2.INTER_AREA)
    rest = scale * k
    if rest < BILINEAR_MIN_SCALE:  # e.g. scale 0.6: no whole step, or 0.38: 2x2 blocks leave 0.76
        rh, rw = region.shape[:2]
        nw, nh = max(1, round(rw * rest)), max(1, round(rh * rest))
        # OpenCV's area filter runs 1.5x faster on float32 than on uint8 at a fractional scale; rounded back
        # it gives the same pixels (1 in 20,000 differs by 1 level, measured on the shared clips)
        region = np.rint(cv2.resize(region.astype(np.float32), (nw, nh), interpolation=cv2.INTER_AREA)).astype(np.uint8)
        fx, fy = rw / nw, rh / nh  # source pixels per new pixel
        ox, oy = ox + sx * (0.5 * fx - 0.5), oy + sy * (0.5 * fy - 0.5)
        sx, sy = sx * fx, sy * fy
    return region, (sx, sy, ox, oy)


def align_face(image: np.ndarray, landmarks5: np.ndarray, size: int, kind: str, margin: float = 0.0) -> np.ndarray:
    """Aligned (size, size, 3) uint8 face crop (callers go through :func:`affectfuse.faces.plan.crop_faces`).

    Args:
        image: (H, W, 3) uint8 RGB frame (full resolution).
        landmarks5: (5, 2) MTCNN landmarks in continuous pixel coordinates of ``image``
            (pixel (i, j) covers [j, j+1) x [i, i+1), as :class:`affectfuse.faces.MTCNN` gives).
        size: crop side in pixels.
        kind, margin: the template (see :func:`template`).
    """
    lm = np.asarray(landmarks5, np.float64).reshape(5, 2).tolist()
    if not all(math.isfinite(v) for point in lm for v in point):
        raise ValueError("landmarks contain NaN/inf")
    # to cv2 pixel-centre coordinates
    a, b, tx, ty = _similarity([(x - 0.5, y - 0.5) for x, y in lm], _template_points(size, kind, float(margin)))
    scale = math.sqrt(a * a + b * b)
    sx = sy = 1.0
    ox = oy = 0.0
    if scale < BILINEAR_MIN_SCALE:  # shrinking: area-resize the face region first, then warp
        shrunk = _area_shrink(image, (a, b, tx, ty), size, scale)
        if shrunk is None:
            return np.zeros((size, size, 3), np.uint8)
        image, (sx, sy, ox, oy) = shrunk
    m = np.array([[a * sx, -b * sy, a * ox - b * oy + tx], [b * sx, a * sy, b * ox + a * oy + ty]])
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0))
