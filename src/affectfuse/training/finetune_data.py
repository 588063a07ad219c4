"""Face-expression image datasets for fine-tuning: layouts, class orders, face crops, augmentation.

Two layouts are read (:func:`load_expression_dataset`):

- a CSV with one row per image (AffectNet style): an image column (``subDirectory_filePath``, ``image``,
  ``path``, ``file``, ``filename`` or ``image_path``) and a label column (``expression``, ``emotion``,
  ``label`` or ``class``) holding a class index or a class name; relative paths are resolved against
  ``root`` (default: the CSV's folder, then its ``images/`` sub-folder);
- a folder with one sub-folder per class (``<root>/<class name>/*.jpg``, RAF-DB / FER style).

Class orders (``classes=``): ``"affectnet7"`` is AffectNet's own numbering
(0 Neutral, 1 Happiness, 2 Sadness, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger; AffectNet's 7 Contempt,
8 None, 9 Uncertain, 10 Non-Face rows are dropped), ``"affectnet8"`` adds 7 Contempt, ``"expr8"`` is the
ABAW order (0 Neutral ... 7 Other, contempt counted as Other), ``"auto"`` takes AffectNet-7 for integer
labels and the sorted names found otherwise, or give an explicit list of names. Names are matched
case-insensitively with the usual spellings (happy/happiness, angry/anger, fearful/fear, ...); rows whose
label is not in the chosen classes are dropped and counted in ``ExpressionData.dropped``.

Face crops (:func:`prepare_crops`): each image is decoded, its largest face detected with MTCNN and aligned
to ``size`` px (``align="mtcnn"``), or the whole image is centre-cropped to a square and resized
(``align="none"``, for sets that ship cropped faces such as AffectNet's or RAF-DB's aligned images). When
MTCNN finds no face the whole image is used and counted. Crops are cached as PNG under ``cache_dir``
(outside the repository; default ``$AFFECTFUSE_CACHE_DIR`` or ``~/.cache/affectfuse/face_crops``), keyed
by the image's path, size and mtime, so a second run (or a resumed one) reads them without detection; the
cache is shared with ``affectfuse extract``, which decodes, detects and aligns photos the same way
(:mod:`affectfuse.faces.crop_cache`), so photos extracted before are not detected again.
Unreadable images go to a :class:`~affectfuse.utils.FailureLog` and are left out.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from affectfuse.faces.crop_cache import CropCache, centre_square, default_cache_dir  # noqa: F401 (re-exported)
from affectfuse.labels import EXPR_CLASSES, EXPRESSION_SYNONYMS
from affectfuse.utils import FailureLog

log = logging.getLogger(__name__)

AFFECTNET7: tuple[str, ...] = ("Neutral", "Happiness", "Sadness", "Surprise", "Fear", "Disgust", "Anger")
AFFECTNET8: tuple[str, ...] = AFFECTNET7 + ("Contempt",)
CLASS_SETS: dict[str, tuple[str, ...]] = {"affectnet7": AFFECTNET7, "affectnet8": AFFECTNET8, "expr8": EXPR_CLASSES}

SYNONYMS = EXPRESSION_SYNONYMS  # usual spellings -> canonical name (lower case keys)
# class sets where a name stands for another class
ALIASES: dict[str, dict[str, str]] = {"expr8": {"Contempt": "Other"}}

IMAGE_COLUMNS = ("subDirectory_filePath", "image", "path", "file", "filename", "image_path")
LABEL_COLUMNS = ("expression", "emotion", "label", "class")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class DatasetError(ValueError):
    """The dataset file or folder is malformed; the message names it and the cause."""


@dataclass
class ExpressionData:
    """Images and labels of an expression dataset.

    Attributes:
        paths: N image files.
        labels: (N,) int64 class index into ``classes``.
        classes: class names, index = label.
        source: the CSV or folder read.
        dropped: label value -> number of rows left out because it is not one of ``classes``.
    """

    paths: list[Path]
    labels: np.ndarray
    classes: tuple[str, ...]
    source: str
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        """Images per class, every class named (0 for an absent one)."""
        n = np.bincount(self.labels, minlength=len(self.classes))
        return {c: int(k) for c, k in zip(self.classes, n)}

    def subset(self, index) -> "ExpressionData":
        index = np.asarray(index, dtype=np.int64)
        return ExpressionData([self.paths[i] for i in index], self.labels[index], self.classes, self.source,
                              dict(self.dropped))


def canonical(name: str) -> str:
    """Canonical spelling of a class name (``"happy"`` -> ``"Happiness"``); unknown names kept as given."""
    key = name.strip()
    return SYNONYMS.get(key.lower(), key)


def resolve_classes(classes: str | list[str] | tuple[str, ...], raw_labels: list[str]) -> tuple[str, ...]:
    """The class list for ``classes`` (a preset name, ``"auto"`` or explicit names) given the raw labels."""
    if isinstance(classes, str):
        key = classes.lower()
        if key in CLASS_SETS:
            return CLASS_SETS[key]
        if key != "auto":
            names = [c for c in classes.split(",") if c.strip()]
            if len(names) < 2:
                raise DatasetError(f"unknown class set {classes!r}; valid: auto, {', '.join(CLASS_SETS)} "
                                   "or a comma-separated list of names")
            return tuple(canonical(c) for c in names)
        if raw_labels and all(lab.strip().lstrip("-").isdigit() for lab in raw_labels):
            return AFFECTNET7
        return tuple(sorted({canonical(lab) for lab in raw_labels}))
    return tuple(canonical(c) for c in classes)


def _class_set_key(classes: tuple[str, ...]) -> str | None:
    return next((k for k, v in CLASS_SETS.items() if v == classes), None)


def encode_labels(raw: list[str], classes: tuple[str, ...]) -> tuple[np.ndarray, dict[str, int]]:
    """Map raw labels (indices or names) to indices into ``classes``; -1 for dropped rows."""
    alias = ALIASES.get(_class_set_key(classes) or "", {})
    lookup = {c.lower(): i for i, c in enumerate(classes)}
    out = np.full(len(raw), -1, dtype=np.int64)
    dropped: dict[str, int] = {}
    for i, lab in enumerate(raw):
        text = lab.strip()
        if text.lstrip("-").isdigit():
            k = int(text)
            ok = 0 <= k < len(classes)
        else:
            name = canonical(text)
            name = alias.get(name, name)
            k = lookup.get(name.lower(), -1)
            ok = k >= 0
        if ok:
            out[i] = k
        else:
            dropped[text] = dropped.get(text, 0) + 1
    return out, dropped


def _pick(header: list[str], wanted: tuple[str, ...], given: str | None, what: str, file: Path) -> str:
    if given:
        if given not in header:
            raise DatasetError(f"{file}: no column {given!r} (columns: {', '.join(header)})")
        return given
    lower = {h.lower(): h for h in header}
    for w in wanted:
        if w.lower() in lower:
            return lower[w.lower()]
    raise DatasetError(f"{file}: no {what} column; expected one of {', '.join(wanted)} (columns: {', '.join(header)})")


def _read_csv(file: Path, root: Path | None, image_column: str | None, label_column: str | None):
    with open(file, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        if not header:
            raise DatasetError(f"{file}: empty CSV, expected a header with an image and a label column")
        img_col = _pick(header, IMAGE_COLUMNS, image_column, "image", file)
        lab_col = _pick(header, LABEL_COLUMNS, label_column, "label", file)
        rows = [(r[img_col], r[lab_col]) for r in reader if r.get(img_col) and r.get(lab_col) not in (None, "")]
    if not rows:
        raise DatasetError(f"{file}: no labelled rows")
    if root is None:
        first = Path(rows[0][0])
        root = file.parent
        if not first.is_absolute() and not (root / first).exists() and (root / "images" / first).exists():
            root = file.parent / "images"
    paths = [Path(p) if Path(p).is_absolute() else root / p for p, _ in rows]
    return paths, [lab for _, lab in rows]


def _read_folder(folder: Path):
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DatasetError(f"{folder}: no class sub-folders; expected <folder>/<class name>/<image>")
    paths, raw = [], []
    for d in class_dirs:
        for f in sorted(d.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(f)
                raw.append(d.name)
    if not paths:
        raise DatasetError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the class folders")
    return paths, raw


def load_expression_dataset(source: str | os.PathLike, classes="auto", root: str | os.PathLike | None = None,
                            image_column: str | None = None, label_column: str | None = None) -> ExpressionData:
    """Read a CSV or a one-folder-per-class dataset; see the module docstring for layouts and class orders."""
    source = Path(source)
    if source.is_dir():
        paths, raw = _read_folder(source)
    elif source.is_file():
        paths, raw = _read_csv(source, Path(root) if root else None, image_column, label_column)
    else:
        raise DatasetError(f"{source}: no such CSV file or folder")
    names = resolve_classes(classes, raw)
    labels, dropped = encode_labels(raw, names)
    keep = labels >= 0
    if dropped:
        log.info("%s: dropped %d rows with labels outside %s: %s", source, int((~keep).sum()), names, dropped)
    if not keep.any():
        raise DatasetError(f"{source}: no row has a label in {names} (labels seen: {sorted(dropped)[:10]})")
    return ExpressionData([p for p, k in zip(paths, keep) if k], labels[keep], names, str(source), dropped)


# ---------------------------------------------------------------- face crops

def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB as ``extract`` does (:func:`affectfuse.faces.images.read_image`,
    EXIF orientation applied); raises DatasetError naming the file."""
    from affectfuse.faces.images import read_image
    from affectfuse.media.decode import MediaError

    try:
        return read_image(path)
    except MediaError as exc:
        raise DatasetError(f"{path}: cannot decode image ({exc})") from exc


