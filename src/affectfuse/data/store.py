"""The feature store: what every extractor writes and every dataset reads.

Layout on disk (one folder per feature set)::

    <root>/<feature_set>/
        meta.json        # name, dim, rate, extractor, weights, random_weights, versions
        index.csv        # id, file, steps, start_s, end_s, valid_fraction (rebuilt by write_index)
        <key>.npz        # values (T, D) float32, timestamps (T,) float64 seconds, mask (T,) bool, id

``<key>`` is :func:`store_key` of the video id: the id itself when it is plain (letters, digits, ``._-``,
not starting with a dot), else percent-escaped, so two different ids never share a file. Every file holds
its id and :meth:`FeatureSet.read` checks it.

Per-video files are the source of truth and are written atomically (the temporary file is a dotfile
``.<key>.npz.<host>-<pid>.<random>.tmp``, which no scan takes for a feature file; a dead writer's leftovers are
removed by the next :meth:`FeatureSet.create`), so a crashed or parallel extraction never leaves a
half-written file and a resumed one skips exactly the ids whose file a finished write produced.

The reader also accepts MuSe-2022 feature folders: ``<folder>/<id>.csv`` with columns
``File_ID, timestamp, f1..fn`` (timestamps in milliseconds by default, see :func:`read_muse_csv`).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from affectfuse.faces.plan import recorded_crop
from affectfuse.utils import atomic_path, clean_stale_temps, write_json_atomic, write_text_atomic

META_FILE = "meta.json"
INDEX_FILE = "index.csv"


class FeatureStoreError(ValueError):
    """A feature file or folder is malformed; the message names the file and the cause."""


@dataclass
class VideoFeatures:
    """Features of one video from one extractor.

    Attributes:
        id: video id as the dataset names it (e.g. ``"00001"``, ``"video10_1_left"``).
        values: (T, D) float32 feature rows.
        timestamps: (T,) float64 time of each row in seconds from the start of the video.
        mask: (T,) bool, False where the row is not valid (no face found, silence, padding).
    """

    id: str
    values: np.ndarray
    timestamps: np.ndarray
    mask: np.ndarray = None  # type: ignore[assignment]

    def __post_init__(self):
        self.values = np.asarray(self.values, dtype=np.float32)
        if self.values.ndim != 2:
            raise FeatureStoreError(f"{self.id}: values must be (T, D), got shape {self.values.shape}")
        steps = self.values.shape[0]
        self.timestamps = np.asarray(self.timestamps, dtype=np.float64).reshape(-1)
        if self.timestamps.shape[0] != steps:
            raise FeatureStoreError(
                f"{self.id}: {steps} feature rows but {self.timestamps.shape[0]} timestamps")
        if self.mask is None:
            self.mask = np.ones(steps, dtype=bool)
        self.mask = np.asarray(self.mask, dtype=bool).reshape(-1)
        if self.mask.shape[0] != steps:
            raise FeatureStoreError(f"{self.id}: {steps} feature rows but {self.mask.shape[0]} mask values")

    @property
    def steps(self) -> int:
        return self.values.shape[0]

    @property
    def dim(self) -> int:
        return self.values.shape[1]


@dataclass
class FeatureSetMeta:
    """Self-description of a feature set; written to ``meta.json``.

    ``rate`` is rows per second (``None`` when rows are not evenly spaced, e.g. one row per frame of a
    variable-frame-rate video). ``random_weights`` is True when the extractor ran without its
    pretrained weights (testing only); such features must never be mistaken for real ones.
    """

    name: str
    dim: int
    rate: float | None = None
    extractor: str = ""
    weights: dict | None = None
    random_weights: bool = False
    modality: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        from affectfuse import __version__

        return {"name": self.name, "dim": self.dim, "rate": self.rate, "extractor": self.extractor,
                "weights": self.weights, "random_weights": self.random_weights,
                "modality": self.modality, "extra": self.extra, "affectfuse_version": __version__}

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSetMeta":
        return cls(name=d["name"], dim=int(d["dim"]), rate=d.get("rate"), extractor=d.get("extractor", ""),
                   weights=d.get("weights"), random_weights=bool(d.get("random_weights", False)),
                   modality=d.get("modality", ""), extra=d.get("extra") or {})


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_PLAIN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
MAX_KEY_BYTES = 240  # file-name limit (255) less the ".npz" and temp-file decorations


def safe_name(video_id: str) -> str:
    """The store key of affectfuse < 0.2 (``[00001]`` -> ``_00001_``): NOT injective, read for old folders only."""
    return _UNSAFE.sub("_", str(video_id))


def store_key(video_id: str) -> str:
    """Injective file stem for a video id: plain ids unchanged, others percent-escaped (UTF-8).

    ``"00001"`` -> ``00001``, ``"a/b"`` -> ``a%2Fb``, ``"clip 1"`` -> ``clip%201``, ``".."`` -> ``%2E.``;
    ``%`` itself is escaped, so ``urllib.parse.unquote(store_key(i)) == i`` for every id. An empty id, or
    one whose key exceeds the file-name limit, raises :class:`FeatureStoreError`.
    """
    from urllib.parse import quote

    vid = str(video_id)
    if not vid:
        raise FeatureStoreError("empty video id")
    key = vid if _PLAIN.fullmatch(vid) else quote(vid, safe="")
    if key.startswith("."):  # a dotfile would be taken for a temporary file
        key = "%2E" + key[1:]
    if len(key.encode()) > MAX_KEY_BYTES:
        raise FeatureStoreError(f"video id {vid[:60]!r}... is too long for a file name ({len(key.encode())} bytes)")
    return key


class FeatureSet:
    """One folder of per-video features with a ``meta.json``.

    >>> fs = FeatureSet.create("feats/deepspectrum", FeatureSetMeta("deepspectrum", 1024, rate=2.0))
    >>> fs.write(VideoFeatures("00001", values, timestamps))
    >>> fs["00001"].values.shape
    (20, 1024)
    """

    def __init__(self, path: str | Path, meta: FeatureSetMeta):
        self.path = Path(path)
        self.meta = meta

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, meta: FeatureSetMeta, exist_ok: bool = True) -> "FeatureSet":
        """Create (or reopen, when compatible) a feature set folder."""
        path = Path(path)
        meta_path = path / META_FILE
        if meta_path.exists():
            existing = cls.open(path)
            if not exist_ok:
                raise FeatureStoreError(f"{path}: feature set exists already")
            if existing.meta.dim != meta.dim or existing.meta.random_weights != meta.random_weights:
                raise FeatureStoreError(
                    f"{path}: existing feature set has dim={existing.meta.dim}, "
                    f"random_weights={existing.meta.random_weights}; refusing to mix in dim={meta.dim}, "
                    f"random_weights={meta.random_weights}. Use another output folder.")
            was, now = existing.meta.weights or {}, meta.weights or {}
            if "path" in was and "path" in now and was.get("sha256") != now.get("sha256"):  # both name the file
                raise FeatureStoreError(
                    f"{path}: existing features were made with weights {was.get('path')} (sha256 "
                    f"{str(was.get('sha256'))[:12]}...); refusing to mix in features of {now.get('path')} (sha256 "
                    f"{str(now.get('sha256'))[:12]}...). Use another output folder.")
            was_crop, now_crop = (recorded_crop((m.extra or {}).get("input")) for m in (existing.meta, meta))
            if was_crop and now_crop and was_crop != now_crop:  # e.g. a network whose declared margin changed
                raise FeatureStoreError(
                    f"{path}: existing features were cut from {was_crop.size} px '{was_crop.tag()}' face crops; "
                    f"refusing to mix in features of {now_crop.size} px '{now_crop.tag()}' crops. Use another "
                    "output folder.")
            existing.clean()
            return existing
        path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(meta_path, meta.to_dict())
        return cls(path, meta)

    def clean(self) -> list[Path]:
        """Remove temporary files that writers which died (``kill -9``, power loss) left here."""
        return clean_stale_temps(self.path)

    @classmethod
    def open(cls, path: str | Path) -> "FeatureSet":
        """Open an affectfuse feature folder, or a MuSe-2022 CSV folder (see :class:`CsvFeatureSet`)."""
        path = Path(path)
        if not path.is_dir():
            raise FeatureStoreError(f"{path}: feature folder does not exist")
        meta_path = path / META_FILE
        if meta_path.is_file():
            try:
                meta = FeatureSetMeta.from_dict(json.loads(meta_path.read_text()))
            except (json.JSONDecodeError, KeyError) as exc:
                raise FeatureStoreError(f"{meta_path}: unreadable feature-set metadata ({exc})") from exc
            return cls(path, meta)
        if any(path.glob("*.csv")):
            return CsvFeatureSet(path)
        raise FeatureStoreError(
            f"{path}: neither an affectfuse feature set (no {META_FILE}) nor a folder of MuSe-style CSV files")

    # -- access --------------------------------------------------------------------------------
    def file_for(self, video_id: str) -> Path:
        """Where ``video_id``'s features are written: ``<folder>/<store_key(id)>.npz``."""
        return self.path / f"{store_key(video_id)}.npz"

    def _files(self) -> list[Path]:
        """Finished feature files: ``*.npz`` without dotfiles (temporary files never match)."""
        return [f for f in sorted(self.path.glob("*.npz")) if not f.name.startswith(".")]

    def _find(self, video_id: str) -> Path | None:
        """The file holding ``video_id``: its key's file, else (a folder written before keys were
        injective) the old ``safe_name`` file when the id stored in it is this one."""
        file = self.file_for(video_id)
        if file.is_file():
            return file
        legacy = self.path / f"{safe_name(video_id)}.npz"
        if legacy != file and legacy.is_file() and self._read_id(legacy) == str(video_id):
            return legacy
        return None

    def ids(self) -> list[str]:
        """Ids of every stored video (scanned from the files, so always current)."""
        return [self._read_id(f) for f in self._files()]

    def _read_id(self, file: Path) -> str:
        try:
            with np.load(file, allow_pickle=False) as z:
                return str(z["id"])
        except Exception as exc:
            raise FeatureStoreError(f"{file}: unreadable feature file ({exc})") from exc

    def __contains__(self, video_id: str) -> bool:
        """True when a finished, readable file holds ``video_id`` (a broken or foreign file is not trusted)."""
        try:
            file = self._find(video_id)
            return file is not None and self._read_id(file) == str(video_id)
        except FeatureStoreError:
            return False

    def __getitem__(self, video_id: str) -> VideoFeatures:
        return self.read(video_id)

    def __len__(self) -> int:
        return len(self._files())

    def read(self, video_id: str) -> VideoFeatures:
        """Features of ``video_id``; the id stored in the file must be ``video_id`` (else an error naming both)."""
        file = self._find(video_id)
        if file is None:
            raise FeatureStoreError(f"{self.path}: no features for video {video_id!r} "
                                    f"(expected {self.file_for(video_id).name})")
        try:
            with np.load(file, allow_pickle=False) as z:
                vf = VideoFeatures(str(z["id"]), z["values"], z["timestamps"], z["mask"])
        except FeatureStoreError:
            raise
        except Exception as exc:
            raise FeatureStoreError(f"{file}: unreadable feature file ({exc})") from exc
        if vf.id != str(video_id):
            raise FeatureStoreError(f"{file}: holds the features of video {vf.id!r}, not of {video_id!r}")
        if vf.dim != self.meta.dim:
            raise FeatureStoreError(f"{file}: dim {vf.dim} differs from the feature set's {self.meta.dim}")
        return vf

    # -- writing -------------------------------------------------------------------------------
    def write(self, features: VideoFeatures) -> Path:
        """Atomically write one video's features (replacing any previous file for that id)."""
        if features.dim != self.meta.dim:
            raise FeatureStoreError(
                f"{self.path}: video {features.id!r} has dim {features.dim}, feature set expects {self.meta.dim}")
        target = self.file_for(features.id)
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, id=np.array(features.id), values=features.values,
                         timestamps=features.timestamps, mask=features.mask)
        return target

    def write_index(self) -> Path:
        """Rebuild ``index.csv`` (id, file, steps, start_s, end_s, valid_fraction) from the files."""
        rows = []
        for vid in self.ids():
            vf = self.read(vid)
            start = float(vf.timestamps[0]) if vf.steps else 0.0
            end = float(vf.timestamps[-1]) if vf.steps else 0.0
            valid = float(vf.mask.mean()) if vf.steps else 0.0
            rows.append([vid, self._find(vid).name, vf.steps, f"{start:.3f}", f"{end:.3f}", f"{valid:.4f}"])
        import io

        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["id", "file", "steps", "start_s", "end_s", "valid_fraction"])
        w.writerows(rows)
        target = self.path / INDEX_FILE
        write_text_atomic(target, buf.getvalue())
        return target


