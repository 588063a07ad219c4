"""MTCNN face detector: P-Net over an image pyramid, R-Net, O-Net, 5 landmarks; batched over frames.

Detections equal those of facenet-pytorch 2.6.0's ``MTCNN`` (where the weights come from) run on each
image alone: the same pyramid levels (area-resampled from the full image), the same whole-pixel crops
(area-resampled to 24 / 48 px), the same box arithmetic and NMS (``scripts/compare_mtcnn_facenet.py``
measures it against the real package).

Coordinates: pixel ``(row i, col j)`` covers ``[j, j+1) x [i, i+1)``.

- Boxes ``x1, y1, x2, y2`` follow MTCNN's (and facenet-pytorch's) whole-pixel convention: the box spans
  ``[x1 - 1, x2] x [y1 - 1, y2]``, i.e. its width is ``x2 - x1 + 1``. They may reach outside the image
  when a face is cut by the border.
- Landmarks ``(x, y)`` are plain pixel coordinates, in the order left eye, right eye, nose, left mouth
  corner, right mouth corner ("left" = image left).

Batching: every frame of a batch goes through P-Net together at each pyramid scale, and all
candidates of all frames go through R-Net and O-Net together; non-maximum suppression runs per frame,
so a frame's detections do not depend on its batch mates.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import os
import sys
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from affectfuse.faces.nets import ONet, PNet, RNet
from affectfuse.faces.resample import _resample_frames, _resample_windows, _summed_area
from affectfuse.weights import WeightsSpec, describe_loaded, load_state_dict, recording

MTCNN_WEIGHTS = WeightsSpec(
    name="mtcnn.facenet-pytorch",
    filename="mtcnn_facenet_pytorch_2.6.0.pt",
    sha256="834b35cf131e98d24ccbeb0666d30187917b0795ac8b858acef7bc8522787d41",
    url=None,
    licence="MIT (facenet-pytorch, Copyright (c) 2019 Timothy Esler; see faces/weights/LICENSE.txt)",
    source="MTCNN P/R/O-Net weights from the facenet-pytorch 2.6.0 wheel (facenet_pytorch/data/{pnet,rnet,onet}.pt), "
           "converted to affectfuse module names by scripts/convert_mtcnn_weights.py",
    env_var="AFFECTFUSE_MTCNN_WEIGHTS",
    package_file="faces/weights/mtcnn_facenet_pytorch_2.6.0.pt",
    mean=(127.5 / 255,) * 3,
    std=(128.0 / 255,) * 3,
    extra={"thresholds": (0.6, 0.7, 0.7), "min_face_size": 20, "factor": 0.709},
)


@dataclass
class Detections:
    """Faces found in one image, sorted by score (highest first).

    Attributes:
        boxes: (F, 4) float32 ``x1, y1, x2, y2`` in pixels of the input image, MTCNN's whole-pixel
            convention (the box spans ``[x1 - 1, x2] x [y1 - 1, y2]``; see the module docstring).
        scores: (F,) float32 O-Net face probability in [0, 1].
        landmarks: (F, 5, 2) float32 ``(x, y)`` pixels: left eye, right eye, nose, mouth left, mouth right.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def unscaled(self, scale: float) -> "Detections":
        """Detections made on a copy of the image resized by ``scale`` -> the same in the original's pixels."""
        if scale == 1.0:
            return self
        boxes = self.boxes.copy()
        boxes[:, :2] = (boxes[:, :2] - 1) / scale + 1  # the left/top edge x1 - 1 scales, not x1
        boxes[:, 2:] /= scale
        return Detections(boxes, self.scores, self.landmarks / scale)

    @staticmethod
    def empty() -> "Detections":
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow (K, 4) boxes to squares of side ``max(w, h)`` around their centres (MTCNN's ``rerec``).

    Written with the reference's float steps (left edge first, right edge = left + side) so the crops
    cut from these boxes fall on the same whole pixels.
    """
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    x1 = boxes[:, 0] + w * 0.5 - side * 0.5
    y1 = boxes[:, 1] + h * 0.5 - side * 0.5
    return torch.stack([x1, y1, x1 + side, y1 + side], dim=1)


def _regress(boxes: torch.Tensor, offsets: torch.Tensor, extra: float) -> torch.Tensor:
    """Move (K, 4) box corners by (K, 4) offsets given as fractions of the box size ``x2 - x1 + extra``.

    MTCNN counts a box's size in whole pixels (``extra=1``) after R- and O-Net, but not after P-Net.
    """
    wh = (boxes[:, 2:] - boxes[:, :2] + extra).repeat(1, 2)
    return boxes + offsets * wh


def _nms_per_frame(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, thresh: float) -> torch.Tensor:
    """IoU NMS within each frame -> kept indices (K',), frame by frame, best first within a frame.

    facenet-pytorch runs ``batched_nms`` over a whole batch, whose per-image coordinate offsets change
    float rounding; P-Net's windows often overlap at exactly IoU 0.5, so an image's result would then
    depend on its batch mates. One call per frame (frame id 0, so no offset) gives what the reference
    gives on that image alone, and makes batched detection equal frame-by-frame detection.
    """
    keep = []
    for i in torch.unique(idxs).tolist():
        sel = torch.nonzero(idxs == i).flatten()
        keep.append(sel[_nms_one_class(boxes[sel], scores[sel], thresh)])
    return torch.cat(keep) if keep else idxs.new_zeros(0)


@functools.lru_cache(maxsize=None)
def _nms_kernel():
    """torchvision's compiled ``nms`` kernel, loaded without importing the torchvision package when it can be.

    ``import torchvision`` imports its model zoo and, through ``ops.roi_align``, ``torch._dynamo``: 1.4-4 CPU-s
    of ``affectfuse predict``'s start-up (docs/benchmarks.md) for this one function. The kernel is registered
    by the package's ``_C_stable`` library; if that cannot be found or loaded, the package is imported.
    """
    if "torchvision" not in sys.modules:
        spec = importlib.util.find_spec("torchvision")
        for folder in (spec.submodule_search_locations or []) if spec else []:
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                lib = os.path.join(folder, "_C_stable" + suffix)
                if os.path.isfile(lib):
                    try:
                        torch.ops.load_library(lib)
                        return torch.ops.torchvision.nms
                    except (OSError, RuntimeError, AttributeError):
                        break
    from torchvision.ops import nms

    return nms


def _nms_one_class(boxes: torch.Tensor, scores: torch.Tensor, thresh: float) -> torch.Tensor:
    """``torchvision.ops.batched_nms`` with one class -> kept indices (K,), best first; the same result,
    tie order included (its large-input path re-sorts the kept indices by score)."""
    keep = _nms_kernel()(boxes, scores, thresh)
    if boxes.numel() > 4000:
        keep = torch.sort(keep).values
        keep = keep[scores[keep].sort(descending=True)[1]]
    return keep


def _min_nms(boxes: np.ndarray, scores: np.ndarray, thresh: float) -> np.ndarray:
    """MTCNN's last suppression on one frame: drop a box whose intersection with a better box exceeds
    ``thresh`` x the smaller area -> kept indices, best first.

    Unlike IoU NMS this removes a small box inside a larger one. Areas count whole pixels
    (``x2 - x1 + 1``) and boxes are taken from the end of numpy's ascending ``argsort``, as in the
    reference, so equal scores resolve the same way. torchvision has IoU only, so this is written here
    (a frame has a handful of boxes by now).

    Args:
        boxes: (F, 4) float32 ``x1, y1, x2, y2``; scores: (F,) float32.
    """
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)
    keep = []
    while order.size:
        best, rest = order[-1], order[:-1]
        keep.append(best)
        w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        order = rest[w * h / np.minimum(area[best], area[rest]) <= thresh]
    return np.array(keep, dtype=np.int64)


def _crop_windows(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The whole pixels MTCNN crops for each box: 0-based columns ``trunc(x1) - 1 .. trunc(x2) - 1``
    (rows alike), clipped to the image; the part outside is dropped, not padded.

    Returns:
        (K, 4) int64 half-open windows ``x0, y0, x1, y1``; empty when the box lies outside the image.
    """
    b = boxes.trunc().long()
    x0, y0 = b[:, 0].clamp(min=1) - 1, b[:, 1].clamp(min=1) - 1
    return torch.stack([x0, y0, b[:, 2].clamp(max=width), b[:, 3].clamp(max=height)], dim=1)


def _in_chunks(net: nn.Module, crops: torch.Tensor, chunk: int = 512) -> tuple[torch.Tensor, ...]:
    """``net`` over (N, 3, S, S) crops, 512 at a time (R-Net activations of thousands of crops are ~GBs)."""
    outs = [net(crops[k:k + chunk]) for k in range(0, len(crops), chunk)]
    return tuple(torch.cat(parts) for parts in zip(*outs))


class MTCNN(nn.Module):
    """Multi-task cascaded face detector with 5 landmarks (Zhang et al. 2016), equal to facenet-pytorch's.

    Args:
        min_face_size: smallest face side to find, in pixels of the (possibly downscaled) image.
        thresholds: face-probability thresholds of P-, R- and O-Net.
        factor: scale step of the image pyramid.
        max_side: when an image's longer side exceeds this, detection runs on a copy downscaled to
            it (``cv2.INTER_AREA``) and results are mapped back to the original pixels; ``None`` = never.
    """

    def __init__(self, min_face_size: float = 20.0, thresholds=(0.6, 0.7, 0.7), factor: float = 0.709,
                 max_side: int | None = None):
        super().__init__()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        self.min_face_size = float(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        self.max_side = max_side
        self.weights_info: dict = {"random_weights": True}
        self.eval()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def scales(self, height: int, width: int, smallest: float | None = None) -> list[float]:
        """Pyramid scales: the first maps ``min_face_size`` to P-Net's 12 px window; the last keeps the
        shorter side >= 12 px (products taken in the reference's order, so the same levels come out).

        ``smallest``: faces smaller than this many pixels are not looked for: the levels whose 12 px window
        covers less are dropped (the others are the same levels as without it; at least the last is kept).
        """
        scale = 12.0 / self.min_face_size
        side = min(height, width) * scale
        out = []
        while side >= 12:
            out.append(scale)
            scale *= self.factor
            side *= self.factor
        if smallest is not None and smallest > self.min_face_size:
            out = [s for s in out if 12.0 / s >= smallest] or out[-1:]
        return out

    @torch.inference_mode()
    def detect(self, images, max_side: int | None = None, smallest: float | None = None) -> list[Detections]:
        """Detect faces in a batch.

        Args:
            images: (B, H, W, 3) or (H, W, 3) uint8 RGB array, or a list of (H, W, 3) arrays
                (sizes may differ; equal sizes are batched together).
            max_side: overrides the module's ``max_side`` for this call.
            smallest: look only for faces at least this many pixels wide (of the image as detected, after
                ``max_side``): fewer pyramid levels (:meth:`scales`); ``None``: down to ``min_face_size``.

        Returns:
            One :class:`Detections` per image, in input order.
        """
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = images[None]
        if isinstance(images, np.ndarray):
            return self._detect_same_size(images, max_side, smallest)
        out: list[Detections | None] = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
        for k, img in enumerate(images):
            groups.setdefault(np.asarray(img).shape, []).append(k)
        for ks in groups.values():
            for k, det in zip(ks, self._detect_same_size(np.stack([np.asarray(images[k]) for k in ks]), max_side,
                                                        smallest)):
                out[k] = det
        return out  # type: ignore[return-value]

    def _detect_same_size(self, images: np.ndarray, max_side: int | None, smallest=None) -> list[Detections]:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected (B, H, W, 3) RGB images, got shape {images.shape}")
        if images.dtype != np.uint8:
            raise ValueError(f"expected uint8 images, got {images.dtype}")
        n, height, width = images.shape[:3]
        if n == 0:
            return []
        max_side = self.max_side if max_side is None else max_side
        scale = 1.0
        if max_side and max(height, width) > max_side:
            scale = max_side / max(height, width)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            images = np.stack([cv2.resize(img, size, interpolation=cv2.INTER_AREA) for img in images])
        table = _summed_area(np.ascontiguousarray(images), self.device)  # (B, H + 1, W + 1, 3): all resampling reads it
        boxes, idx = self._propose(table, smallest)  # (K, 4), (K,)
        boxes, idx = self._refine(table, boxes, idx)
        boxes, scores, marks, idx = (t.cpu().numpy() for t in self._output(table, boxes, idx))
        out = []
        for k in range(n):
            sel = np.flatnonzero(idx == k)
            sel = sel[_min_nms(boxes[sel], scores[sel], 0.7)]
            out.append(Detections(boxes[sel], scores[sel], marks[sel]).unscaled(scale))
        return out

    def _propose(self, table: torch.Tensor, smallest=None) -> tuple[torch.Tensor, torch.Tensor]:
        """P-Net over the pyramid of all frames at once -> squared candidate boxes (K, 4), frame ids (K,)."""
        height, width = table.shape[1] - 1, table.shape[2] - 1
        found = []
        for s in self.scales(height, width, smallest):
            # each level is area-resampled from the full image, to the reference's size int(side * s + 1)
            level = _resample_frames(table, int(height * s + 1), int(width * s + 1))
            prob, offsets = self.pnet((level - 127.5) / 128.0)  # (B, h, w), (B, 4, h, w)
            b, i, j = (prob >= self.thresholds[0]).nonzero(as_tuple=True)
            cells = torch.stack([j, i], dim=1).float() * 2  # (K, 2) x, y of each stride-2 12x12 window
            # the window's 1-based first and last pixels, mapped to the image and floored (MTCNN's rule)
            boxes = torch.cat([((cells + 1) / s).floor(), ((cells + 12) / s).floor()], dim=1)
            scores, offsets = prob[b, i, j], offsets.permute(0, 2, 3, 1)[b, i, j]
            keep = _nms_per_frame(boxes, scores, b, 0.5)  # within each frame and scale
            found.append((boxes[keep], scores[keep], offsets[keep], b[keep]))
        if not found:
            return torch.zeros((0, 4), device=table.device), torch.zeros(0, dtype=torch.long, device=table.device)
        boxes, scores, offsets, idx = (torch.cat(parts) for parts in zip(*found))
        keep = _nms_per_frame(boxes, scores, idx, 0.7)  # across scales, within each frame
        return _square(_regress(boxes[keep], offsets[keep], 0.0)), idx[keep]

    def _crops(self, table, boxes, idx, size):
        """Candidates whose crop is not empty, their frame ids and (K, 3, size, size) normalised crops."""
        windows = _crop_windows(boxes, table.shape[1] - 1, table.shape[2] - 1)
        # the reference fails on a box wholly outside the image (its crop list gets out of step); drop it
        ok = (windows[:, 2] > windows[:, 0]) & (windows[:, 3] > windows[:, 1])
        boxes, idx, windows = boxes[ok], idx[ok], windows[ok]
        crops = _resample_windows(table, idx, windows, size)  # (K, 3, S, S) channels-last
        return boxes, idx, (crops - 127.5) / 128.0

    def _refine(self, table, boxes, idx):
        """R-Net on 24 px crops -> kept, regressed, squared boxes (K', 4) and frame ids (K',)."""
        boxes, idx, crops = self._crops(table, boxes, idx, 24)
        if len(boxes) == 0:
            return boxes, idx
        prob, offsets = _in_chunks(self.rnet, crops)
        keep = prob > self.thresholds[1]
        boxes, prob, offsets, idx = boxes[keep], prob[keep], offsets[keep], idx[keep]
        keep = _nms_per_frame(boxes, prob, idx, 0.7)
        return _square(_regress(boxes[keep], offsets[keep], 1.0)), idx[keep]

    def _output(self, table, boxes, idx):
        """O-Net on 48 px crops -> boxes (F, 4), scores (F,), landmarks (F, 5, 2), frame ids (F,)."""
        boxes, idx, crops = self._crops(table, boxes, idx, 48)
        if len(boxes) == 0:
            return boxes, boxes.new_zeros(0), boxes.new_zeros((0, 5, 2)), idx
        prob, offsets, marks = _in_chunks(self.onet, crops)
        keep = prob > self.thresholds[2]
        boxes, prob, offsets, marks, idx = boxes[keep], prob[keep], offsets[keep], marks[keep], idx[keep]
        wh = (boxes[:, 2:] - boxes[:, :2] + 1)[:, None, :]  # (F, 1, 2) the box's whole-pixel size
        # fractions of the box from its first pixel's left/top edge (x1 - 1, y1 - 1) -> image pixels
        marks = wh * torch.stack([marks[:, :5], marks[:, 5:]], dim=2) + boxes[:, None, :2] - 1
        return _regress(boxes, offsets, 1.0), prob, marks, idx


def load_mtcnn(weights_dir=None, device: str | torch.device = "cpu", random_weights: bool = False,
               **kwargs) -> MTCNN:
    """Build :class:`MTCNN` and load the converted facenet-pytorch weights (shipped as package data).

    Args:
        weights_dir: a directory holding ``mtcnn_facenet_pytorch_2.6.0.pt`` or the file itself;
            ``None`` follows the usual lookup (``AFFECTFUSE_MTCNN_WEIGHTS``, ``$AFFECTFUSE_WEIGHTS_DIR``,
            torch hub cache, package data).
        device: torch device.
        random_weights: skip loading (tests only); recorded in ``model.weights_info``.
        **kwargs: :class:`MTCNN` arguments (``min_face_size``, ``thresholds``, ``factor``, ``max_side``).
    """
    model = MTCNN(**kwargs)
    if random_weights:
        model.weights_info = {**describe_loaded(MTCNN_WEIGHTS, [], True), "random_weights": True}
    else:
        path = None
        if weights_dir is not None:
            from pathlib import Path

            path = Path(weights_dir)
            if path.is_dir():
                path = path / MTCNN_WEIGHTS.filename
        with recording() as files:  # the file actually loaded goes to weights_info, not the declared one
            state = load_state_dict(MTCNN_WEIGHTS, path)
        model.load_state_dict(state)
        model.weights_info = {**describe_loaded(MTCNN_WEIGHTS, files, False), "random_weights": False}
    return model.to(device).eval()
