"""Reading checkpoints written before the one schema (:mod:`affectfuse.training.checkpoint`): one upgrade per
old format, each giving the schema's keys while keeping the old ones (code that still reads them works).

Old formats: ``affectfuse-eri-checkpoint`` (ERI best.pt / last.pt), ``affectfuse-expr/1`` and
``affectfuse-expr/1-last`` (EXPR best.pt / last.pt, e.g. the shipped voice head), ``affectfuse-expr-items/1``
(item classifiers), ``affectfuse.finetune/1`` (fine-tuning best.pt / checkpoint.pt).
"""

from __future__ import annotations

from affectfuse.data.tasks import TaskSpec, task_from_labels

# old format -> (kind, role or None when the file says it: ERI and fine-tuning used one format for both)
LEGACY = {"affectfuse-eri-checkpoint": ("eri", None), "affectfuse-expr/1": ("expr", "best"),
          "affectfuse-expr/1-last": ("expr", "last"), "affectfuse-expr-items/1": ("items", "best"),
          "affectfuse.finetune/1": ("finetune", None)}


def upgrade(ckpt: dict, schema: str, version: int) -> dict:
    """An old format's payload in the current schema (``schema``, ``version``; see the module doc)."""
    old = ckpt["format"]
    kind, role = LEGACY[old]
    out = {**ckpt, "legacy_format": old, "format": schema, "version": version, "kind": kind}
    return {"eri": _eri, "expr": _expr, "items": _items, "finetune": _finetune}[kind](out, role)


def _eri(ckpt: dict, role) -> dict:
    names = list(ckpt.get("label_names") or [])
    task = ckpt.get("task") or task_from_labels("eri", "video", "regression", names).to_dict()
    return {**ckpt, "role": "last" if "training" in ckpt else "best", "task": task, "label_names": names,
            "scale": task.get("scale", ""), "train_config": ckpt.get("config", {})}


def expr_feature_sets(info: dict) -> dict:
    """{name: meta} of an EXPR checkpoint's ``info`` (its face sets listed, its audio set apart)."""
    sets = {d["name"]: d for d in info.get("feature_sets") or [] if isinstance(d, dict) and "name" in d}
    if isinstance(info.get("audio_set"), dict):
        sets[info["audio_set"].get("name", "audio")] = info["audio_set"]
    return sets


def _expr(ckpt: dict, role) -> dict:
    if role == "last":
        best = ckpt.get("best") or {}
        score = best.get("macro_f1", -float("inf"))
        training = {"model": ckpt["model"], "optimizer": ckpt["optimizer"], "ema": ckpt.get("ema") or {},
                    "scheduler": {}, "rng_torch": ckpt["rng_torch"], "rng_generator": ckpt["rng_generator"],
                    "epoch": ckpt["epoch"], "finished": ckpt["finished"], "history": list(ckpt["history"]),
                    "best": score, "es_best": score, "best_epoch": ckpt["best_epoch"],
                    "bad": ckpt["epoch"] - ckpt["best_epoch"], "best_state": ckpt.get("best_state"),
                    "best_extra": ckpt.get("best")}
        return {**ckpt, "role": "last", "training": training}
    info = ckpt.get("info") or {}
    names = list(info.get("class_names") or [])
    task = task_from_labels("expr", "frame", "classification", names).to_dict()
    return {**ckpt, "role": "best", "task": task, "model": {"name": "expr_transformer", "args": ckpt["model_config"]},
            "label_names": names, "scale": task["scale"], "feature_sets": expr_feature_sets(info),
            "epoch": info.get("epoch"), "metrics": info.get("val")}


def _items(ckpt: dict, role) -> dict:
    info = ckpt.get("info") or {}
    names = list(info.get("class_names") or [])
    task = task_from_labels("items", "item", "classification", names).to_dict()
    return {**ckpt, "role": "best", "task": task, "label_names": names, "scale": task["scale"],
            "feature_sets": {d["name"]: d for d in info.get("feature_sets") or []
                             if isinstance(d, dict) and "name" in d},
            "epoch": ckpt.get("best_epoch"), "metrics": ckpt.get("val")}


def _finetune(ckpt: dict, role) -> dict:
    config = ckpt.get("config") or {}
    if "optimizer" in ckpt:  # checkpoint.pt: the resume state
        best = float(ckpt.get("best_f1", -1.0))
        training = {"model": ckpt["model"], "optimizer": ckpt["optimizer"], "scheduler": ckpt["scheduler"],
                    "ema": {}, "rng_torch": None, "rng_generator": None, "epoch": ckpt["epoch"],
                    "history": list(ckpt["history"]), "best": best, "es_best": best,
                    "best_epoch": ckpt["best_epoch"], "bad": 0,
                    "finished": bool(config) and ckpt["epoch"] >= int(config.get("epochs", 0))}
        return {"format": ckpt["format"], "version": ckpt["version"], "kind": "finetune", "role": "last",
                "legacy_format": ckpt["legacy_format"], "train_config": config, "training": training}
    return {"format": ckpt["format"], "version": ckpt["version"], "kind": "finetune", "role": "best",
            "legacy_format": ckpt["legacy_format"], "model": {"name": config.get("model"), "args": {}},
            "state_dict": ckpt["model"], "epoch": ckpt.get("epoch"), "train_config": config,
            "task": {}, "label_names": [], "scale": "", "feature_sets": {}, "info": {}}


def spec_of(ckpt: dict) -> TaskSpec | None:
    """The checkpoint's task spec (None when it has none, e.g. an old fine-tuning best.pt)."""
    task = ckpt.get("task") or {}
    return TaskSpec.from_dict(task) if {"name", "level", "kind", "label_names", "metric", "scale"} <= set(task) else None