class FaceAligner:
    """Largest-face MTCNN detection, cut by :func:`affectfuse.faces.plan.crop_faces` with a crop geometry."""

    def __init__(self, spec, template: str | None = None, device: str = "cpu"):
        from affectfuse.faces.mtcnn import load_mtcnn

        # a CropSpec or the extractor's FacePlan; or a size with its template
        self.spec = crop_spec(spec, template) if isinstance(spec, int) else spec
        self.detector = load_mtcnn(device=device)

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """(H, W, 3) uint8 RGB -> (S, S, 3) uint8 aligned crop, or None when no face is found."""
        from affectfuse.faces.plan import crop_faces

        det = self.detector.detect([image])[0]
        if len(det) == 0:
            return None
        boxes = np.asarray(det.boxes, dtype=np.float64)
        largest = int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
        return crop_faces(image, det.landmarks[largest], self.spec)[0]


def crop_spec(size: int, template: str | None = None, plan=None, align: str = "mtcnn"):
    """The CropSpec prepare_crops cuts: the extractor's ``plan`` (its ``input``), else ``size`` + ``template``
    (``align="none"`` crops centre squares: the template only names the cache entry)."""
    from affectfuse.faces.plan import CropSpec, FacePlan

    if isinstance(template, (FacePlan, CropSpec)):  # the extractor's plan passed as its template
        plan, template = template, None
    if plan is not None:
        if int(plan.size) != int(size):
            raise ValueError(f"crop size {size} differs from the extractor plan's {plan.size}")
        return plan.crop
    if template is None and align == "none":
        template = "mtcnn_box"
    if template is None:
        raise ValueError("face crops need the extractor's template (its input.template), e.g. 'mtcnn_box'")
    return CropSpec(int(size), template)


