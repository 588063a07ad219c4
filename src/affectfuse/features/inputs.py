"""What ``affectfuse extract`` reads: a folder of media, one media file, or a CSV manifest -> MediaItems."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".flv", ".m4v", ".mpg", ".mpeg", ".wmv")
AUDIO_EXTS = (".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac", ".opus")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def _numbered_images(names: list[str]) -> bool:
    names = [n for n in names if not n.startswith(".")]  # .DS_Store and the like
    return bool(names) and all(Path(n).suffix.lower() in IMAGE_EXTS and Path(n).stem.isdigit() for n in names)


def is_frame_folder(folder: Path) -> bool:
    """An Aff-Wild2 ``cropped_aligned/<video>/`` style folder: images only, every name a frame number."""
    return _numbered_images([p.name for p in folder.iterdir() if p.is_file()])


def is_still_input(path: Path) -> bool:
    """An image file or a frame folder: decoded as images (faces only, no audio), not by PyAV."""
    return path.is_dir() or path.suffix.lower() in IMAGE_EXTS


@dataclass(frozen=True)
class MediaItem:
    """One input: ``id`` (the feature-store key) and the media ``path``."""

    id: str
    path: Path


def _canonical_id(value: str) -> str:
    vid = str(value).strip()
    return vid[1:-1].strip() if len(vid) >= 2 and vid[0] == "[" and vid[-1] == "]" else vid


def check_unique_ids(items: list[MediaItem], source: str | os.PathLike) -> list[MediaItem]:
    """``items`` when every id is distinct, else one ValueError listing every input of every shared id.

    Two inputs with one id would write one feature file (``clip.mp4`` and ``clip.wav``, or the same
    row twice in a manifest), so the second would silently replace the first."""
    groups: dict[str, list[Path]] = {}
    for item in items:
        groups.setdefault(item.id, []).append(item.path)
    shared = {vid: paths for vid, paths in groups.items() if len(paths) > 1}
    if shared:
        lines = [f"  id {vid!r}: " + ", ".join(str(p) for p in paths) for vid, paths in sorted(shared.items())]
        raise ValueError(f"{source}: {len(shared)} id(s) shared by several inputs (each would overwrite the "
                         "other's features); rename the files or give ids in a CSV:\n" + "\n".join(lines))
    return items


def find_inputs(source: str | os.PathLike, media_dir: str | os.PathLike | None = None) -> list[MediaItem]:
    """Media to extract from ``source``: a folder (searched recursively), one media file, or a CSV.

    Folder: every video / audio / image file; id = path relative to the folder without its extension.
    A sub-folder of numbered images (Aff-Wild2 ``cropped_aligned/<video>/00001.jpg ...``) is one item, a
    video given as its frames (id = the sub-folder's relative path); the folder itself may be one too.
    CSV: a ``path`` column (relative to the CSV's folder) with an optional ``id`` column, or an ABAW5
    ``File_ID`` column (``[00001]`` -> id ``00001``, file ``<media_dir or CSV folder>/00001.mp4``).
    Ids must be distinct (:func:`check_unique_ids`; ``a/b.mp4`` and ``a_b.mp4`` are distinct ids with
    distinct store keys, ``clip.mp4`` and ``clip.wav`` are one id and refused).
    Raises FileNotFoundError / ValueError naming the file and the cause.
    """
    source = Path(source)
    if source.is_dir():
        if is_frame_folder(source):
            return [MediaItem(source.name, source)]
        exts = VIDEO_EXTS + AUDIO_EXTS + IMAGE_EXTS
        items = []
        for folder, _, names in os.walk(source):  # one pass; a frame folder's images are not listed one by one
            folder = Path(folder)
            if folder != source and _numbered_images(names):
                items.append(MediaItem(folder.relative_to(source).as_posix(), folder))
                continue
            items += [MediaItem((folder / n).relative_to(source).with_suffix("").as_posix(), folder / n)
                      for n in names if Path(n).suffix.lower() in exts]
        if not items:
            raise FileNotFoundError(f"{source}: no video, audio or image files ({', '.join(exts)})")
        return check_unique_ids(sorted(items, key=lambda i: (i.id, str(i.path))), source)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: input does not exist")
    if source.suffix.lower() != ".csv":
        return [MediaItem(source.stem, source)]
    with open(source, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    cols = {c.strip().lower(): c for c in (rows[0].keys() if rows else [])}
    base = Path(media_dir) if media_dir is not None else source.parent
    items, problems = [], []
    for line, row in enumerate(rows, start=2):
        if "path" in cols:
            path = Path(row[cols["path"]].strip())
            path = path if path.is_absolute() else base / path
            vid = row[cols["id"]].strip() if "id" in cols and row[cols["id"]].strip() else path.stem
        elif "file_id" in cols:
            vid = _canonical_id(row[cols["file_id"]])
            path = next((p for p in (base / f"{vid}.mp4", base / f"{row[cols['file_id']].strip()}.mp4")
                         if p.is_file()), base / f"{vid}.mp4")
        else:
            raise ValueError(f"{source}: a manifest needs a 'path' column (or ABAW5 'File_ID'); "
                             f"columns: {', '.join(cols.values())}")
        if not (path.is_file() or (path.is_dir() and is_frame_folder(path))):
            problems.append(f"{source}: row {line} (id {vid}): media file not found: {path}")
        items.append(MediaItem(_canonical_id(vid), path))
    if problems:
        raise FileNotFoundError("\n".join(problems))
    if not items:
        raise ValueError(f"{source}: no rows")
    return check_unique_ids(items, source)
