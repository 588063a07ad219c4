"""Test-time augmentation of face crops: a network's outputs averaged over a few views of each crop.

A view is the normalised crop tensor mirrored left-right (``flip``) and/or zoomed about its centre by a
scale ``s`` (``s`` < 1 shows the central ``s`` of the crop, ``s`` > 1 adds ``(s - 1) / 2`` of a side on every
side by repeating the border pixels), resized back to the crop's side (bilinear, antialiased). Outputs are
averaged over the views, so an extractor's output shape, columns and units stay as they are (probability
columns still sum to 1).

Spellings (``tta=`` of the face factories, :func:`parse_tta`): ``"none"`` (one view), ``"flip"`` (2 views),
``"scales"`` (:data:`TTA_SCALES`, 3 views), ``"flip+scales"`` (6 views).

Letters: N crops, C channels, S crop side in pixels, V views.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

TTA_SCALES = (0.9, 1.0, 1.15)
TTA_CHOICES = ("none", "flip", "scales", "flip+scales")


@dataclass(frozen=True)
class TTA:
    """Views of a crop: mirrored too when ``flip``; one zoom per entry of ``scales`` (1.0 = as cut)."""

    flip: bool = False
    scales: tuple[float, ...] = (1.0,)

    @property
    def n_views(self) -> int:
        return len(self.scales) * (2 if self.flip else 1)

    def describe(self) -> dict:
        return {"flip": self.flip, "scales": list(self.scales), "views": self.n_views}


def parse_tta(spec: "str | TTA | None") -> TTA:
    """``"none" | "flip" | "scales" | "flip+scales"`` (or a :class:`TTA`, or None = none) -> :class:`TTA`."""
    if isinstance(spec, TTA):
        return spec
    text = "none" if spec is None else str(spec).strip().lower()
    if text not in TTA_CHOICES:
        raise ValueError(f"test-time augmentation must be one of {', '.join(TTA_CHOICES)}, got {spec!r}")
    return TTA(flip="flip" in text, scales=TTA_SCALES if "scales" in text else (1.0,))


def zoom(x: torch.Tensor, scale: float) -> torch.Tensor:
    """(N, C, S, S) -> (N, C, S, S): the centre ``scale`` of each crop (border pixels repeated beyond it)."""
    if scale == 1.0:
        return x
    side = x.shape[-1]
    k = max(2, int(round(side * scale)))
    if k < side:
        o = (side - k) // 2
        x = x[..., o:o + k, o:o + k]
    else:
        p = (k - side) // 2
        x = F.pad(x, (p, k - side - p, p, k - side - p), mode="replicate")
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=k > side)


def views(x: torch.Tensor, tta: TTA) -> list[torch.Tensor]:
    """The V views (each (N, C, S, S)) of normalised crops ``x``: every scale, then mirrored when ``flip``."""
    out = [zoom(x, s) for s in tta.scales]
    return out + [v.flip(-1) for v in out] if tta.flip else out


def averaged(run, x: torch.Tensor, tta: TTA) -> torch.Tensor:
    """``run`` ((N, C, S, S) -> (N, D)) averaged over the views of ``x``: (N, D) float32."""
    if tta.n_views == 1:
        return run(x)
    total = None
    for v in views(x, tta):
        out = run(v.contiguous()).float()
        total = out if total is None else total + out
    return total / tta.n_views
