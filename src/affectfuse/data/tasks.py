"""Task specifications: what a head predicts, at which level, and how it is scored.

A :class:`TaskSpec` decides the output head, loss and metric, so models and training loops never
branch on a dataset name. ``TASKS`` holds the named ones; :func:`task_for_table` derives one from a
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
        level: ``'video'`` (one prediction per video) or ``'frame'`` (one per frame).
        kind: ``'regression'`` (K intensities) or ``'classification'`` (one of K classes).
        label_names: the K column / class names, in output order.
        metric: ``'mean_pearson'`` (regression) or ``'macro_f1'`` (classification).
        scale: what the output values mean (units, range).
    """

    name: str
    level: str
    kind: str
    label_names: tuple[str, ...]
    metric: str
    scale: str

    def __post_init__(self):
        if self.level not in ("video", "frame"):
            raise ValueError(f"TaskSpec.level must be 'video' or 'frame', got {self.level!r}")
        if self.kind not in ("regression", "classification"):
            raise ValueError(f"TaskSpec.kind must be 'regression' or 'classification', got {self.kind!r}")
        if self.metric not in ("mean_pearson", "macro_f1"):
            raise ValueError(f"TaskSpec.metric must be 'mean_pearson' or 'macro_f1', got {self.metric!r}")
        object.__setattr__(self, "label_names", tuple(self.label_names))

    @property
    def num_outputs(self) -> int:
        return len(self.label_names)

    def to_dict(self) -> dict:
        return {"name": self.name, "level": self.level, "kind": self.kind,
                "label_names": list(self.label_names), "metric": self.metric, "scale": self.scale}

    @classmethod
    def from_dict(cls, d: dict) -> "TaskSpec":
        return cls(d["name"], d["level"], d["kind"], tuple(d["label_names"]), d["metric"], d["scale"])


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
    return TaskSpec("classification", "video", "classification", names, "macro_f1",
                    "probability in [0, 1] per class, rows sum to 1")
