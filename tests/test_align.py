"""Alignment: the similarity fit is exact on exact data, crops put landmarks on the template, big faces
are area-shrunk, and the MTCNN-box template matches real faces."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

import affectfuse.faces.align as align_module
from affectfuse.faces import ARCFACE_112, MTCNN_BOX_TEMPLATE, align_face, similarity_transform, template


@pytest.fixture(autouse=True)
def _one_torch_thread(_torch_threads):
    """MTCNN runs many small ops: on this shared, loaded machine one thread is ~10x faster than two
    (no waiting at OpenMP barriers for a second time slice)."""
    torch.set_num_threads(1)
    yield


def _similarity(angle_deg, scale, shift):
    a = np.deg2rad(angle_deg)
    m = np.zeros((2, 3))
    m[:, :2] = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    m[:, 2] = shift
    return m


@pytest.mark.parametrize("angle,scale", [(0, 1.0), (23, 0.4), (-70, 3.5), (180, 1.2)])
def test_similarity_transform_recovers_known_transform(angle, scale):
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 200, (5, 2))
    truth = _similarity(angle, scale, [13.0, -7.5])
    dst = src @ truth[:, :2].T + truth[:, 2]
    np.testing.assert_allclose(similarity_transform(src, dst), truth, atol=1e-8)


def test_similarity_transform_never_reflects():
    src = np.random.default_rng(2).uniform(0, 10, (5, 2))
    mirrored = src * [-1, 1]
    m = similarity_transform(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


def test_templates():
    np.testing.assert_allclose(template(112, "arcface"), ARCFACE_112)
    np.testing.assert_allclose(template(224, "arcface"), ARCFACE_112 * 2)
    np.testing.assert_allclose(template(160, "mtcnn_box"), MTCNN_BOX_TEMPLATE * 160 - 0.5)
    for size, kind in ((112, "arcface"), (112, "mtcnn_box"), (160, "mtcnn_box"), (224, "mtcnn_box")):
        t = template(size, kind)
        assert t[0, 0] < t[1, 0] and t[3, 0] < t[4, 0]  # left eye/mouth on the image left
        assert t[0, 1] < t[2, 1] < t[3, 1] and (t > 0).all() and (t < size).all()
    # a margin of 0.25 shrinks the template about the crop centre by 1 / 1.5
    centre = (160 - 1) / 2
    np.testing.assert_allclose(template(160, "mtcnn_box", 0.25) - centre, (template(160, "mtcnn_box") - centre) / 1.5)
    with pytest.raises(ValueError, match="unknown template"):
        template(112, "dlib")
    with pytest.raises(TypeError):
        template(112)  # no template chosen by size: the network's plan names it


def _dot_image(points, shape, radius):
    """White image with an anti-aliased black disc at each (continuous) point."""
    img = np.full((*shape, 3), 255, np.uint8)
    for x, y in points:  # cv2 draws in pixel-centre coordinates, with 3 fractional bits
        cv2.circle(img, (int(round((x - 0.5) * 8)), int(round((y - 0.5) * 8))), int(radius * 8), (0, 0, 0), -1,
                   lineType=cv2.LINE_AA, shift=3)
    return img


def _dot_centres(crop):
    """Darkness-weighted centre of each dot, cv2 pixel-centre coordinates."""
    dark = 255.0 - crop.mean(axis=2)
    n, labels = cv2.connectedComponents((dark > 20).astype(np.uint8))
    ys, xs = np.mgrid[: crop.shape[0], : crop.shape[1]]
    return np.array([[np.average(xs[labels == k], weights=dark[labels == k]),
                      np.average(ys[labels == k], weights=dark[labels == k])] for k in range(1, n)])


@pytest.mark.parametrize("size,angle,scale", [(112, 15, 1.3), (160, -30, 0.9), (224, 5, 0.6), (112, 40, 4.0)])
def test_aligned_crop_puts_landmarks_on_template(size, angle, scale):
    """Landmarks drawn as dots on a rotated/scaled face land on the template (within 1 px);
    scale 4 exercises the area-shrinking path (face 4x larger than the crop)."""
    kind = "arcface" if size == 112 else "mtcnn_box"
    ref = template(size, kind) + 0.5  # continuous coordinates of the template
    inv = _similarity(angle, scale, [0, 0])
    pts = ref @ inv[:, :2].T
    pts += np.array([250, 200]) - pts.mean(0)
    shape = (400, 500) if scale < 2 else (1200, 1200)
    if scale >= 2:
        pts += 350
    crop = align_face(_dot_image(pts, shape, radius=3 * scale), pts, size, kind)  # ~3 px dots in the crop
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    found = _dot_centres(crop)
    assert len(found) == 5
    dist = np.linalg.norm(found[:, None] - template(size, kind)[None], axis=2).min(axis=1)
    assert dist.max() < 1.0


def _stripes_crop(scale: float) -> np.ndarray:
    """A 112-px crop of 1-px black/white stripes, the face shrunk by ``scale`` (crop px per image px)."""
    img = np.zeros((900, 900, 3), np.uint8)
    img[:, ::2] = 255
    pts = (template(112, "mtcnn_box") + 0.5) / scale + 50
    return align_face(img, pts, 112, "mtcnn_box")


@pytest.mark.parametrize("scale", [0.62, 0.45, 0.38, 0.3, 0.19])
def test_shrinking_does_not_alias(scale, monkeypatch):
    """Stripes at the image's Nyquist rate average to grey whatever the shrink (whole blocks alone: 0.45,
    0.3, 0.19; a fractional area step too: 0.62, 0.38), up to the box filter's ripple (std 0-25 levels here,
    12-22 with a single fractional area step); a bare bilinear warp turns them into bands (std ~72)."""
    crop = _stripes_crop(scale)[4:-4, 4:-4].astype(float)
    assert abs(crop.mean() - 127.5) < 6 and crop.std() < 30, (crop.mean(), crop.std())
    monkeypatch.setattr(align_module, "BILINEAR_MIN_SCALE", 0.0)  # no area step at all
    assert _stripes_crop(scale)[4:-4, 4:-4].astype(float).std() > 60


@pytest.mark.parametrize("scale", [0.45, 0.3, 0.19])
@pytest.mark.parametrize("width", [401, 402, 403])
def test_a_shrunk_face_over_the_image_edge_is_black_from_the_edge_on(scale, width):
    """The whole-block shrink trims its region to a multiple of k pixels: at the image's edge that may drop
    under k pixels, which must not move where the picture ends in the crop by a whole crop pixel."""
    img = np.full((500, width, 3), 200, np.uint8)
    pts = (template(112, "mtcnn_box") + 0.5) / scale
    pts += np.array([width + 10, 250]) - pts.mean(0)           # the face's centre 10 px right of the edge
    row = align_face(img, pts, 112, "mtcnn_box")[56, :, 0].astype(int)
    edge = 55.5 + scale * (width - (width + 10))               # the image's edge in crop pixels
    first_black = int(np.argmax(row < 100))
    assert abs(first_black - edge) <= 1.0 and (row[:first_black - 1] == 200).all() and (row[first_black + 1:] == 0).all()


def _matrix_reference_crop(image, lm, size, kind):
    """The crop as plain matrix algebra: numpy's least-squares similarity, cv2's inverse for the region, 3x3
    maps chained (what align_face computes in scalars)."""
    src, dst = lm.astype(np.float64) - 0.5, template(size, kind).astype(np.float64)
    s_c, d_c = src - src.mean(0), dst - dst.mean(0)
    a, b = (s_c * d_c).sum() / (s_c ** 2).sum(), (s_c[:, 0] * d_c[:, 1] - s_c[:, 1] * d_c[:, 0]).sum() / (s_c ** 2).sum()
    m = np.array([[a, -b, 0], [b, a, 0]])
    m[:, 2] = dst.mean(0) - m[:, :2] @ src.mean(0)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < align_module.BILINEAR_MIN_SCALE:
        k = max(1, int(1 / scale))
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], float) @ cv2.invertAffineTransform(m).T
        x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - 2, 0)
        x1, y1 = np.ceil(corners.max(0)).astype(int) + 2 + k
        x1, y1 = x0 + (min(x1, image.shape[1]) - x0) // k * k, y0 + (min(y1, image.shape[0]) - y0) // k * k
        region = cv2.resize(image[y0:y1, x0:x1], ((x1 - x0) // k, (y1 - y0) // k), interpolation=cv2.INTER_AREA)
        pixel = lambda sx, sy: np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])  # noqa: E731
        to_src = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], float) @ pixel(k, k)
        if scale * k < align_module.BILINEAR_MIN_SCALE:
            rh, rw = region.shape[:2]
            nw, nh = round(rw * scale * k), round(rh * scale * k)
            region = np.rint(cv2.resize(region.astype(np.float32), (nw, nh), interpolation=cv2.INTER_AREA)).astype(np.uint8)
            to_src = to_src @ pixel(rw / nw, rh / nh)
        image, m = region, m @ to_src
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


@pytest.mark.parametrize("scale", [1.3, 0.62, 0.45, 0.38, 0.19])
@pytest.mark.parametrize("size,kind", [(112, "mtcnn_box"), (160, "arcface")])
def test_align_face_is_the_matrix_formulation(scale, size, kind):
    """align_face's scalar arithmetic (numpy on 5 points cost a third of a crop) cuts the crop the matrix algebra
    cuts: every pixel the same, faces near the edge and tilted ones included."""
    rng = np.random.default_rng(7)
    image = cv2.GaussianBlur(rng.integers(0, 256, (700, 900, 3), np.uint8), (5, 5), 1.5)
    for _ in range(12):
        pts = (template(size, kind) + 0.5) @ _similarity(rng.uniform(-40, 40), 1 / scale, [0, 0])[:, :2].T
        pts += rng.uniform([0, 0], [900, 700]) - pts.mean(0) + rng.normal(0, 2, (5, 2))
        np.testing.assert_array_equal(align_face(image, pts, size, kind), _matrix_reference_crop(image, pts, size, kind))


def test_outside_image_is_black_and_bad_landmarks_rejected():
    img = np.full((100, 100, 3), 200, np.uint8)
    pts = template(112, "arcface") + 0.5 - 80  # face mostly above-left of the picture
    crop = align_face(img, pts, 112, "arcface")
    assert crop[:20, :20].max() == 0 and crop[-10:, -10:].min() == 200
    with pytest.raises(ValueError, match="NaN"):
        align_face(img, np.full((5, 2), np.nan), 112, "arcface")


@pytest.mark.slow
def test_box_template_matches_real_faces(shared_data):
    """Re-measure the median landmark position inside MTCNN boxes on 20 real photographs."""
    from affectfuse.faces import load_mtcnn, read_image

    files = sorted((shared_data / "faces").rglob("*.jpg"))[::60][:20]
    model = load_mtcnn(min_face_size=60, max_side=256)
    norms = []
    for f in files:
        det = model.detect(read_image(f))[0]
        if len(det):
            b = det.boxes[0]
            norms.append((det.landmarks[0] - b[:2]) / (b[2:] - b[:2]))
    assert len(norms) >= 15
    med = np.median(norms, axis=0)
    mirror = med[[1, 0, 2, 4, 3]] * [-1, 1] + [1, 0]
    np.testing.assert_allclose((med + mirror) / 2, MTCNN_BOX_TEMPLATE, atol=0.03)