@dataclass
class CropReport:
    """What :func:`prepare_crops` did: crops made or found, whole-image fallbacks, failures."""

    files: list[Path]
    keep: np.ndarray  # (N,) bool: item has a crop
    no_face: int = 0
    cached: int = 0
    failed: int = 0


def prepare_crops(paths: list[Path], size: int, align: str = "mtcnn", cache_dir: str | os.PathLike | None = None,
                  failures: FailureLog | None = None, device: str = "cpu", progress: bool = False,
                  template: str | None = None, plan=None) -> CropReport:
    """Make (or find in the cache) one ``size`` x ``size`` RGB PNG crop per image.

    ``plan`` (or ``template``): the extractor's :class:`~affectfuse.faces.plan.FacePlan` (``extractor.input``):
    its geometry (template, margin) is cut, as ``extract`` and ``predict`` cut it. A template name
    (``"arcface"``, ``"mtcnn_box"``) instead cuts that template with no margin.

    Returns the crop file per image (``keep[i]`` False where the image could not be read; its file is
    a placeholder and must not be used). ``align`` is ``"mtcnn"`` or ``"none"``.
    """
    if align not in ("mtcnn", "none"):
        raise ValueError(f"align must be 'mtcnn' or 'none', got {align!r}")
    spec = crop_spec(size, template, plan, align)
    cache = CropCache(cache_dir, align)  # shared with `affectfuse extract` (affectfuse.faces.crop_cache)
    aligner = None
    report = CropReport(files=[], keep=np.zeros(len(paths), dtype=bool))
    iterator = paths
    if progress:
        from tqdm import tqdm

        iterator = tqdm(paths, desc=f"face crops ({align}, {size}px)", unit="img")
    for i, path in enumerate(iterator):
        try:
            cache.files(path, spec)
        except OSError as exc:
            report.files.append(Path(path))
            report.failed += 1
            if failures is not None:
                failures.add(str(path), DatasetError(f"{path}: cannot read ({exc})"))
            continue
        hit = cache.lookup(path, spec)
        if hit is not None:
            report.files.append(hit)
            report.keep[i] = True
            report.cached += 1
            report.no_face += hit.name.endswith(".noface.png")
            continue
        try:
            image = read_rgb(Path(path))
            crop = None
            if align == "mtcnn":
                aligner = aligner or FaceAligner(spec, device=device)
                crop = aligner(image)
            found = crop is not None or align != "mtcnn"
            if crop is None:
                crop = centre_square(image, size)
                report.no_face += align == "mtcnn"
            report.files.append(cache.write(path, spec, crop, found))
            report.keep[i] = True
        except Exception as exc:  # one bad file never stops the job
            report.files.append(Path(path))
            report.failed += 1
            if failures is not None:
                failures.add(str(path), exc)
            log.warning("%s: left out (%s)", path, exc)
    return report