def read_muse_csv(file: str | Path, timestamp_unit: str = "ms") -> VideoFeatures:
    """Read one MuSe-2022 feature CSV (``File_ID, timestamp, f1..fn``) as :class:`VideoFeatures`.

    ``timestamp_unit`` is ``"ms"`` (MuSe's convention) or ``"s"``.
    """
    import pandas as pd

    file = Path(file)
    try:
        df = pd.read_csv(file)
    except Exception as exc:
        raise FeatureStoreError(f"{file}: unreadable CSV ({exc})") from exc
    cols = list(df.columns)
    lower = [c.lower() for c in cols]
    if "timestamp" not in lower:
        raise FeatureStoreError(f"{file}: no 'timestamp' column (columns: {cols[:5]}...)")
    ts_col = cols[lower.index("timestamp")]
    id_col = cols[lower.index("file_id")] if "file_id" in lower else None
    feat_cols = [c for c in cols if c not in (ts_col, id_col)]
    if not feat_cols:
        raise FeatureStoreError(f"{file}: no feature columns")
    values = df[feat_cols].to_numpy(dtype=np.float32)
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).any(axis=1).sum())
        raise FeatureStoreError(f"{file}: {bad} rows contain NaN or infinite feature values")
    scale = {"ms": 1e-3, "s": 1.0}[timestamp_unit]
    timestamps = df[ts_col].to_numpy(dtype=np.float64) * scale
    video_id = str(df[id_col].iloc[0]) if id_col is not None and len(df) else file.stem
    return VideoFeatures(video_id, values, timestamps)


