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
    """(5, 2) float reference landmarks for a ``size`` x ``size`` crop.

    Args:
        size: crop side in pixels.
        kind: ``"arcface"`` or ``"mtcnn_box"``.
        margin: context added on every side as a fraction of the template's side: the template shrinks
            by ``1 / (1 + 2 * margin)`` about the crop centre.
    """
    if kind == "arcface":
        points = ARCFACE_112 * (size / 112.0)
    elif kind == "mtcnn_box":
        points = MTCNN_BOX_TEMPLATE * size - 0.5  # fractions of the crop -> cv2 pixel-centre coordinates
    else:
        raise ValueError(f"unknown template kind {kind!r}; valid: 'arcface', 'mtcnn_box'")
    if margin:
        centre = (size - 1) / 2.0
        points = centre + (points - centre) / (1.0 + 2.0 * margin)
    return points


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift; no reflection) mapping ``src`` (N, 2) onto
    ``dst`` (N, 2): in 2-D Umeyama's (1991) solution in closed form, ``dst_c ~= c * src_c`` for one complex
    ``c = a + ib`` (points as complex numbers, centred), ``c = sum(conj(src_c) dst_c) / sum(|src_c|^2)``.

    Returns a (2, 3) float64 matrix ``M`` with ``dst ~= M[:, :2] @ src + M[:, 2]`` (identity part when all
    ``src`` points coincide).
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    var_s = float((s_c ** 2).sum())
    if var_s > 0:
        a = float((s_c * d_c).sum()) / var_s
        b = float((s_c[:, 0] * d_c[:, 1] - s_c[:, 1] * d_c[:, 0]).sum()) / var_s
    else:
        a, b = 1.0, 0.0
    out = np.empty((2, 3))
    out[:, :2] = ((a, -b), (b, a))
    out[:, 2] = mu_d - out[:, :2] @ mu_s
    return out


BILINEAR_MIN_SCALE = 0.8  # the final warp is bilinear; it shrinks by at most this much (no aliasing to speak of)


def _area_shrink(image: np.ndarray, m: np.ndarray, size: int, scale: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The region of ``image`` the crop covers, area-filtered to within ``1 / BILINEAR_MIN_SCALE`` of the crop's
    scale, and the (3, 3) map from its pixels to ``image``'s (``None``: the crop lies outside the image).

    First whole ``k x k`` blocks are averaged, ``k = floor(1 / scale)`` (OpenCV's area filter at an integer
    factor: 15x cheaper than at a fractional one, 0.02 ms for a 260-px face); a fractional area step follows
    only when that leaves the warp shrinking by more than ``BILINEAR_MIN_SCALE``. The region is trimmed to a
    multiple of ``k``: at the image's right or bottom edge under ``k`` source pixels (under one crop pixel) may
    turn black.
    """
    k = max(1, int(1.0 / scale))
    inv = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inv.T
    x0, y0 = np.floor(corners.min(0)).astype(int) - 2
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 2 + k
    h, w = image.shape[:2]
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = x0 + (min(x1, w) - x0) // k * k, y0 + (min(y1, h) - y0) // k * k
    if x1 - x0 < 2 * k or y1 - y0 < 2 * k:
        return None
    region = image[y0:y1, x0:x1]
    to_src = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], np.float64) @ _pixel_map(k, k)
    if k > 1:
        region = cv2.resize(region, ((x1 - x0) // k, (y1 - y0) // k), interpolation=cv2.INTER_AREA)
    rest = scale * k
    if rest < BILINEAR_MIN_SCALE:  # e.g. scale 0.6: no whole step, or 0.38: 2x2 blocks leave 0.76
        rh, rw = region.shape[:2]
        nw, nh = max(1, round(rw * rest)), max(1, round(rh * rest))
        # OpenCV's area filter runs 1.5x faster on float32 than on uint8 at a fractional scale; rounded back
        # it gives the same pixels (1 in 20,000 differs by 1 level, measured on the shared clips)
        region = np.rint(cv2.resize(region.astype(np.float32), (nw, nh), interpolation=cv2.INTER_AREA)).astype(np.uint8)
        fx, fy = nw / rw, nh / rh
        to_src = to_src @ _pixel_map(1 / fx, 1 / fy)
    return region, to_src


def _pixel_map(sx: float, sy: float) -> np.ndarray:
    """(3, 3) map from the pixels of an image area-resized to ``1 / sx`` x ``1 / sy`` of its size back to its
    own: small pixel q covers source pixels [q s, (q + 1) s), so its centre is source (q + 0.5) s - 0.5."""
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]], np.float64)


def align_face(image: np.ndarray, landmarks5: np.ndarray, size: int, kind: str, margin: float = 0.0) -> np.ndarray:
    """Aligned (size, size, 3) uint8 face crop (callers go through :func:`affectfuse.faces.plan.crop_faces`).

    Args:
        image: (H, W, 3) uint8 RGB frame (full resolution).
        landmarks5: (5, 2) MTCNN landmarks in continuous pixel coordinates of ``image``
            (pixel (i, j) covers [j, j+1) x [i, i+1), as :class:`affectfuse.faces.MTCNN` gives).
        size: crop side in pixels.
        kind, margin: the template (see :func:`template`).
    """
    lm = np.asarray(landmarks5, np.float64).reshape(5, 2)
    if not np.isfinite(lm).all():
        raise ValueError("landmarks contain NaN/inf")
    m = similarity_transform(lm - 0.5, template(size, kind, margin))  # to cv2 pixel-centre coordinates
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < BILINEAR_MIN_SCALE:  # shrinking: area-resize the face region first, then warp
        shrunk = _area_shrink(image, m, size, scale)
        if shrunk is None:
            return np.zeros((size, size, 3), np.uint8)
        image, to_src = shrunk
        m = m @ to_src
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0))
