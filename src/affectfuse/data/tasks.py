"""Task specifications: what a head predicts, at which level, and how it is scored.

A :class:`TaskSpec` decides the output head, loss, metric and early-stopping direction, so models and the
training engine (:mod:`affectfuse.training.engine`; its entries ``ERITask``, ``ExprTask``, ``ItemsTask``,
``FinetuneTask`` read the spec) never branch on a dataset name: a task is an entry, not a copy of the loop.
Every checkpoint stores its spec. ``TASKS`` holds the named ones; :func:`task_for_table` derives one from a
loaded :class:`~affectfuse.data.layouts.VideoTable`.
"""

from __future__ import annotations

from dataclasses import dataclass

from affectfuse.labels import ERI_EMOTIONS, ERI_SCALE, EXPR_CLASSES, EXPR_SCALE


@dataclass(frozen=True)
class TaskSpec:
    """One prediction task.

    Attributes:
        name: short name (``'eri'``, ``'expr'``, ``'regression'``, ``'classification'``).
        level: ``'video'`` (one prediction per video), ``'frame'`` (one per frame) or ``'item'`` (one per
            manifest item: a speech file, a photo, a clip).
        kind: ``'regression'`` (K intensities) or ``'classification'`` (one of K classes).
        label_names: the K column / class names, in output order.
        metric: ``'mean_pearson'`` (regression), ``'macro_f1'`` or ``'uar'`` (classification); all are
            larger-is-better (:attr:`mode`).
        scale: what the output values mean (units, range).
    """

    name: str
    level: str
    kind: str
    label_names: tuple[str, ...]
    metric: str
    scale: str

    def __post_init__(self):
        if self.level not in LEVELS:
            raise ValueError(f"TaskSpec.level must be one of {', '.join(LEVELS)}, got {self.level!r}")
        if self.kind not in ("regression", "classification"):
            raise ValueError(f"TaskSpec.kind must be 'regression' or 'classification', got {self.kind!r}")
        if self.metric not in METRIC_MODES:
            raise ValueError(f"TaskSpec.metric must be one of {', '.join(METRIC_MODES)}, got {self.metric!r}")
        object.__setattr__(self, "label_names", tuple(self.label_names))

    @property
    def num_outputs(self) -> int:
        return len(self.label_names)

    @property
    def mode(self) -> str:
        """Early-stopping direction of :attr:`metric`: ``'max'`` (larger is better) or ``'min'``."""
        return METRIC_MODES[self.metric]

    @property
    def head(self) -> str:
        """The output head: ``'intensity'`` (K values, sigmoid) or ``'logits'`` (K class scores, softmax)."""
        return "intensity" if self.kind == "regression" else "logits"

    @property
    def loss(self) -> str:
        """The base loss: ``'mse'`` (regression) or ``'cross_entropy'`` (classification; EXPR frames use its
        focal form, ERI adds a class term, as their recipes say)."""
        return "mse" if self.kind == "regression" else "cross_entropy"

    def to_dict(self) -> dict:
        return {"name": self.name, "level": self.level, "kind": self.kind,
                "label_names": list(self.label_names), "metric": self.metric, "scale": self.scale}

    @classmethod
    def from_dict(cls, d: dict) -> "TaskSpec":
        return cls(d["name"], d["level"], d["kind"], tuple(d["label_names"]), d["metric"], d["scale"])


LEVELS = ("video", "frame", "item")
METRIC_MODES = {"mean_pearson": "max", "macro_f1": "max", "uar": "max"}
CLASS_SCALE = "probability in [0, 1] per class, rows sum to 1"

ERI_TASK = TaskSpec("eri", "video", "regression", ERI_EMOTIONS, "mean_pearson", ERI_SCALE)
EXPR_TASK = TaskSpec("expr", "frame", "classification", EXPR_CLASSES, "macro_f1", EXPR_SCALE)
TASKS: dict[str, TaskSpec] = {"eri": ERI_TASK, "expr": EXPR_TASK}


def get_task(name: str) -> TaskSpec:
    """The named task; unknown names raise with the list of valid ones."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    return TASKS[name]


def task_for_table(table) -> TaskSpec:
    """The task a video table calls for: ERI when its regression columns are the 7 ERI emotions,
    else a generic video-level regression (mean Pearson) or classification (macro F1) over its labels."""
    names = tuple(table.label_names)
    if not names:
        raise ValueError(f"{table.source or 'table'}: no label columns, so no task can be derived")
    if table.task == "regression":
        if names == ERI_EMOTIONS:
            return ERI_TASK
        return TaskSpec("regression", "video", "regression", names, "mean_pearson",
                        "the label columns' own units, as in the source table")
    return TaskSpec("classification", "video", "classification", names, "macro_f1", CLASS_SCALE)


def task_from_labels(name: str, level: str, kind: str, label_names, metric: str | None = None) -> TaskSpec:
    """A task over ``label_names``: the named task itself when its labels are these (ERI's 7 emotions, EXPR's
    8 classes), else one with the default metric and scale of ``kind`` (``metric`` overrides the metric)."""
    names = tuple(label_names)
    known = TASKS.get(name)
    if known is not None and known.label_names == names and known.level == level and metric in (None, known.metric):
        return known
    if kind == "regression":
        return TaskSpec(name, level, kind, names, metric or "mean_pearson",
                        "the label columns' own units, as in the source table")
    return TaskSpec(name, level, kind, names, metric or "macro_f1", CLASS_SCALE)