class CsvFeatureSet(FeatureSet):
    """Read-only view of a MuSe-2022 feature folder ``<folder>/<id>.csv``."""

    def __init__(self, path: str | Path, timestamp_unit: str = "ms"):
        path = Path(path)
        files = sorted(path.glob("*.csv"))
        if not files:
            raise FeatureStoreError(f"{path}: no CSV feature files")
        self.timestamp_unit = timestamp_unit
        first = read_muse_csv(files[0], timestamp_unit)
        steps = np.diff(first.timestamps)
        rate = float(1.0 / np.median(steps)) if steps.size and np.median(steps) > 0 else None
        super().__init__(path, FeatureSetMeta(name=path.name, dim=first.dim, rate=rate, extractor="muse-csv"))

    def file_for(self, video_id: str) -> Path:
        return self.path / f"{video_id}.csv"

    def ids(self) -> list[str]:
        return [f.stem for f in sorted(self.path.glob("*.csv"))]

    def __len__(self) -> int:
        return len(self.ids())

    def read(self, video_id: str) -> VideoFeatures:
        file = self.file_for(video_id)
        if not file.is_file():
            raise FeatureStoreError(f"{self.path}: no features for video {video_id!r} (expected {file.name})")
        vf = read_muse_csv(file, self.timestamp_unit)
        vf.id = video_id
        if vf.dim != self.meta.dim:
            raise FeatureStoreError(f"{file}: {vf.dim} feature columns, other files have {self.meta.dim}")
        return vf

    def write(self, features: VideoFeatures) -> Path:
        raise FeatureStoreError(f"{self.path}: MuSe CSV feature folders are read-only")

    def write_index(self) -> Path:
        raise FeatureStoreError(f"{self.path}: MuSe CSV feature folders are read-only")
