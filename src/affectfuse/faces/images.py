"""Still images and Aff-Wild2 ``cropped_aligned`` folders through the same downstream path as video.

- A folder whose image names are all numbers (``cropped_aligned/<video>/<k:05d>.jpg``) is an
  Aff-Wild2 crop folder: the frame number comes from the name, numbers missing between 1 and the
  last one (or ``n_frames``) are frames with no face (``found=False``, black crops), and the images
  are taken as already aligned (resized to each requested size; landmarks unknown = NaN) unless
  ``aligned=False``.
- Any other folder (sorted by name) or a list of image files: faces are detected and aligned like
  video frames; frame numbers are 1..N in the given order; ``keep="main"`` takes the
  largest face of each image, ``keep="all"`` every face (track id = its index in the image).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from affectfuse.faces.mtcnn import MTCNN
from affectfuse.faces.pipeline import KEEP_MODES, FaceBatch, _Rows, default_detector
from affectfuse.faces.plan import CropSpec, FacePlan, crop_specs, resize_aligned
from affectfuse.media.decode import MediaError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB (EXIF orientation applied); MediaError naming the file when unreadable."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "image file does not exist")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise MediaError(path, "not a readable image (corrupt, truncated or unknown format)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _list_inputs(paths_or_folder) -> tuple[list[Path], bool, str]:
    """(files, numbered, source): numbered = Aff-Wild2 style ``<k>.jpg`` names in a folder."""
    if isinstance(paths_or_folder, (str, os.PathLike)):
        folder = Path(paths_or_folder)
        if folder.is_dir():
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise MediaError(folder, f"folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            numbered = all(p.stem.isdigit() for p in files)
            if numbered:
                files = sorted(files, key=lambda p: int(p.stem))
            return files, numbered, str(folder)
        return [folder], False, str(folder)
    files = [Path(p) for p in paths_or_folder]
    return files, False, ",".join(str(p) for p in files[:3]) + (",..." if len(files) > 3 else "")


def _cached(cache, path: Path, specs) -> list | None:
    """[(crop (S, S, 3) uint8, found)] per geometry when every one of ``path`` is cached alike, else None."""
    hits = [cache.read(path, s) for s in specs]
    if any(h is None for h in hits) or len({h[1] for h in hits}) != 1:
        return None
    return hits


def _add_cached(rows: _Rows, num: int, t: float, specs, hits: list) -> None:
    """One row from cached crops: found (box, landmarks, score unknown = NaN) or no face."""
    if not hits[0][1]:
        rows.add(num, t)
        return
    rows.add(num, t, box=np.full(4, np.nan, np.float32), score=float("nan"), tid=0,
             crops={s: crop for s, (crop, _) in zip(specs, hits)})


def _store(cache, path: Path, image: np.ndarray, specs, rows: _Rows, found: bool) -> None:
    """Write the row just added for ``path`` to the crop cache (no face: the image's centre square)."""
    import logging

    from affectfuse.faces.crop_cache import centre_square

    try:
        for s in specs:
            crop = rows.crops[s][-1] if found else centre_square(image, s.size)
            cache.write(path, s, crop, found)
    except OSError as exc:  # a full or read-only cache never stops extraction
        logging.getLogger(__name__).warning("face-crop cache not written (%s)", exc)


def _largest(det) -> int:
    areas = (det.boxes[:, 2] - det.boxes[:, 0]) * (det.boxes[:, 3] - det.boxes[:, 1])
    return int(np.argmax(areas))


def iter_face_images(paths_or_folder, crops: Sequence[CropSpec | FacePlan] = (), batch_size: int = 32,
                     keep: str = "main", detector: MTCNN | None = None, aligned: bool | None = None,
                     n_frames: int | None = None, fps: float | None = None,
                     crop_cache=None) -> Iterator[FaceBatch]:
    """Yield :class:`FaceBatch` es for image files or a folder (see the module docstring).

    Args:
        paths_or_folder: a folder, one image file, or a sequence of image files.
        crops: the crops to cut (FacePlans or CropSpecs; see :func:`affectfuse.faces.iter_faces`);
            pre-aligned images are only resized to each side (:func:`affectfuse.faces.plan.resize_aligned`).
        batch_size: rows per batch.
        keep: ``"main"`` (largest face per image) or ``"all"``.
        detector: MTCNN for images that are not pre-aligned (default: the pretrained one).
        aligned: ``None`` = auto (numbered folder -> pre-aligned); True/False forces it.
        n_frames: for numbered folders, the video's frame count, so trailing faceless frames are
            reported too (default: the largest number present).
        fps: frame rate for timestamps ``(k - 1) / fps``; ``None`` gives NaN timestamps.
        crop_cache: a :class:`affectfuse.faces.crop_cache.CropCache` (``keep="main"``, images that are not
            pre-aligned): an image whose crops are all cached is neither decoded nor detected (its box and
            landmarks are then NaN); new crops are written to it (shared with ``affectfuse finetune``).
    """
    if keep not in KEEP_MODES:
        raise ValueError(f"keep must be one of {KEEP_MODES}, got {keep!r}")
    files, numbered, source = _list_inputs(paths_or_folder)
    pre_aligned = numbered if aligned is None else aligned
    numbers = [int(p.stem) for p in files] if numbered else list(range(1, len(files) + 1))
    by_number = dict(zip(numbers, files))
    last = max(numbers + [n_frames or 0]) if numbered else len(files)
    frames = range(1, last + 1) if numbered else numbers
    specs = crop_specs(crops)
    rows = _Rows(specs, source)
    detector = None if pre_aligned else (detector or default_detector())
    cache = crop_cache if crop_cache is not None and detector is not None and keep == "main" else None
    pending: list[tuple[int, float, np.ndarray | None, Path | None, list | None]] = []

    def flush():
        images = [img for _, _, img, _, _ in pending if img is not None]
        dets = iter(detector.detect(images)) if detector is not None and images else iter(())
        for num, t, img, path, hits in pending:
            if hits is not None:  # every size cached: no decoding, no detection
                _add_cached(rows, num, t, specs, hits)
            elif img is None:
                rows.add(num, t)
            elif detector is None:
                h, w = img.shape[:2]
                rows.add(num, t, box=np.array([0, 0, w, h], np.float32), score=1.0, tid=0,
                         crops={s: resize_aligned(img, s) for s in specs})
            else:
                det = next(dets)
                if len(det) == 0:
                    rows.add(num, t)
                picks = [_largest(det)] if keep == "main" and len(det) else range(len(det))
                for p in picks:
                    rows.add(num, t, img, det.boxes[p], det.landmarks[p], float(det.scores[p]),
                             0 if keep == "main" else int(p))
                if cache is not None:
                    _store(cache, path, img, specs, rows, found=len(det) > 0)
        pending.clear()

    for num in frames:
        t = (num - 1) / fps if fps else float("nan")
        path = by_number.get(num)
        hits = _cached(cache, path, specs) if cache is not None and path is not None else None
        img = read_image(path) if path is not None and hits is None else None
        pending.append((num, t, img, path, hits))
        if len(pending) == batch_size:
            flush()
            yield rows.pop()
    if pending:
        flush()
        yield rows.pop()
