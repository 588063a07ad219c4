"""Aligned face crops of image files, cached on disk and shared by ``affectfuse extract`` and ``finetune``.

One PNG per (image file, alignment, crop: :class:`affectfuse.faces.plan.CropSpec`), keyed by the file's
resolved path, size in bytes and modification time, so an edited or replaced image is cropped again. A face
crop is ``<key>.png``; an image where MTCNN found no face is ``<key>.noface.png`` holding the centre square
of the image (what ``finetune`` trains on; ``extract`` reads it as "no face"). Both commands decode images with
:func:`affectfuse.faces.images.read_image` (EXIF orientation applied), detect with the default MTCNN, keep the
largest face and cut it with :func:`affectfuse.faces.plan.crop_faces` from the extractor's plan, so a crop
written by one is the crop the other would make.

Location: ``$AFFECTFUSE_CACHE_DIR/face_crops`` or ``~/.cache/affectfuse/face_crops`` (outside the
repository); ``extract --crop-cache DIR`` / ``finetune --crop-cache DIR`` choose another.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from affectfuse.utils import cache_root

VERSION = "v3"  # v2: images decoded by read_image (EXIF-aware); v3: area pre-shrink in whole blocks (align.py)


def default_cache_dir() -> Path:
    return cache_root() / "face_crops"


def cache_key(path: Path, spec, align: str) -> str:
    """sha1 of the file's identity (resolved path, bytes, mtime) and the crop geometry ``spec`` (a CropSpec);
    OSError if unreadable. (A margin-free geometry keeps the key text it had before margins existed.)"""
    st = Path(path).stat()
    text = f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}|{spec.size}|{align}|{spec.tag()}|{VERSION}"
    return hashlib.sha1(text.encode()).hexdigest()


def centre_square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop of (H, W, 3) uint8 resized to (size, size, 3) (bicubic)."""
    from PIL import Image

    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = Image.fromarray(image[top:top + s, left:left + s])
    return np.asarray(crop.resize((size, size), Image.BICUBIC))


class CropCache:
    """Crops of one alignment kind (``"mtcnn"``: detected + aligned; ``"none"``: centre squares) under ``root``."""

    def __init__(self, root: str | os.PathLike | None = None, align: str = "mtcnn"):
        self.root, self.align = Path(root) if root else default_cache_dir(), align

    def files(self, path, spec) -> tuple[Path, Path]:
        """(face crop file, no-face file) of an image for a CropSpec; OSError when the image cannot be stat'ed."""
        key = cache_key(Path(path), spec, self.align)
        folder = self.root / f"{self.align}-{spec.size}" / key[:2]
        return folder / f"{key}.png", folder / f"{key}.noface.png"

    def lookup(self, path, spec) -> Path | None:
        """The cached crop file of an image (``.noface.png`` when no face was found), or None."""
        try:
            return next((f for f in self.files(path, spec) if f.exists()), None)
        except OSError:
            return None

    def read(self, path, spec) -> tuple[np.ndarray, bool] | None:
        """((size, size, 3) uint8 RGB crop, face found) from the cache, or None when not cached."""
        from PIL import Image

        hit = self.lookup(path, spec)
        if hit is None:
            return None
        with Image.open(hit) as im:
            return np.asarray(im.convert("RGB")), not hit.name.endswith(".noface.png")

    def write(self, path, spec, crop: np.ndarray, found: bool) -> Path:
        """Store a (size, size, 3) uint8 crop (for ``found`` False: the image's centre square) atomically."""
        from PIL import Image

        from affectfuse.utils import atomic_path

        face, noface = self.files(path, spec)
        target = face if found else noface
        with atomic_path(target) as tmp:
            Image.fromarray(np.asarray(crop, dtype=np.uint8)).save(tmp, format="PNG")
        return target
