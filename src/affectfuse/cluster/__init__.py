"""Scale-out on Ray (optional extra ``affectfuse[ray]``): cluster feature extraction and parallel training.

- :mod:`affectfuse.cluster.ray_extract`: ``affectfuse extract --ray [ADDRESS]`` (actors load the models once,
  write to the same resumable feature store, survive worker deaths).
- :mod:`affectfuse.cluster.ray_sweep`: ``affectfuse ablate --ray [ADDRESS]`` (one Ray task per training run,
  the same tables and prediction files as the serial command).

Nothing here imports Ray at import time; ``docs/cluster.md`` has the cluster recipes.
"""

from __future__ import annotations

RAY_MISSING = "Ray is not installed: pip install 'affectfuse[ray]' (or pip install 'ray>=2.9')"


def require_ray():
    """Import and return ``ray``, or raise ImportError saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(RAY_MISSING) from exc
    return ray
