"""``affectfuse extract --ray``: the extraction engine spread over a Ray cluster.

Each Ray actor (:class:`ExtractWorker`) builds the extractors ONCE and then processes whole videos: one
decoding pass (:func:`affectfuse.features.pipeline.decode_video`), the engine's
:class:`~affectfuse.features.pipeline.BatchRunner` (batches filled within the video), and the feature
store's atomic writes. The driver (:func:`ray_extract`) hands out one video at a time per actor, gathers
the failures into ``<out>/failures.csv``, shows progress and rebuilds each set's ``index.csv``.

Same semantics as the single-process engine: a (video, extractor) pair is done exactly when its file
has been renamed into place. Resume, and recovery from a dead worker, both rest on that:

- the driver skips every video whose files all exist (a resumed run redoes nothing);
- when an actor dies (``os._exit``, OOM kill, node lost), the driver starts a replacement actor and
  sends the dead actor's video again; the worker re-checks the store before working, so an extractor
  whose file landed before the death is not run (nor written) again;
- a video that has killed ``max_attempts`` workers is recorded as a failure, not retried forever.

The feature store must be on a file system every node sees (NFS, Lustre, ...): workers write to it
directly and only small reports travel back to the driver.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from affectfuse.data.store import FeatureSet, FeatureSetMeta
from affectfuse.features.inputs import MediaItem
from affectfuse.features.pipeline import FAILURES_FILE, SKIPPED_FILE, ExtractReport, _write_skipped
from affectfuse.utils import FailureLog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSpec:
    """How every worker builds its extractors (picklable; sent to each actor once).

    ``audio_options`` go to the factories that take them (``sample_rate``, ``window_s``, ``hop_s``);
    ``per_name``: extractor name -> factory options of that one only (the photo default's test-time views,
    :func:`affectfuse.features.registry.extractor_plan`); ``decode_options``: what
    :func:`affectfuse.features.decoding.decode_plan` takes besides fps, batch size and keep (``frame_rate``,
    ``strict``, ``crop_cache``, ``detect_fps``, ``detect_max_side``), as the single-process ``extract`` gets them;
    ``device`` is used as given unless the actor was granted a GPU, then it is ``"cuda"``.
    """

    out_root: str
    names: tuple[str, ...]
    weights: dict = field(default_factory=dict)
    random_weights: bool = False
    device: str = "cpu"
    audio_options: dict = field(default_factory=dict)
    fps: float | None = 5.0
    batch_size: int = 32
    keep: str = "main"
    threads: int = 1
    per_name: dict = field(default_factory=dict)
    decode_options: dict = field(default_factory=dict)


class ExtractWorker:
    """One Ray actor's state: the extractors (loaded once) and the feature sets they write to."""

    def __init__(self, spec: WorkerSpec):
        import sys

        from affectfuse.features.build import build_extractors
        from affectfuse.features.pipeline import feature_meta

        device = spec.device
        if _granted_gpus() and device == "cpu":
            device = "cuda"
        self.spec = spec
        self.extractors = build_extractors(list(spec.names), spec.weights, spec.random_weights, device,
                                           per_name=spec.per_name, **spec.audio_options)
        self.by_name = {e.name: e for e in self.extractors}
        if "torch" in sys.modules:  # only network extractors pull torch in (eGeMAPS does not)
            sys.modules["torch"].set_num_threads(max(1, int(spec.threads)))
        root = Path(spec.out_root)
        self.sets = {e.name: FeatureSet(root / e.name, feature_meta(e, spec.fps)) for e in self.extractors}

    def metas(self) -> dict[str, FeatureSetMeta]:
        """Each extractor's ``meta.json`` content (the driver creates the feature-set folders)."""
        return {n: fs.meta for n, fs in self.sets.items()}

    def process(self, item: MediaItem, names: Sequence[str]) -> dict:
        """Extract ``names`` from one video; returns ``{"id", "written", "skipped", "failures", "calls",
        "not_applicable"}`` (the last: ``(id, extractor, reason)`` of extractors that do not apply, e.g. no audio).

        Extractors whose file exists already (written before a worker death) are skipped, not redone.
        """
        from affectfuse.features.pipeline import BatchRunner, _safe_decode, decode_plan

        todo = [n for n in names if item.id not in self.sets[n]]
        failures = FailureLog(None)
        runner = BatchRunner([self.by_name[n] for n in todo], {n: self.sets[n] for n in todo}, failures,
                             self.spec.batch_size)
        if todo:
            plan = decode_plan(self.by_name, todo, self.spec.fps, self.spec.batch_size, self.spec.keep,
                               **self.spec.decode_options)
            runner.add(_safe_decode(item, plan), todo)
            runner.flush()
        return {"id": item.id, "written": [n for n in todo if runner.written[n]],
                "skipped": [n for n in names if n not in todo], "failures": list(failures),
                "calls": dict(runner.calls), "not_applicable": list(runner.not_applicable)}


def _granted_gpus() -> list:
    try:
        import ray

        return list(ray.get_gpu_ids()) if ray.is_initialized() else []
    except Exception:  # outside an actor
        return []


