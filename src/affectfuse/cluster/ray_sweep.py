"""``affectfuse eri ablate --ray``: training sweeps (seeds x modality / feature sets x tricks) as Ray tasks.

The driver loads the train and val splits once and puts them in Ray's object store; each planned run
(:func:`affectfuse.training.ablation.plan`) becomes one Ray task calling :func:`affectfuse.training.ablation.run_one`,
the same function the serial command runs, so every run folder (``config.yaml``, ``metrics.csv``,
``best.pt``, ``last.pt``, ``result.json``, ``val_predictions.csv`` for ``affectfuse ensemble``) and the
tables (:func:`affectfuse.training.ablation.write_results`) are the serial command's.

Failures: a run that raises is recorded in ``<out>/failures.csv`` and the others go on. A worker that dies
(OOM kill, lost node) is retried by Ray (``max_retries``) and the retry resumes from the run's
``last.pt`` (``fit(..., resume=True)``), so at most one epoch is lost. Finished runs are skipped when the
sweep is run again. Run folders must be on a file system every node sees.

Feature-set sweeps: ``--sets`` takes feature-set names joined by ``+`` as well as A/V/AV, e.g.
``--features ds=... eg=... vit=... --sets ds+vit eg+vit`` trains one row per combination.
"""

from __future__ import annotations

import logging

from affectfuse.utils import FailureLog

log = logging.getLogger(__name__)


def _run_task(r: dict, out: str, recipe, overrides: list[str], train, val, meta: dict, task: dict,
              threads: int) -> dict:
    import torch

    from affectfuse.training.ablation import run_one

    torch.set_num_threads(max(1, threads))
    return run_one(r, out, recipe, list(overrides) + [f"train.threads={max(1, threads)}", "train.progress=false"],
                   train, val, meta, task)


def ray_runs(runs: list[dict], out, recipe, overrides: list[str], train, val, meta: dict, task: dict,
             failures: FailureLog, address: str | None = None, cpus_per_run: float = 1.0,
             gpus_per_run: float = 0.0, max_retries: int = 2, progress: bool = True) -> list[dict]:
    """Run every planned run as a Ray task; returns the ``ablation.csv`` rows in plan order.

    Args:
        runs: :func:`affectfuse.training.ablation.plan` entries (name, table, row, seed, overrides).
        out: the sweep folder (``runs/<name>/`` per run); shared by all nodes.
        recipe / overrides: recipes (shipped names or YAML paths, see ``resolve_config``) and ``key=value``
            overrides shared by every run.
        train / val: :class:`~affectfuse.data.sequences.SequenceData`, put in the object store once.
        failures: where runs that raise are recorded.
        cpus_per_run: CPUs reserved per task (also its torch threads).
    """
    from tqdm.auto import tqdm

    from affectfuse.cluster import require_ray
    from affectfuse.cluster.ray_extract import init_ray

    ray = require_ray()
    started = init_ray(address)
    try:
        train_ref, val_ref = ray.put(train), ray.put(val)  # one copy per node, not one per task
        remote = ray.remote(_run_task).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run,
                                               max_retries=max_retries, retry_exceptions=False)
        threads = max(1, int(cpus_per_run))
        futures = {remote.remote(r, str(out), recipe, list(overrides), train_ref, val_ref, meta, task, threads): r
                   for r in runs}
        rows: dict[str, dict] = {}
        bar = tqdm(total=len(runs), unit="run", disable=not progress, desc="sweep (ray)")
        pending = list(futures)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            r = futures[done[0]]
            try:
                rows[r["name"]] = ray.get(done[0])
            except Exception as exc:  # one bad run never stops the others
                cause = getattr(exc, "cause", None) or exc
                log.error("%s failed: %s", r["name"], cause)
                failures.add(r["name"], cause if isinstance(cause, BaseException) else exc)
            bar.update(1)
        bar.close()
        return [rows[r["name"]] for r in runs if r["name"] in rows]
    finally:
        if started:
            ray.shutdown()
