"""MTCNN face detector: P-Net over an image pyramid, R-Net, O-Net, 5 landmarks; batched over frames.

Coordinates are continuous pixel coordinates of the input image: pixel ``(row i, col j)`` covers
``[j, j+1) x [i, i+1)``; boxes are ``x1, y1, x2, y2`` (they may reach outside the image when a face
is cut by the border); landmarks are ``(x, y)`` in the order left eye, right eye, nose, left mouth
corner, right mouth corner ("left" = image left).

Batching: every frame of a batch goes through P-Net together at each pyramid scale, and all
candidate boxes of all frames go through R-Net and O-Net together (crops taken with
``torchvision.ops.roi_align``); non-maximum suppression is ``torchvision.ops.nms`` run per frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import box_area, nms, roi_align

from affectfuse.faces.nets import ONet, PNet, RNet
from affectfuse.weights import WeightsSpec, load_state_dict

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
        boxes: (F, 4) float32 ``x1, y1, x2, y2`` in pixels of the input image.
        scores: (F,) float32 O-Net face probability in [0, 1].
        landmarks: (F, 5, 2) float32 ``(x, y)`` pixels: left eye, right eye, nose, mouth left, mouth right.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @staticmethod
    def empty() -> "Detections":
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow (K, 4) boxes to squares around their centres (side = the longer side)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    cx, cy = boxes[:, 0] + w / 2, boxes[:, 1] + h / 2
    return torch.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dim=1)


def _regress(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Apply (K, 4) corner offsets, given as fractions of the box size, to (K, 4) boxes."""
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + offsets * wh


def _nms_per_frame(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, thresh: float) -> torch.Tensor:
    """IoU NMS within each frame (``torchvision.ops.nms`` per frame index), highest score first.

    ``torchvision.ops.batched_nms`` shifts each frame's boxes by a large offset, which changes float
    rounding; P-Net's grid windows often overlap at exactly the 0.5 threshold, so results would then
    depend on which other frames share the batch. One ``nms`` call per frame keeps them identical.
    """
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    keep = [sel[nms(boxes[sel], scores[sel], thresh)] for sel in
            (torch.nonzero(idxs == i).flatten() for i in torch.unique(idxs))]
    keep = torch.cat(keep)
    return keep[torch.argsort(scores[keep], descending=True, stable=True)]


def _min_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, thresh: float) -> torch.Tensor:
    """Suppress a box when intersection / smaller area > thresh with a better box of the same image.

    MTCNN's last step uses this "Min" overlap, which removes a small box inside a larger one that
    IoU-based NMS keeps; torchvision has only IoU, so this part is written here (F is tiny).
    """
    order = torch.argsort(scores, descending=True)
    b, i = boxes[order], idxs[order]
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    area = box_area(b)
    overlap = inter / torch.minimum(area[:, None], area[None, :]).clamp(min=1e-6)
    keep = torch.ones(len(b), dtype=torch.bool)
    for k in range(len(b)):
        if keep[k]:
            later = torch.arange(len(b)) > k
            keep &= ~(later & (i == i[k]) & (overlap[k] > thresh))
    return order[keep]


