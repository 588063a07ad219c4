"""Claim files: several runs writing into one output folder share the work instead of all doing it.

Before a run works on an item it creates ``<folder>/.claims/<key>.claim`` with ``O_CREAT | O_EXCL``
(atomic on local file systems and NFSv3+); the file holds ``<host> <pid>``. Another run that finds the
claim skips the item; the holder deletes it when the item is written or has failed. A claim whose
process is gone from this host (``kill -9``), or that is older than ``max_age_s`` (a run on another
host), is stale and taken over. Two runs taking over one stale claim at the same instant may both do
that item; the atomic writes keep even that harmless.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

CLAIMS_DIR = ".claims"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Claims:
    """The claims of this process in ``folder`` (see the module doc); ``take(key)`` -> True when ours."""

    def __init__(self, folder: str | os.PathLike, max_age_s: float = 24 * 3600.0):
        self.dir = Path(folder) / CLAIMS_DIR
        self.max_age_s = float(max_age_s)
        self.me = f"{socket.gethostname()} {os.getpid()}"
        self.held: set[Path] = set()

    def _path(self, key: str) -> Path:
        return self.dir / f"{key}.claim"

    def _stale(self, path: Path) -> bool:
        """True when the claim's process is gone (same host) or the claim is older than ``max_age_s``."""
        try:
            host, _, pid = path.read_text().strip().rpartition(" ")
            age = time.time() - path.stat().st_mtime
        except (OSError, ValueError):
            return False  # being written or just released: not ours to judge
        if host == socket.gethostname() and pid.isdigit():
            return not _alive(int(pid))
        return age > self.max_age_s

    def take(self, key: str) -> bool:
        """Claim ``key``; False when a live run holds it."""
        path = self._path(key)
        self.dir.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._stale(path):
                    return False
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(self.me + "\n")
            self.held.add(path)
            return True
        return False

    def release(self, key: str) -> None:
        """Give ``key`` back (no error when it is not held)."""
        path = self._path(key)
        if path in self.held:
            self.held.discard(path)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def release_all(self) -> None:
        for path in list(self.held):
            with contextlib.suppress(OSError):
                path.unlink()
        self.held.clear()
        with contextlib.suppress(OSError):
            self.dir.rmdir()  # only when empty: other runs' claims stay
