"""The three MTCNN networks (Zhang et al. 2016, "Joint Face Detection and Alignment using Multi-task
Cascaded Convolutional Networks"), as plain PyTorch modules.

All three take images normalised as ``(pixel - 127.5) / 128`` in (N, 3, H, W) RGB order.

- :class:`PNet` (proposal): fully convolutional, 12x12 receptive field, stride 2.
  (N, 3, H, W) -> face probability (N, H', W') and box offsets (N, 4, H', W'),
  ``H' = ceil((H - 2) / 2) - 4``.
- :class:`RNet` (refine): (N, 3, 24, 24) -> probability (N,), box offsets (N, 4).
- :class:`ONet` (output): (N, 3, 48, 48) -> probability (N,), box offsets (N, 4),
  landmarks (N, 10) as ``x1..x5, y1..y5`` fractions of the box (left eye, right eye, nose,
  left mouth corner, right mouth corner; "left" = image left).

Box offsets are ``(dx1, dy1, dx2, dy2)`` fractions of the box width/height added to its corners.

The released weights (converted by ``scripts/convert_mtcnn_weights.py``) were trained with the
original Caffe/Matlab code, which worked on transposed images; their fully connected layers
therefore read the last feature map flattened in (W, H, C) order. :func:`_flatten_whc` does that.
"""

from __future__ import annotations

import torch
from torch import nn


def _flatten_whc(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, W*H*C), the layout the released dense-layer weights expect."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


def _conv(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel_size=k), nn.PReLU(cout)]


def _pool(k: int, s: int) -> nn.MaxPool2d:
    return nn.MaxPool2d(k, s, ceil_mode=True)


class PNet(nn.Module):
    """Proposal network: 10-16-32 channel 3x3 convs, then 1x1 heads for face/no-face and box."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(*_conv(3, 10, 3), _pool(2, 2), *_conv(10, 16, 3), *_conv(16, 32, 3))
        self.face_logits = nn.Conv2d(32, 2, kernel_size=1)
        self.box_offsets = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        prob = torch.softmax(self.face_logits(h), dim=1)[:, 1]  # (N, H', W')
        return prob, self.box_offsets(h)  # (N, 4, H', W')


class RNet(nn.Module):
    """Refinement network on 24x24 crops."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(*_conv(3, 28, 3), _pool(3, 2), *_conv(28, 48, 3), _pool(3, 2),
                                      *_conv(48, 64, 2))
        self.fc = nn.Sequential(nn.Linear(576, 128), nn.PReLU(128))
        self.face_logits = nn.Linear(128, 2)
        self.box_offsets = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.fc(_flatten_whc(self.features(x)))
        return torch.softmax(self.face_logits(h), dim=1)[:, 1], self.box_offsets(h)


class ONet(nn.Module):
    """Output network on 48x48 crops; adds the 5 landmarks."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(*_conv(3, 32, 3), _pool(3, 2), *_conv(32, 64, 3), _pool(3, 2),
                                      *_conv(64, 64, 3), _pool(2, 2), *_conv(64, 128, 2))
        self.fc = nn.Sequential(nn.Linear(1152, 256), nn.PReLU(256))
        self.face_logits = nn.Linear(256, 2)
        self.box_offsets = nn.Linear(256, 4)
        self.landmarks = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.fc(_flatten_whc(self.features(x)))
        return torch.softmax(self.face_logits(h), dim=1)[:, 1], self.box_offsets(h), self.landmarks(h)


# Names in the facenet-pytorch 2.6.0 state dicts -> names in our modules (used by the converter).
FACENET_PYTORCH_NAMES = {
    "pnet": {"conv1": "features.0", "prelu1": "features.1", "conv2": "features.3", "prelu2": "features.4",
             "conv3": "features.5", "prelu3": "features.6", "conv4_1": "face_logits", "conv4_2": "box_offsets"},
    "rnet": {"conv1": "features.0", "prelu1": "features.1", "conv2": "features.3", "prelu2": "features.4",
             "conv3": "features.6", "prelu3": "features.7", "dense4": "fc.0", "prelu4": "fc.1",
             "dense5_1": "face_logits", "dense5_2": "box_offsets"},
    "onet": {"conv1": "features.0", "prelu1": "features.1", "conv2": "features.3", "prelu2": "features.4",
             "conv3": "features.6", "prelu3": "features.7", "conv4": "features.9", "prelu4": "features.10",
             "dense5": "fc.0", "prelu5": "fc.1", "dense6_1": "face_logits", "dense6_2": "box_offsets",
             "dense6_3": "landmarks"},
}


def rename_facenet_pytorch(net: str, state: dict) -> dict:
    """Map one facenet-pytorch state dict (``net`` in pnet/rnet/onet) to ``<net>.<our name>`` keys."""
    table = FACENET_PYTORCH_NAMES[net]
    out = {}
    for key, value in state.items():
        layer, _, param = key.rpartition(".")
        if layer not in table:
            raise KeyError(f"unexpected tensor {key!r} in the {net} state dict")
        out[f"{net}.{table[layer]}.{param}"] = value
    return out
