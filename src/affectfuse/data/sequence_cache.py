"""Fixed-length sequences kept on disk: a training set larger than RAM (issue 16).

:func:`affectfuse.data.sequences.load_sequences` brings every video of a feature set to (T, D) rows. In RAM
that is N x T x D float32: 4.9 GB for 16,000 Hume-Reaction clips with 1024-d audio and 1536-d face features
at 30 steps. Past a size (:func:`in_ram_limit_bytes`) the rows are instead written once, in the order of the
ids, to one ``.npy`` file per feature set and read back batch by batch (:class:`DiskRows`); the per-clip
``.npz`` files stay the source of truth.

Layout, inside the feature-set folder (a dot folder: no scan of the store takes it for features)::

    <feature_set>/.sequences/<key>/values.npy   # (N, T, D) float32, rows in the order of ids.json
                                 /mask.npy     # (N, T) bool
                                 /ids.json     # ids, steps, mode, dim, the source files' fingerprint

``<key>`` hashes the ids, steps, mode, dim and each source file's name, size and modification time, so a
changed, added or rewritten feature file makes a new cache and a stale one is never read. ``ids.json`` is
written last: a cache without it is unfinished and is rebuilt. Deleting ``.sequences`` is always safe.

Reads use ``os.pread`` into a fresh buffer rather than ``np.load(mmap_mode="r")``: pages touched through a
mapping count in the process's resident set until the kernel reclaims them (a whole epoch would show the
whole file), while read pages go to the page cache only; consecutive rows are read in one call.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from affectfuse.utils import atomic_path, write_json_atomic

CACHE_DIR = ".sequences"
IN_RAM_ENV = "AFFECTFUSE_SEQUENCES_IN_RAM_MB"
DEFAULT_IN_RAM_MB = 256   # per load; 1024 kept a paper-dims validation split (0.98 GB) in RAM on top of a 1.8 GB run
_VERSION = 1


def in_ram_limit_bytes() -> int:
    """Largest total size of stacked (N, T, D) float32 arrays kept in RAM: ``AFFECTFUSE_SEQUENCES_IN_RAM_MB``
    (MB; 0 = always on disk), default 256 MB, per load (each split). Larger sets go to the disk cache:
    reading batches from it costs < 1 % of a training step (docs/benchmarks.md), and with the rows on disk
    a training process stays under 2 GB (torch alone is ~0.55 GB).

    Raises:
        ValueError: the variable is not a non-negative number.
    """
    raw = os.environ.get(IN_RAM_ENV, str(DEFAULT_IN_RAM_MB))
    try:
        mb = float(raw)
    except ValueError:
        mb = -1.0
    if not mb >= 0:
        raise ValueError(f"{IN_RAM_ENV} must be a number of MB >= 0, got {raw!r}")
    return int(mb * 1e6)


class DiskRows:
    """(N, *row) array of a ``.npy`` file, read by rows (never mapped whole).

    ``take(rows)`` -> (len(rows), *row) array; ``shape`` and ``dtype`` as numpy's. Thread-safe (``pread``).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with open(self.path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(fh)
            self.offset = fh.tell()
        if fortran or not shape:
            raise ValueError(f"{self.path}: expected a C-ordered array with rows, got shape {shape}")
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, rows) -> np.ndarray:
        """Rows ``rows`` (1-D ints, any order, repeats allowed) -> a new (len(rows), *row) array."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= self.shape[0]):
            raise IndexError(f"{self.path}: row index out of range 0..{self.shape[0] - 1}")
        out = np.empty((rows.size, *self.shape[1:]), dtype=self.dtype)
        flat = out.reshape(rows.size, -1).view(np.uint8)
        start = 0
        while start < rows.size:  # one read per run of consecutive rows
            stop = start + 1
            while stop < rows.size and rows[stop] == rows[stop - 1] + 1:
                stop += 1
            self._read_into(flat[start:stop], int(rows[start]))
            start = stop
        return out

    def _read_into(self, buf: np.ndarray, row: int) -> None:
        view, pos = memoryview(buf).cast("B"), self.offset + row * self.row_bytes
        while len(view):
            n = os.preadv(self._fd, [view], pos)
            if n <= 0:
                raise OSError(f"{self.path}: file ends before row {row} (truncated cache)")
            view, pos = view[n:], pos + n

    def slice(self, start: int, stop: int) -> np.ndarray:
        return self.take(np.arange(start, min(stop, self.shape[0])))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        try:
            self.close()
        except OSError:
            pass

    def __getstate__(self):  # worker processes reopen the file
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])


def cache_key(files: list[Path], ids: list[str], steps: int, mode: str, dim: int) -> str:
    """Hash of what decides the cached rows; a missing source file raises ``OSError``."""
    h = hashlib.sha256(json.dumps([_VERSION, list(map(str, ids)), steps, mode, dim]).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def open_cached(folder: Path) -> tuple[DiskRows, np.ndarray] | None:
    """(values, mask) of a finished cache in ``folder``, else None."""
    if not (folder / "ids.json").is_file():
        return None
    try:
        return DiskRows(folder / "values.npy"), np.load(folder / "mask.npy", allow_pickle=False)
    except (OSError, ValueError):
        return None


def write_cache(folder: Path, rows, n: int, steps: int, dim: int) -> None:
    """Write ``rows`` (an iterable of (i, (steps, dim) float32, (steps,) bool) in any order of i, each i
    at most once; missing i stay zero / masked) to ``folder``'s ``values.npy`` and ``mask.npy``. The cache
    counts as finished only once :func:`finish_cache` wrote its manifest.

    Memory stays at one row: values are written with ``pwrite`` into a file of the final size.
    """
    folder.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((n, steps), dtype=bool)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": (n, steps, dim)}
    with atomic_path(folder / "values.npy") as tmp:
        with open(tmp, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, header)
            offset = fh.tell()
            row_bytes = steps * dim * 4
            fh.truncate(offset + n * row_bytes)  # zeros, sparse until written
            for i, values, m in rows:
                os.pwrite(fh.fileno(), np.ascontiguousarray(values, dtype=np.float32).tobytes(), offset + i * row_bytes)
                mask[i] = m
    with atomic_path(folder / "mask.npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, mask)


def finish_cache(folder: Path, manifest: dict) -> tuple[DiskRows, np.ndarray]:
    """Mark the cache in ``folder`` finished (its ``ids.json``) and open it -> (values, (N, T) mask)."""
    write_json_atomic(folder / "ids.json", manifest)
    return DiskRows(folder / "values.npy"), np.load(folder / "mask.npy", allow_pickle=False)


def remove_unfinished(folder: Path) -> None:
    """Remove a cache folder that has no ``ids.json`` (a build that died)."""
    if folder.is_dir() and not (folder / "ids.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)
