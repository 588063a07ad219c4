"""What ``affectfuse extract`` reads: a folder of media, one media file, or a CSV manifest -> MediaItems."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".flv", ".m4v", ".mpg", ".mpeg", ".wmv")
AUDIO_EXTS = (".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac", ".opus")


@dataclass(frozen=True)
class MediaItem:
    """One input: ``id`` (the feature-store key) and the media ``path``."""

    id: str
    path: Path


def _canonical_id(value: str) -> str:
    vid = str(value).strip()
    return vid[1:-1].strip() if len(vid) >= 2 and vid[0] == "[" and vid[-1] == "]" else vid


def find_inputs(source: str | os.PathLike, media_dir: str | os.PathLike | None = None) -> list[MediaItem]:
    """Media to extract from ``source``: a folder (searched recursively), one media file, or a CSV.

    Folder: every video / audio file; id = path relative to the folder without its extension.
    CSV: a ``path`` column (relative to the CSV's folder) with an optional ``id`` column, or an ABAW5
    ``File_ID`` column (``[00001]`` -> id ``00001``, file ``<media_dir or CSV folder>/00001.mp4``).
    Raises FileNotFoundError / ValueError naming the file and the cause.
    """
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTS + AUDIO_EXTS)
        if not files:
            raise FileNotFoundError(f"{source}: no video or audio files ({', '.join(VIDEO_EXTS + AUDIO_EXTS)})")
        return [MediaItem(p.relative_to(source).with_suffix("").as_posix(), p) for p in files]
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
        if not path.is_file():
            problems.append(f"{source}: row {line} (id {vid}): media file not found: {path}")
        items.append(MediaItem(_canonical_id(vid), path))
    if problems:
        raise FileNotFoundError("\n".join(problems))
    if not items:
        raise ValueError(f"{source}: no rows")
    dup = sorted({i.id for i in items if sum(j.id == i.id for j in items) > 1})
    if dup:
        raise ValueError(f"{source}: duplicate ids {dup[:5]}")
    return items
