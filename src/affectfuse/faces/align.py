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
with ``cv2.INTER_AREA`` so the crop does not alias; the final warp is bilinear. Parts of the crop
outside the image are black.
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
    """Least-squares similarity (Umeyama 1991, no reflection) mapping ``src`` (N, 2) onto ``dst`` (N, 2).

    Returns a (2, 3) float64 matrix ``M`` with ``dst ~= M[:, :2] @ src + M[:, 2]``.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    cov = d_c.T @ s_c / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    var_s = (s_c ** 2).sum() / len(src)
    scale = float((sig * d).sum() / var_s) if var_s > 0 else 1.0
    out = np.zeros((2, 3))
    out[:, :2] = scale * rot
    out[:, 2] = mu_d - scale * rot @ mu_s
    return out


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
    if scale < 0.8:  # shrinking: area-resize the face region first, then warp
        inv = cv2.invertAffineTransform(m)
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inv.T
        x0, y0 = np.floor(corners.min(0)).astype(int) - 2
        x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
        h, w = image.shape[:2]
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return np.zeros((size, size, 3), np.uint8)
        region = image[y0:y1, x0:x1]
        nw, nh = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
        # OpenCV's area filter runs 1.5x faster on float32 than on uint8 at a fractional scale; rounded back
        # it gives the same pixels (1 in 20,000 differs by 1 level, measured on the shared clips)
        small = np.rint(cv2.resize(region.astype(np.float32), (nw, nh), interpolation=cv2.INTER_AREA)).astype(np.uint8)
        fx, fy = nw / (x1 - x0), nh / (y1 - y0)
        # small pixel q maps to source p = (q + 0.5) / f - 0.5 + offset
        to_src = np.array([[1 / fx, 0, 0.5 / fx - 0.5 + x0], [0, 1 / fy, 0.5 / fy - 0.5 + y0], [0, 0, 1]])
        m = m @ to_src
        image = small
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0))