def init_ray(address: str | None = None, **kwargs) -> bool:
    """Connect to the cluster at ``address`` (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``) or start a
    local one; returns True when this call started Ray (the caller shuts it down). No-op when connected."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(include_dashboard=False, **kwargs)
    return True


def _gpus_default(gpus_per_worker: float | None) -> float:
    import ray

    if gpus_per_worker is not None:
        return float(gpus_per_worker)
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def _worker_died(exc, item: MediaItem, missing: list[str], attempts: dict, max_attempts: int, queue: list,
                 sets: dict) -> dict | None:
    """A worker died on ``item``: queue the video again (None) until it has killed ``max_attempts`` workers, then
    its result: the extractors whose files landed before a death are done, the others failed."""
    attempts[item.id] = attempts.get(item.id, 0) + 1
    log.warning("worker died on %s (attempt %d/%d): %s", item.path, attempts[item.id], max_attempts,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    if attempts[item.id] < max_attempts:
        queue.append((item, missing))
        return None
    landed = [n for n in missing if item.id in sets[n]]  # files renamed in before a death are done
    return {"id": item.id, "written": landed, "skipped": [], "calls": {}, "failures": [
        (f"{item.id} [{n}]", f"{item.path}: a worker died on this video {max_attempts} times "
                             f"(last: {type(exc).__name__})") for n in missing if n not in landed]}


def _tally(result: dict, item_id: str, written: dict, calls: dict, failures: FailureLog, not_applicable: list) -> None:
    """Add one video's result (from :meth:`ExtractWorker.process` or a failure) to the run's totals."""
    for n in result["written"]:
        written[n].append(item_id)
    for n, c in result["calls"].items():
        calls[n] += c
    for key, msg in result["failures"]:
        failures.add(key, msg)
    not_applicable += result.get("not_applicable", [])


def ray_extract(items: Sequence[MediaItem], spec: WorkerSpec, num_workers: int | None = None,
                cpus_per_worker: float = 1.0, gpus_per_worker: float | None = None, max_attempts: int = 3,
                address: str | None = None, progress: bool = True, worker_cls=ExtractWorker) -> ExtractReport:
    """Extract ``spec.names`` from ``items`` into ``spec.out_root`` with Ray actors.

    Args:
        items: the inputs (``find_inputs``); ids must be unique.
        spec: how workers build their extractors (see :class:`WorkerSpec`).
        num_workers: actors (default: cluster CPUs // cpus_per_worker, or GPUs // gpus_per_worker).
        cpus_per_worker / gpus_per_worker: resources per actor; ``gpus_per_worker=None`` asks for one GPU
            per actor when the cluster has GPUs, else none.
        max_attempts: worker deaths a video may cause before it is recorded as failed.
        address: Ray cluster address; ``None`` joins the Ray already initialised here or starts a local one.
        worker_cls: the actor class (a subclass of :class:`ExtractWorker`; tests inject crashes with it).
    Returns:
        :class:`ExtractReport` (ids written per extractor, ids skipped as done, failures, network calls).
    """
    import ray
    from ray.exceptions import RayActorError
    from tqdm.auto import tqdm

    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"input ids must be unique; repeated: {sorted({i for i in ids if ids.count(i) > 1})[:5]}")
    out_root = Path(spec.out_root)
    started = init_ray(address)
    try:
        gpus = _gpus_default(gpus_per_worker)
        res = ray.cluster_resources()
        if num_workers is None:
            num_workers = int(res.get("GPU", 0) // gpus) if gpus > 0 else int(res.get("CPU", 1) // cpus_per_worker)
        num_workers = max(1, int(num_workers))
        actor_cls = ray.remote(worker_cls).options(num_cpus=cpus_per_worker, num_gpus=gpus, max_restarts=0)

        def new_actor():
            return actor_cls.remote(spec)

        first = new_actor()
        metas = ray.get(first.metas.remote())  # a bad extractor / weights file fails here, once, clearly
        sets = {n: FeatureSet.create(out_root / n, metas[n]) for n in spec.names}
        if (out_root / FAILURES_FILE).exists():
            (out_root / FAILURES_FILE).unlink()
        failures = FailureLog(out_root / FAILURES_FILE)
        not_applicable: list = []
        todo = [(item, [n for n in spec.names if item.id not in sets[n]]) for item in items]
        skipped = [item.id for item, missing in todo if not missing]  # every file there: a resumed run redoes nothing
        todo = [(item, missing) for item, missing in todo if missing]
        written: dict[str, list[str]] = {n: [] for n in spec.names}
        calls: dict[str, int] = {n: 0 for n in spec.names}
        bar = tqdm(total=len(items), initial=len(skipped), unit="video", disable=not progress, desc="extract (ray)")
        idle = [first] + [new_actor() for _ in range(min(num_workers, len(todo)) - 1)]
        queue, attempts, pending = list(reversed(todo)), {}, {}
        while queue or pending:
            while queue and idle:
                actor, (item, missing) = idle.pop(), queue.pop()
                pending[actor.process.remote(item, missing)] = (actor, item, missing)
            done, _ = ray.wait(list(pending), num_returns=1)
            actor, item, missing = pending.pop(done[0])
            try:
                result = ray.get(done[0])
            except RayActorError as exc:  # the worker died: replace it, send the video again
                result = _worker_died(exc, item, missing, attempts, max_attempts, queue, sets)
                if queue:
                    idle.append(new_actor())
                if result is None:
                    continue
            except Exception as exc:  # unexpected error inside process(): this video fails, the rest go on
                idle.append(actor)
                result = {"id": item.id, "written": [], "skipped": [], "calls": {},
                          "failures": [(f"{item.id} [{n}]", f"{item.path}: {type(exc).__name__}: {exc}")
                                       for n in missing]}
            else:
                idle.append(actor)
            _tally(result, item.id, written, calls, failures, not_applicable)
            bar.update(1)
        bar.close()
        for fs in sets.values():
            fs.write_index()
        _write_skipped(out_root / SKIPPED_FILE, not_applicable)
        return ExtractReport(out_root, written, skipped, list(failures), calls, not_applicable=not_applicable)
    finally:
        if started:
            ray.shutdown()
