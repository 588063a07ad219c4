"""Small helpers used across stages: atomic writes, failure lists, seeding, cores and threads."""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()


TMP_SUFFIX = ".tmp"  # temporary files end here, never in a store's pattern (``*.npz``, ``*.csv`` ...)
TMP_PREFIX = "."  # and are dotfiles, which every scan of an output folder skips

#: errno values that mean the output itself cannot take more bytes: a run stops on them (no per-item retry).
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG})


def _host_tag() -> str:
    """6 hex digits naming this machine (temporary files in a folder shared by several machines)."""
    import hashlib
    import socket

    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


def _tmp_name(path: Path) -> str:
    """``.<name>.<host>-<pid>.<random>.tmp`` next to ``path``: a dotfile that matches no store pattern; host and
    pid let a later run tell a dead writer's leftover from a live one's file (see :func:`clean_stale_temps`)."""
    return f"{TMP_PREFIX}{path.name}.{_host_tag()}-{os.getpid()}."


def named_os_error(exc: OSError, path: str | os.PathLike) -> OSError:
    """``exc`` with ``filename`` set to ``path`` when it had none (a write into an open handle names no file)."""
    if exc.filename:
        return exc
    return type(exc)(exc.errno, exc.strerror or str(exc), str(path))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    A crash leaves either the old file or nothing, never a half-written one, so a resumed job can
    trust that every file it finds is complete. The temporary file is a dotfile ending in ``.tmp``
    (never ``*.npz`` or ``*.csv``), so no scan of the folder mistakes it for a finished file. An
    ``OSError`` (disk full, read-only folder) comes out naming ``path``.
    """
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_tmp_name(path), suffix=TMP_SUFFIX, dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, _FILE_MODE)  # mkstemp makes 0600; give the file the usual umask mode
        os.replace(tmp_path, path)
    except OSError as exc:
        raise named_os_error(exc, path) from exc
    finally:
        if tmp_path is not None and tmp_path.exists():
            with contextlib.suppress(OSError):
                tmp_path.unlink()


def cache_root() -> Path:
    """affectfuse's cache folder outside any repository: ``$AFFECTFUSE_CACHE_DIR``, else ``~/.cache/affectfuse``
    (face crops of photos, exported ONNX models)."""
    base = os.environ.get("AFFECTFUSE_CACHE_DIR")
    return Path(base) if base else Path.home() / ".cache" / "affectfuse"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def available_memory() -> int | None:
    """Bytes of memory the OS can give new processes without swapping (``MemAvailable`` of ``/proc/meminfo``;
    free pages elsewhere), ``None`` when unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def intra_op_threads() -> int:
    """Intra-op torch threads of ``extract`` and ``predict`` (every process of them): ``$AFFECTFUSE_THREADS``,
    default 1, at most the usable cores.

    2 threads cost 2.6-3x the CPU of 1 on a loaded 2-core machine for the same wall time on idle cores
    (docs/benchmarks.md, "End-to-end predict"): the cores go to processes (``extract --workers``), not threads.
    """
    return max(1, min(int(os.environ.get("AFFECTFUSE_THREADS", 1)), usable_cores()))


GC_FIRST_GENERATION = 50_000  # allocations between collections of the youngest generation (Python's default: 700)


def fewer_gc_passes() -> None:
    """Collect cyclic garbage every :data:`GC_FIRST_GENERATION` allocations instead of 700, for the short-lived
    processes of the CLI and the decoding workers. Importing torch, OpenCV, PyAV and ONNX Runtime allocates
    objects that live as long as the process, and the default thresholds traverse them again and again: 1.89-1.97
    CPU-s to import them and load MTCNN against 1.63-1.90 with this (4 interleaved rounds each, bytecode
    compiled; docs/benchmarks.md). Cycles are still collected, only in fewer passes."""
    gc.set_threshold(GC_FIRST_GENERATION, *gc.get_threshold()[1:])


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside the block, restored after (``extract`` and ``predict`` run
    under :func:`intra_op_threads`: MTCNN's boxes, hence the crops, move with the thread count, so both give the
    same features whatever the caller's setting)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def clean_stale_temps(folder: str | os.PathLike, max_age_s: float = 24 * 3600.0) -> list[Path]:
    """Delete temporary files (:func:`atomic_path`'s) left in ``folder`` by writers that died.

    A temp is stale when it was made on this machine by a process that is gone, or when it is older than
    ``max_age_s`` (a writer on another machine sharing the folder). Returns the files removed; unreadable
    ones are left.
    """
    import time

    removed, host = [], _host_tag()
    for tmp in Path(folder).glob(f"{TMP_PREFIX}*{TMP_SUFFIX}"):
        parts = tmp.name.rsplit(".", 3)  # [.<name>, <host>-<pid>, <random>, tmp]
        tag, _, pid = parts[1].partition("-") if len(parts) == 4 else ("", "", "")
        pid = int(pid) if tag == host and pid.isdigit() else None
        try:
            old = time.time() - tmp.stat().st_mtime > max_age_s
            if old or (pid is not None and pid != os.getpid() and not _pid_alive(pid)):
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue
    return removed


def inside(root: str | os.PathLike, name: str, what: str = "name") -> Path:
    """``root / name`` when it stays inside ``root`` after resolving ``..``, links and absolute parts.

    Raises :class:`UnsafePathError` naming ``name`` (``what`` says where it came from, e.g. "video name
    in frames.txt") and ``root``. An empty name, ``.`` and ``..`` are refused too.
    """
    root_path = Path(root).resolve()
    target = (root_path / name).resolve()
    if not str(name).strip() or target == root_path or not target.is_relative_to(root_path):
        raise UnsafePathError(f"{what} {name!r} would write outside the output folder {root} "
                              f"(to {target}); refusing it")
    return root_path / name


class UnsafePathError(ValueError):
    """A name taken from an input would make a file outside its output folder."""


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


class FailureLog:
    """Collects per-item failures of a batch job and writes them as CSV (``item,error``).

    The job goes on after a failure; the caller decides the exit code from ``len(log)``.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else None
        self.rows: list[tuple[str, str]] = []

    def add(self, item: str, error: BaseException | str) -> None:
        msg = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
        self.rows.append((str(item), msg.replace("\n", " ")))
        if self.path is not None:
            self.write()

    def write(self) -> None:
        import csv
        import io

        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["item", "error"])
        writer.writerows(self.rows)
        write_text_atomic(self.path, buf.getvalue())

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)


def parse_value(text: str):
    """A command-line ``KEY=VALUE`` value as YAML, with ``1e-3``-style numbers read as floats.

    (YAML 1.1, which PyYAML follows, reads ``1e-3`` as a string.)
    """
    import yaml

    value = yaml.safe_load(text) if text.strip() else ""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass


def dataclass_from_dict(cls, values: dict, what: str):
    """``cls(**values)`` for a dataclass, refusing unknown keys with one error that lists the valid ones
    (``what`` names the keys, e.g. ``"EXPR training option(s)"``)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown {what} {sorted(unknown)}; valid: {sorted(names)}")
    return cls(**values)
