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


def add_extract_arguments(p) -> None:
    """The ``--ray`` options of ``affectfuse extract``."""
    g = p.add_argument_group("Ray cluster (affectfuse[ray])")
    g.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="process videos on Ray actors; ADDRESS of a running cluster ('auto', 'host:6379', "
                        "'ray://host:10001'); without ADDRESS: RAY_ADDRESS or a local cluster")
    g.add_argument("--ray-workers", type=int, default=None,
                   help="actors (default: cluster CPUs / --cpus-per-worker, or GPUs / --gpus-per-worker)")
    g.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs per actor (also its torch threads)")
    g.add_argument("--gpus-per-worker", type=float, default=None,
                   help="GPUs per actor (default: 1 when the cluster has GPUs, else 0); an actor given a GPU "
                        "runs its networks on cuda")
    g.add_argument("--max-attempts", type=int, default=3,
                   help="worker deaths a video may cause before it is recorded in failures.csv")
