"""Face-preprocessing plans: how one face network wants its input, declared once next to its weights.

A :class:`FacePlan` is the whole recipe from a video frame to the network's input tensor:

- the crop, what :func:`crop_faces` cuts (:attr:`FacePlan.crop`, a :class:`CropSpec`): the crop side
  ``size`` in pixels, the alignment ``template`` (``"arcface"``: InsightFace's 5-point template;
  ``"mtcnn_box"``: where the 5 landmarks fall inside an MTCNN box, see :mod:`affectfuse.faces.align`), a
  ``margin`` (context added on every side, as a fraction of the template's side: 0.1 shows 10 % more face
  width left and right and the face fills 1 / 1.2 of the crop) and the ``colour`` (``"rgb"``, or
  ``"grey"``: ITU-R 601 luma, ``cv2.COLOR_RGB2GRAY``, copied to the three channels, so cached crops and
  fine-tuning see what the network sees);
- tensor preparation, what the extractor's ``preprocess`` does with the crop: the normalisation
  ``(x / scale - mean) / std`` per RGB channel, and the ``precision`` the network runs at (``fp32``,
  ``bf16``, ``auto``; :mod:`affectfuse.features.face_common`).

Every face extractor declares its plan (``extractor.input``); ``affectfuse extract``, ``predict`` and
``finetune`` all cut faces with :func:`crop_faces` from that plan, so one video gives one set of crops,
whatever the command. Extractors whose geometry agrees share one crop per frame (keyed by :class:`CropSpec`).

Letters: K faces, S crop side, H/W frame pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

TEMPLATES = ("arcface", "mtcnn_box")
COLOURS = ("rgb", "grey")
PRECISIONS = ("fp32", "bf16", "auto")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, order=True)
class CropSpec:
    """A face crop: ``size`` px square, 5-point ``template``, ``margin`` (fraction per side), ``colour``."""

    size: int
    template: str
    margin: float = 0.0
    colour: str = "rgb"

    def __post_init__(self):
        if int(self.size) != self.size or self.size < 8:
            raise ValueError(f"crop size must be an integer >= 8 pixels, got {self.size!r}")
        if self.template not in TEMPLATES:
            raise ValueError(f"unknown face template {self.template!r}; valid: {', '.join(TEMPLATES)}")
        if not 0.0 <= float(self.margin) < 1.0:
            raise ValueError(f"crop margin must be in [0, 1), got {self.margin!r}")
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; valid: {', '.join(COLOURS)}")

    def tag(self) -> str:
        """Short text naming the crop (crop-cache keys, log lines): ``mtcnn_box``, ``arcface+m0.1+grey``."""
        margin = f"+m{self.margin:g}" if self.margin else ""
        return self.template + margin + ("+grey" if self.colour == "grey" else "")


@dataclass(frozen=True)
class FacePlan:
    """One face network's preprocessing (see the module doc); frozen, so it can be shared and hashed.

    Attributes:
        size, template, margin, colour: the crop (:attr:`crop`).
        mean, std: per-channel normalisation on the 0-1 scale (RGB order); scale: divisor of the uint8 pixels.
        precision: ``"fp32"`` (default), ``"bf16"`` or ``"auto"``.
    """

    size: int
    template: str
    margin: float = 0.0
    colour: str = "rgb"
    mean: tuple[float, ...] = field(default=IMAGENET_MEAN)
    std: tuple[float, ...] = field(default=IMAGENET_STD)
    scale: float = 255.0
    precision: str = "fp32"

    def __post_init__(self):
        CropSpec(self.size, self.template, self.margin, self.colour)  # validates the crop
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values (std > 0), got {self.mean}, {self.std}")

    @property
    def crop(self) -> CropSpec:
        return CropSpec(self.size, self.template, self.margin, self.colour)

    def describe(self) -> dict:
        """JSON-ready dict (feature-set ``meta.json`` ``input``, checkpoints, ``summary.json``)."""
        return {"size": self.size, "template": self.template, "margin": self.margin, "colour": self.colour,
                "mean": list(self.mean), "std": list(self.std), "scale": self.scale, "precision": self.precision}


def _spec(plan: FacePlan | CropSpec) -> CropSpec:
    return plan.crop if isinstance(plan, FacePlan) else plan


def crop_faces(frame: np.ndarray, landmarks: np.ndarray, plan: FacePlan | CropSpec) -> np.ndarray:
    """Cut the faces of one frame as ``plan`` says: the only place crops are decided.

    Args:
        frame: (H, W, 3) uint8 RGB, full resolution.
        landmarks: (K, 5, 2) or (5, 2) MTCNN landmarks in continuous pixel coordinates of ``frame``.
        plan: the extractor's :class:`FacePlan` (or its :class:`CropSpec`).

    Returns:
        (K, S, S, 3) uint8 crops (RGB, or grey in all three channels); normalisation is the extractor's.
    """
    from affectfuse.faces.align import align_face

    spec = _spec(plan)
    lm = np.asarray(landmarks, np.float64)
    lm = lm[None] if lm.ndim == 2 else lm
    if lm.ndim != 3 or lm.shape[1:] != (5, 2):
        raise ValueError(f"landmarks must be (K, 5, 2) or (5, 2), got {np.shape(landmarks)}")
    out = np.zeros((len(lm), spec.size, spec.size, 3), np.uint8)
    for k, points in enumerate(lm):
        out[k] = align_face(frame, points, spec.size, spec.template, spec.margin)
    return to_colour(out, spec.colour)


def to_colour(crops: np.ndarray, colour: str) -> np.ndarray:
    """(..., S, S, 3) uint8 RGB -> the same in ``colour`` (``"grey"``: ``cv2.COLOR_RGB2GRAY`` in every channel)."""
    if colour == "rgb":
        return crops
    import cv2

    flat = crops.reshape(-1, *crops.shape[-3:])
    grey = np.stack([cv2.cvtColor(np.ascontiguousarray(c), cv2.COLOR_RGB2GRAY) for c in flat])
    return np.repeat(grey[..., None], 3, axis=-1).reshape(crops.shape)


def resize_aligned(image: np.ndarray, plan: FacePlan | CropSpec) -> np.ndarray:
    """An image that is already an aligned face (Aff-Wild2 ``cropped_aligned``) brought to the plan's side:
    (H, W, 3) uint8 -> (S, S, 3) uint8 (area filter when shrinking, bilinear when enlarging)."""
    import cv2

    spec = _spec(plan)
    h, w = image.shape[:2]
    out = cv2.resize(image, (spec.size, spec.size),
                     interpolation=cv2.INTER_AREA if spec.size < max(h, w) else cv2.INTER_LINEAR)
    return to_colour(out, spec.colour)


def blank(plans, n: int = 1) -> dict[CropSpec, np.ndarray]:
    """{spec: (n, S, S, 3) zeros} for every geometry of ``plans`` (rows without a face)."""
    return {s: np.zeros((n, s.size, s.size, 3), np.uint8) for s in crop_specs(plans)}


def crop_specs(plans) -> tuple[CropSpec, ...]:
    """The distinct geometries of ``plans`` (FacePlans or CropSpecs), sorted."""
    return tuple(sorted({_spec(p) for p in plans}))


def recorded_crop(recorded: dict | None) -> CropSpec | None:
    """The crop a record names (a feature set's ``meta.json`` ``input``, a plan's ``describe()``: size,
    template, margin, colour; older records lack margin and colour: 0, rgb), or None when it names none."""
    if not recorded or "template" not in recorded or "size" not in recorded:
        return None
    return CropSpec(int(recorded["size"]), str(recorded["template"]), float(recorded.get("margin", 0.0)),
                    str(recorded.get("colour", "rgb")))


def recorded_plan(recorded: dict | None, plan: FacePlan, where: str) -> FacePlan:
    """The plan that reproduces features recorded as made from a crop (:func:`recorded_crop`): ``plan`` (the
    network's current declaration: normalisation, precision) with the recorded crop geometry, so a checkpoint
    trained on features of an earlier crop declaration gets those features again. Records without a template
    (older files) give ``plan``; a recorded side other than the network's input side raises ValueError naming
    ``where`` (the recorded side)."""
    then = recorded_crop(recorded)
    if then is None:
        return plan
    if then.size != plan.size:
        raise ValueError(f"{where} was made from {then.size} px '{then.tag()}' face crops, but this network takes "
                         f"{plan.size} px crops: extract again (affectfuse extract) and retrain")
    return replace(plan, template=then.template, margin=then.margin, colour=then.colour)