class MTCNN(nn.Module):
    """Multi-task cascaded face detector with 5 landmarks (our implementation of Zhang et al. 2016).

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

    def scales(self, height: int, width: int) -> list[float]:
        """Pyramid scales: the first maps ``min_face_size`` to P-Net's 12 px window."""
        scale = 12.0 / self.min_face_size
        out = []
        while min(height, width) * scale >= 12:
            out.append(scale)
            scale *= self.factor
        return out

    @torch.inference_mode()
    def detect(self, images, max_side: int | None = None) -> list[Detections]:
        """Detect faces in a batch.

        Args:
            images: (B, H, W, 3) or (H, W, 3) uint8 RGB array, or a list of (H, W, 3) arrays
                (sizes may differ; equal sizes are batched together).
            max_side: overrides the module's ``max_side`` for this call.

        Returns:
            One :class:`Detections` per image, in input order.
        """
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = images[None]
        if isinstance(images, np.ndarray):
            return self._detect_same_size(images, max_side)
        out: list[Detections | None] = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
        for k, img in enumerate(images):
            groups.setdefault(np.asarray(img).shape, []).append(k)
        for ks in groups.values():
            for k, det in zip(ks, self._detect_same_size(np.stack([np.asarray(images[k]) for k in ks]), max_side)):
                out[k] = det
        return out  # type: ignore[return-value]

    def _detect_same_size(self, images: np.ndarray, max_side: int | None) -> list[Detections]:
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
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float()
        boxes, idx = self._propose(x)
        boxes, idx = self._refine(x, boxes, idx)
        boxes, scores, marks, idx = self._output(x, boxes, idx)
        boxes, marks = boxes / scale, marks / scale
        out = []
        for k in range(n):
            sel = (idx == k).nonzero().flatten()
            sel = sel[torch.argsort(scores[sel], descending=True)]
            out.append(Detections(boxes[sel].cpu().numpy().astype(np.float32),
                                  scores[sel].cpu().numpy().astype(np.float32),
                                  marks[sel].cpu().numpy().astype(np.float32)))
        return out

    def _propose(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """P-Net over the pyramid of all frames at once -> squared candidate boxes (K, 4), frame ids (K,)."""
        height, width = x.shape[2:]
        all_boxes, all_offsets, all_scores, all_idx = [], [], [], []
        im = x
        for s in self.scales(height, width):
            # each level is area-resampled from the previous (finer) one: ~3 image passes in all, not one per scale
            im = F.interpolate(im, size=(math.ceil(height * s), math.ceil(width * s)), mode="area")
            prob, offsets = self.pnet((im - 127.5) / 128.0)  # (B, h, w), (B, 4, h, w)
            b, i, j = (prob >= self.thresholds[0]).nonzero(as_tuple=True)
            if len(b) == 0:
                continue
            cells = torch.stack([j, i], dim=1).float() * 2.0  # stride 2, (x, y) of each 12x12 window
            boxes = torch.cat([cells, cells + 12.0], dim=1) / s
            scores = prob[b, i, j]
            offsets = offsets.permute(0, 2, 3, 1)[b, i, j]  # (K, 4)
            keep = _nms_per_frame(boxes, scores, b, 0.5)  # within each frame and scale
            all_boxes.append(boxes[keep])
            all_offsets.append(offsets[keep])
            all_scores.append(scores[keep])
            all_idx.append(b[keep])
        if not all_boxes:
            return torch.zeros((0, 4), device=x.device), torch.zeros(0, dtype=torch.long, device=x.device)
        boxes, offsets = torch.cat(all_boxes), torch.cat(all_offsets)
        scores, idx = torch.cat(all_scores), torch.cat(all_idx)
        keep = _nms_per_frame(boxes, scores, idx, 0.7)  # across scales, within each frame
        return _square(_regress(boxes[keep], offsets[keep])), idx[keep]

    def _crops(self, x: torch.Tensor, boxes: torch.Tensor, idx: torch.Tensor, size: int) -> torch.Tensor:
        """(K, 3, size, size) normalised crops; outside the image counts as black, as in MTCNN.

        Each box is sampled (``roi_align``, 2x2 bilinear samples per output pixel) from the level of
        a 2x average-pooled pyramid where it is at most ~2x the output size, so big faces are
        area-averaged without thousands of samples per pixel.
        """
        out = torch.empty((len(boxes), x.shape[1], size, size), dtype=x.dtype, device=x.device)
        side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        level = torch.clamp(torch.floor(torch.log2(side.clamp(min=1.0) / size)), min=0).long()
        image, factor = x, 1.0
        for lev in range(int(level.max()) + 1 if len(boxes) else 0):
            if lev:
                image = F.avg_pool2d(image, 2, ceil_mode=True)
                factor /= 2.0
            sel = (level == lev).nonzero().flatten()
            if len(sel):
                rois = torch.cat([idx[sel, None].to(x.dtype), boxes[sel]], dim=1)
                out[sel] = roi_align(image, rois, output_size=(size, size), spatial_scale=factor, sampling_ratio=2,
                                     aligned=True)
        return (out - 127.5) / 128.0

    def _refine(self, x, boxes, idx):
        if len(boxes) == 0:
            return boxes, idx
        prob, offsets = self.rnet(self._crops(x, boxes, idx, 24))
        keep = prob > self.thresholds[1]
        boxes, prob, offsets, idx = boxes[keep], prob[keep], offsets[keep], idx[keep]
        keep = _nms_per_frame(boxes, prob, idx, 0.7)
        return _square(_regress(boxes[keep], offsets[keep])), idx[keep]

    def _output(self, x, boxes, idx):
        if len(boxes) == 0:
            return boxes, torch.zeros(0, device=x.device), torch.zeros((0, 5, 2), device=x.device), idx
        prob, offsets, marks = self.onet(self._crops(x, boxes, idx, 48))
        keep = prob > self.thresholds[2]
        boxes, prob, offsets, marks, idx = boxes[keep], prob[keep], offsets[keep], marks[keep], idx[keep]
        wh = (boxes[:, 2:] - boxes[:, :2])[:, None, :]  # (K, 1, 2)
        marks = boxes[:, None, :2] + torch.stack([marks[:, :5], marks[:, 5:]], dim=2) * wh  # (K, 5, 2)
        boxes = _regress(boxes, offsets)
        keep = _nms_per_frame(boxes, prob, idx, 0.7)
        boxes, prob, marks, idx = boxes[keep], prob[keep], marks[keep], idx[keep]
        keep = _min_nms(boxes, prob, idx, 0.7)
        return boxes[keep], prob[keep], marks[keep], idx[keep]


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
        model.weights_info = {"name": MTCNN_WEIGHTS.name, "random_weights": True}
    else:
        path = None
        if weights_dir is not None:
            from pathlib import Path

            path = Path(weights_dir)
            if path.is_dir():
                path = path / MTCNN_WEIGHTS.filename
        state = load_state_dict(MTCNN_WEIGHTS, path)
        model.load_state_dict(state)
        model.weights_info = {**MTCNN_WEIGHTS.describe(), "random_weights": False}
    return model.to(device).eval()
