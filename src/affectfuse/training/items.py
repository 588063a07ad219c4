"""Item-level classification (one label per speech file, photo or clip of a manifest).

Recipe (``expr train --manifest``, ``expr cv``):

1. every feature set is standardised with the mean and std of the training items' valid rows
   (:func:`affectfuse.data.items.row_norm_stats`, stored in the checkpoint);
2. each item is pooled into the mean and std of its standardised rows per feature set (P dims);
3. the built-in baseline, a logistic probe on the same pooled features (``C`` chosen by grouped inner
   folds of the training split), is fitted first and scored on validation;
4. the head (:class:`affectfuse.models.item_head.ItemHead`) holds the probe's solution as its linear
   part, frozen, plus (``hidden`` > 0; default 0, chosen by cross-validation on EmoDB, where the mlp lost
   0.007 UAR to the probe out of fold) an mlp branch whose output starts at 0, so epoch 0 *is* the probe; the mlp learns
   what the probe leaves (class-balanced cross-entropy, AdamW), and the epoch kept is the best on
   validation -- epoch 0 unless training improves on it, so the head is never worse than its probe on
   validation. (Training the linear part too, even from the probe's optimum, moved it: Adam's first
   steps are ``lr`` per weight whatever the gradient, and EmoDB's out-of-fold UAR fell below the probe's.)

Checkpoints (the schema of :mod:`affectfuse.training.checkpoint`, kind ``items``; older ones were
``affectfuse-expr-items/1``) hold the head, the row statistics, the class names, the
feature sets and the probe's scores; they load with ``torch.load(weights_only=True)``.
Letters: N items, P pooled dims, C classes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from affectfuse.data.items import ItemRows, pool_items, row_norm_stats, standardise_per_group
from affectfuse.metrics.classification import classification_scores
from affectfuse.models.item_head import ItemHead, ItemHeadArgs
from affectfuse.data.tasks import TaskSpec, task_from_labels
from affectfuse.training.engine import Engine, EngineConfig, Validation
from affectfuse.training.checkpoint import checkpoint_payload, plain, read_checkpoint, write_checkpoint, write_history
from affectfuse.training.probes import LOGISTIC_CS, fit_logistic, logistic_probabilities
from affectfuse.training.resolver import check_choice, dump_yaml
from affectfuse.training.resolver import from_dict as resolve_from_dict
from affectfuse.utils import seed_everything

log = logging.getLogger(__name__)
ITEMS_FORMAT = "items"  # the checkpoint kind (read_checkpoint also takes the old "affectfuse-expr-items/1")
METRICS = ("uar", "macro_f1")


@dataclass
class ItemTrainConfig:
    """Typed configuration of the item head and its training (``--set key=value``)."""

    group_norm: bool = True      # standardise rows per group (speaker / person) first, when groups are given
    min_group_size: int = 5      # ... and only when the training groups' median size is >= this (faces: 1-2 photos
                                 # per person; per-person statistics of one photo map it to zeros, docs/expr.md)
    hidden: int = 0              # mlp width; 0 = the head is the probe's solution (chosen by EmoDB LOSO, docs/expr.md)
    dropout: float = 0.5
    input_dropout: float = 0.2
    start: str = "probe"         # probe: linear part = the logistic probe's solution, frozen | random
    lr: float = 1e-3
    weight_decay: float = 1e-2   # AdamW decay of the mlp (a trained linear part gets the probe's L2 penalty)
    batch_size: int = 64
    epochs: int = 100
    patience: int = 20           # epochs without a validation improvement before stopping
    metric: str = "uar"          # early stopping and head-vs-probe: uar | macro_f1
    probe_cs: list[float] = field(default_factory=lambda: list(LOGISTIC_CS))
    seed: int = 0
    device: str = "cpu"

    def validate(self) -> None:
        """Choices of ``metric`` and ``start`` (a ConfigError names the field)."""
        check_choice(self.metric, METRICS, "metric", "item classifier options")
        check_choice(self.start, ("probe", "random"), "start", "item classifier options")

    @classmethod
    def from_dict(cls, d: dict, source: str = "item classifier options") -> "ItemTrainConfig":
        return resolve_from_dict(cls, d, source)


class ItemClassifier:
    """Row statistics + pooled head: :meth:`probabilities` of :class:`ItemRows` (N, C)."""

    def __init__(self, head: ItemHead, norm: dict, class_names: list[str], group_norm: bool = False):
        self.head, self.norm, self.class_names = head.eval(), norm, list(class_names)
        self.group_norm = group_norm

    @torch.no_grad()
    def probabilities(self, items: ItemRows) -> np.ndarray:
        """(N, C) class probabilities; the items' feature sets must be those the head was trained on, and
        with ``group_norm`` every item needs its group (the rows of a group are standardised together)."""
        if list(items.set_names) != list(self.norm):
            raise ValueError(f"feature sets {items.set_names} differ from the checkpoint's {list(self.norm)}")
        x = torch.from_numpy(pool_items(prepare(items, self.group_norm), self.norm))
        return torch.softmax(self.head(x), dim=-1).numpy()


@dataclass
class ItemRun:
    classifier: ItemClassifier
    probe: dict           # {"C", "val": scores, ...} of the built-in logistic probe
    val: dict             # scores of the kept head on validation
    best_epoch: int       # 0 = the probe's solution was kept
    history: list[dict]


def scores_of(y: np.ndarray, probs: np.ndarray, class_names) -> dict:
    """Classification scores (macro F1, UAR, accuracy, per class) of item probabilities (N, C)."""
    return classification_scores(y, probs.argmax(1), len(class_names), list(class_names))


def prepare(items: ItemRows, group_norm: bool) -> ItemRows:
    """``items`` standardised per group when ``group_norm`` (an error names the missing 'group' column)."""
    if not group_norm:
        return items
    if items.groups is None or any(g in (None, "") for g in items.groups):
        raise ValueError("this classifier standardises each group's rows (group_norm): give every item a "
                         "'group' (speaker / person) in the manifest, or train with --set group_norm=false")
    return standardise_per_group(items)


def median_group_size(groups) -> float:
    """Median number of items per group (0 for no items)."""
    _, counts = np.unique(np.asarray(list(groups), dtype=str), return_counts=True)
    return float(np.median(counts)) if len(counts) else 0.0


def fit_items(train: ItemRows, val: ItemRows | None, config: ItemTrainConfig, class_names,
              epochs: int | None = None) -> ItemRun:
    """Standardise, pool, fit the probe, train the head (early-stopped on ``val``; with ``val=None``
    exactly ``epochs`` epochs, e.g. the count chosen on validation when refitting on all data).
    ``group_norm`` applies only when the training items have groups of median size >= ``min_group_size``
    (it is recorded in the classifier)."""
    if (train.labels < 0).any() or (val is not None and (val.labels < 0).any()):
        raise ValueError("item training needs a label on every train / val item")
    group_norm = bool(config.group_norm and train.groups is not None
                      and median_group_size(train.groups) >= config.min_group_size)
    train = prepare(train, group_norm)
    val = prepare(val, group_norm) if val is not None else None
    seed_everything(config.seed)
    n_classes = len(class_names)
    norm = row_norm_stats(train)
    x_tr, y_tr = pool_items(train, norm), train.labels
    probe = fit_logistic(x_tr, y_tr, n_classes, train.groups, config.probe_cs, config.seed,
                         blocks=[2 * d for d in train.dims()])
    head = ItemHead(ItemHeadArgs(x_tr.shape[1], n_classes, config.hidden, config.dropout, config.input_dropout))
    if config.start == "probe":
        head.start_at_probe(probe)
    else:
        head.shift.copy_(torch.as_tensor(probe["scaler_mean"], dtype=torch.float32))
        head.scale.copy_(torch.as_tensor(probe["scaler_scale"], dtype=torch.float32))
    x_va = pool_items(val, norm) if val is not None else None
    history, best_state, best_epoch, best = _train_head(head, x_tr, y_tr, x_va, val, config, probe["C"],
                                                        class_names, epochs)
    head.load_state_dict(best_state)
    summary = {"kind": "logistic", "pooling": "mean+std of standardised rows per feature set", "C": probe["C"],
               "inner_uar": probe["inner_uar"]}
    if val is not None:
        summary["val"] = scores_of(val.labels, logistic_probabilities(probe, x_va), class_names)
    return ItemRun(ItemClassifier(head, norm, class_names, group_norm), {**probe, **summary}, best, best_epoch,
                   history)


class ItemsTask:
    """The engine's entry for per-item classification: shuffled mini-batches of pooled rows, class-balanced
    cross-entropy (+ the probe's L2 penalty when the linear part trains), the task spec's metric on validation."""

    def __init__(self, x_tr, y_tr, x_va, val, config: ItemTrainConfig, weight, l2: float, spec: TaskSpec):
        self.x, self.y = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
        self.x_va, self.val, self.config, self.weight, self.l2, self.spec = x_va, val, config, weight, l2, spec

    def train_epoch(self, engine: Engine, epoch: int) -> dict:
        head, losses = engine.model, []
        for b in torch.randperm(len(self.y), generator=engine.generator).split(self.config.batch_size):
            loss = F.cross_entropy(head(self.x[b]), self.y[b], weight=self.weight)
            loss = loss + self.l2 * head.linear.weight.pow(2).sum()
            engine.backward_step(loss)
            losses.append(loss.item())
        return {"train_loss": float(np.mean(losses))}

    def validate(self, head: ItemHead) -> Validation | None:
        if self.val is None:
            return None
        scores = _val_scores(head, self.x_va, self.val, self.spec.label_names)
        return Validation(scores[self.spec.metric], {"val_uar": scores["uar"], "val_macro_f1": scores["macro_f1"]},
                          scores)

    def best_payload(self, model, epoch: int, row: dict) -> None:
        return None  # the caller writes best.pt (write_item_run) after cross-validation or refitting


def _train_head(head: ItemHead, x_tr, y_tr, x_va, val, config: ItemTrainConfig, c: float, class_names,
                epochs: int | None):
    """Mini-batch training on the engine; returns (history, best state, best epoch, best val scores or None).
    Epoch 0 (the untrained head, i.e. the probe's solution) counts as the first best."""
    n_classes = len(class_names)
    counts = np.bincount(y_tr, minlength=n_classes).astype(np.float64)
    weight = torch.as_tensor(np.where(counts > 0, len(y_tr) / (n_classes * np.maximum(counts, 1)), 0.0),
                             dtype=torch.float32)            # sklearn's class_weight="balanced"
    frozen = config.start == "probe"                         # the probe's solution stays exactly as fitted
    head.linear.requires_grad_(not frozen)
    l2 = 0.0 if frozen else 1.0 / (2.0 * c * len(y_tr))     # else sklearn's penalty, per mean-loss unit
    groups = [{"params": list(head.mlp.parameters()), "weight_decay": config.weight_decay}] if head.mlp else []
    if not frozen:
        groups.append({"params": list(head.linear.parameters()), "weight_decay": 0.0})
    spec = task_from_labels("items", "item", "classification", class_names, metric=config.metric)
    task = ItemsTask(x_tr, y_tr, x_va, val, config, weight, l2, spec)
    best = task.validate(head)
    last = epochs if epochs is not None else config.epochs
    if not groups or last == 0:                              # nothing to train: the probe itself
        return [], {k: v.clone() for k, v in head.state_dict().items()}, 0, best.extra if best else None
    engine = Engine(head, torch.optim.AdamW(groups, lr=config.lr), EngineConfig(
        max_epochs=last, patience=config.patience, mode=spec.mode, select="best" if val is not None else "last"),
        generator=torch.Generator().manual_seed(config.seed))
    if best is not None:
        engine.start_from(best)
    state = engine.run(task)
    return state["history"], engine.best_state, state["best_epoch"], engine.best_extra


def _val_scores(head: ItemHead, x_va: np.ndarray, val: ItemRows, class_names) -> dict:
    head.eval()
    with torch.no_grad():
        probs = torch.softmax(head(torch.from_numpy(x_va)), dim=-1).numpy()
    return scores_of(val.labels, probs, class_names)


# -- checkpoints ---------------------------------------------------------------------------------------
def item_payload(run: ItemRun, config: ItemTrainConfig, info: dict) -> dict:
    """A checkpoint of the schema (kind ``items``, see training.checkpoint; ``weights_only``-loadable)."""
    clf = run.classifier
    probe = {k: v for k, v in run.probe.items() if k in ("kind", "pooling", "C", "inner_uar", "val")}
    task = task_from_labels("items", "item", "classification", clf.class_names, metric=config.metric)
    sets = {d["name"]: d for d in info.get("feature_sets") or [] if isinstance(d, dict) and "name" in d}
    return checkpoint_payload(
        "items", model_name="item_head", model_args=clf.head.args.to_dict(), state_dict=clf.head.state_dict(),
        task=task.to_dict(), train_config=asdict(config), feature_sets=sets,
        input_norm={k: {s: torch.as_tensor(v[s]) for s in ("mean", "std")} for k, v in clf.norm.items()},
        info={**info, "class_names": clf.class_names, "task": "items"}, epoch=run.best_epoch, metrics=run.val,
        group_norm=clf.group_norm, probe=plain(probe), best_epoch=run.best_epoch, val=plain(run.val))


def classifier_from_payload(ckpt: dict) -> ItemClassifier:
    """The :class:`ItemClassifier` of an item checkpoint dict."""
    head = ItemHead(ItemHeadArgs.from_dict(ckpt["model"]["args"]))
    head.load_state_dict(ckpt["state_dict"])
    norm = {k: {s: v[s].numpy() for s in ("mean", "std")} for k, v in ckpt["input_norm"].items()}
    return ItemClassifier(head, norm, ckpt["label_names"], bool(ckpt.get("group_norm")))


def load_item_checkpoint(path) -> tuple[ItemClassifier, dict]:
    """(classifier, checkpoint dict) of an item checkpoint file (old format included)."""
    ckpt = read_checkpoint(path, "items", "item classifier checkpoint")
    return classifier_from_payload(ckpt), ckpt


def write_item_run(run_dir: Path, run: ItemRun, config: ItemTrainConfig, info: dict) -> dict:
    """``best.pt``, ``config.yaml``, ``metrics.csv`` and ``result.json`` (head and probe on validation,
    ``beats_probe``); returns the result dict."""
    from affectfuse.utils import write_json_atomic, write_text_atomic

    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", dump_yaml(config))
    write_checkpoint(item_payload(run, config, info), run_dir / "best.pt")
    write_history(run_dir / "metrics.csv", run.history)
    result = compare_with_probe(run, config.metric)
    write_json_atomic(run_dir / "result.json", result)
    return result


def compare_with_probe(run: ItemRun, metric: str) -> dict:
    """{"model": val summary, "probe": val summary, "metric", "beats_probe", "best_epoch"}; a warning when
    the head is worse than its probe on validation (it cannot be when it started at the probe)."""
    keys = ("macro_f1", "uar", "accuracy", "n")
    model = {k: run.val[k] for k in keys} if run.val else None
    probe = {k: run.probe["val"][k] for k in keys} if "val" in run.probe else None
    beats = None if model is None or probe is None else bool(model[metric] >= probe[metric])
    if beats is False:
        log.warning("the item head (val %s %.4f) is worse than the logistic probe on the same pooled features "
                    "(%.4f): check the recipe, or use --set epochs=0 (the probe itself)", metric, model[metric],
                    probe[metric])
    return {"metric": metric, "model": model, "probe": probe, "probe_C": run.probe["C"], "beats_probe": beats,
            "best_epoch": run.best_epoch, "kept": "probe" if run.best_epoch == 0 else "head"}


# -- cross-validation across groups --------------------------------------------------------------------
def outer_splits(items: ItemRows, folds: int | None, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Leave-one-group-out when the items have groups and ``folds`` is None; ``StratifiedGroupKFold``
    with groups and ``folds``; ``StratifiedKFold(folds or 5)`` without groups."""
    from sklearn.model_selection import LeaveOneGroupOut, StratifiedGroupKFold, StratifiedKFold

    y, index = items.labels, np.arange(len(items))
    if items.groups is not None and folds is None:
        return list(LeaveOneGroupOut().split(index, y, np.asarray(items.groups)))
    if items.groups is not None:
        return list(StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(index, y, items.groups))
    return list(StratifiedKFold(folds or 5, shuffle=True, random_state=seed).split(index, y))


def validation_split(items: ItemRows, fraction: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit, val) positions inside a training split: whole groups held out (about ``fraction`` of them,
    at least one) when the items have >= 2 groups, else a stratified ``fraction`` of the items."""
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    y, index = items.labels, np.arange(len(items))
    if items.groups is not None and len(set(items.groups)) >= 2:
        k = max(2, min(len(set(items.groups)), round(1 / fraction)))
        fit, val = next(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(index, y, items.groups))
        return fit, val
    strat = y if np.bincount(y).min(initial=2) >= 2 else None
    return tuple(train_test_split(index, test_size=fraction, random_state=seed, stratify=strat))


def cross_validate(items: ItemRows, class_names, config: ItemTrainConfig, folds: int | None = None,
                   progress=None) -> dict:
    """Out-of-fold predictions of the default item head and of its built-in probe.

    Per outer fold (:func:`outer_splits`): the training groups are split once more
    (:func:`validation_split`) to choose the epoch count (0 = the probe) on held-out groups (skipped when
    nothing can train: ``hidden=0`` with the frozen probe start, the default, where 0 is the only count), then
    standardisation, probe and head are refitted on the whole training fold with that count and
    predict the held-out fold. Returns {"model": scores, "probe": scores, "folds": [per fold: held-out
    groups, n, epochs, probe C, model/probe UAR and macro F1], "probabilities": {"model", "probe"} (N, C)}.
    """
    n, c = len(items), len(class_names)
    p_model, p_probe = np.zeros((n, c), np.float32), np.zeros((n, c), np.float32)
    rows, start = [], time.perf_counter()
    splits = outer_splits(items, folds, config.seed)
    for k, (tr, te) in enumerate(splits):
        train, test = items.subset(tr), items.subset(te)
        if config.hidden > 0 or config.start != "probe":
            fit, val = validation_split(train, seed=config.seed + k)
            epochs = fit_items(train.subset(fit), train.subset(val), config, class_names).best_epoch
        else:   # a frozen probe and no mlp: nothing trains, epoch 0 is the only choice (half the cost)
            epochs = 0
        final = fit_items(train, None, config, class_names, epochs=epochs)
        p_model[te] = final.classifier.probabilities(test)
        p_probe[te] = logistic_probabilities(final.probe, pool_items(prepare(test, final.classifier.group_norm),
                                                                     final.classifier.norm))
        m, p = scores_of(test.labels, p_model[te], class_names), scores_of(test.labels, p_probe[te], class_names)
        rows.append({"fold": k + 1, "held_out": sorted(set(test.groups)) if test.groups else None, "n": len(te),
                     "epochs": epochs, "probe_C": final.probe["C"],
                     "model_uar": m["uar"], "probe_uar": p["uar"],
                     "model_macro_f1": m["macro_f1"], "probe_macro_f1": p["macro_f1"]})
        if progress is not None:
            spent = time.perf_counter() - start
            held = rows[-1]["held_out"] or ["-"]
            held = ", ".join(held[:3]) + (f" and {len(held) - 3} more groups" if len(held) > 3 else "")
            progress(f"cv fold {k + 1}/{len(splits)} ({held}): "
                     f"model UAR {m['uar']:.3f} probe UAR {p['uar']:.3f} (epochs {epochs}, "
                     f"C {final.probe['C']:g}), {spent:.0f} s, ETA {spent / (k + 1) * (len(splits) - k - 1):.0f} s")
    return {"model": scores_of(items.labels, p_model, class_names),
            "probe": scores_of(items.labels, p_probe, class_names), "folds": rows,
            "probabilities": {"model": p_model, "probe": p_probe}}