# ---------------------------------------------------------------- torch datasets and augmentation

def build_transform(size: int, train: bool):
    """uint8 (3, H, W) -> uint8 (3, size, size); training adds the standard augmentation.

    Training: random resized crop (80-100 % of the area, aspect 0.9-1.1), horizontal flip, rotation
    up to 10 degrees (half the time), colour jitter (brightness/contrast/saturation 0.3, hue 0.05).
    Normalisation is left to the model (the extractor's own preprocessing), so training and extraction
    see the same input scale.
    """
    from torchvision.transforms import v2

    if not train:
        return v2.Resize((size, size), antialias=True)
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.8, 1.0), ratio=(0.9, 1.1), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.RandomRotation(10)], p=0.5),
        v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05),
    ])


class CropDataset:
    """A torch ``Dataset`` of cached face crops: item -> (uint8 (3, size, size) tensor, int label).

    With ``preload=True`` every crop is decoded once into memory (N x 3 x size x size bytes), which is
    what small sets and cross-validation want; large sets (AffectNet) read the PNGs per item.
    """

    def __init__(self, files: list[Path], labels: np.ndarray, size: int, train: bool, preload: bool = False):
        import torch

        self.files, self.labels, self.size = list(files), np.asarray(labels, dtype=np.int64), size
        self.transform = build_transform(size, train)
        self.images = torch.stack([self._read(f) for f in self.files]) if preload and self.files else None

    @staticmethod
    def _read(file: Path):
        from torchvision.io import ImageReadMode, decode_image

        return decode_image(str(file), mode=ImageReadMode.RGB)

    def __len__(self) -> int:
        return len(self.files)

    def image(self, i: int):
        """Crop ``i`` as uint8 (3, S, S), before any transform."""
        return self.images[i] if self.images is not None else self._read(self.files[i])

    def __getitem__(self, i: int):
        return self.transform(self.image(i)), int(self.labels[i])
