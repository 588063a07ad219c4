"""Shared test fixtures. Tests never touch the network and never need a GPU."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("AFFECTFUSE_OFFLINE", "1")
# `affectfuse extract` caches photo face crops under $AFFECTFUSE_CACHE_DIR (default ~/.cache): keep tests out of it
if "AFFECTFUSE_CACHE_DIR" not in os.environ:
    os.environ["AFFECTFUSE_CACHE_DIR"] = tempfile.mkdtemp(prefix="affectfuse-tests-")
    atexit.register(shutil.rmtree, os.environ["AFFECTFUSE_CACHE_DIR"], True)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real public data); tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _torch_threads():
    try:
        import torch

        torch.set_num_threads(min(2, os.cpu_count() or 1))
    except ImportError:
        pass
    yield
