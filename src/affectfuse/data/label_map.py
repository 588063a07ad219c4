"""Class names of a user's labels -> the 8 ABAW expression classes, decided at training time.

``affectfuse predict --expr-checkpoint`` reports the 8 ABAW classes (``labels.EXPR_CLASSES``), so it accepts
only checkpoints whose classes are ABAW names. ``affectfuse expr train --label-map`` maps a manifest's class
names onto them before training:

- ``--label-map abaw``: the usual spellings (``happy`` -> Happiness, ``angry`` -> Anger ...) and
  ``contempt`` -> Other (ABAW has no contempt class; its EXPR guidelines count it as Other);
- ``--label-map contempt=Other,joy=Happiness``: explicit pairs (names case-insensitive), every other name
  must already be an ABAW class or have a usual spelling.

Classes that map to the same ABAW class are merged. Without ``--label-map``, training still works for any
class names, and :func:`predict_note` says at train time whether predict will accept the checkpoint.
"""

from __future__ import annotations

import numpy as np

from affectfuse.labels import EXPR_CLASSES, EXPRESSION_SYNONYMS

LABEL_MAP_HINT = "--label-map abaw (usual spellings, contempt -> Other) or --label-map NAME=ABAW_CLASS,..."


def abaw_synonyms() -> dict[str, str]:
    """Lower-case spelling -> ABAW class: the usual synonyms, ``contempt`` -> Other, every ABAW name itself."""
    out = {k: v for k, v in EXPRESSION_SYNONYMS.items() if v in EXPR_CLASSES}
    out.update({c.lower(): c for c in EXPR_CLASSES})
    out["contempt"] = "Other"
    return out


def parse_label_map(text: str) -> dict[str, str]:
    """``"abaw"`` or ``"name=Class,name2=Class2"`` -> lower-case name -> ABAW class (usual spellings included).

    Raises:
        ValueError: a pair without ``=`` or a target that is not one of the 8 ABAW classes.
    """
    mapping = abaw_synonyms()
    if text.strip().lower() == "abaw":
        return mapping
    for pair in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, target = pair.partition("=")
        canon = {c.lower(): c for c in EXPR_CLASSES}.get(target.strip().lower())
        if not sep or not name.strip() or canon is None:
            raise ValueError(f"--label-map {pair!r}: use NAME=CLASS with CLASS one of {', '.join(EXPR_CLASSES)} "
                             "(or --label-map abaw)")
        mapping[name.strip().lower()] = canon
    return mapping


def map_classes(names, labels: np.ndarray | None, mapping: dict[str, str]) -> tuple[tuple[str, ...], np.ndarray | None]:
    """Map class names (and (N,) int label indices, -1 kept) onto ABAW classes, in ABAW order.

    Returns:
        (new class names: the ABAW classes present, in ``EXPR_CLASSES`` order; (N,) remapped indices).

    Raises:
        ValueError: naming every class the mapping does not cover.
    """
    unmapped = [n for n in names if n.lower() not in mapping]
    if unmapped:
        raise ValueError(f"--label-map does not cover the class(es) {unmapped}; add NAME=CLASS pairs "
                         f"(CLASS one of {', '.join(EXPR_CLASSES)})")
    targets = [mapping[n.lower()] for n in names]
    new = tuple(c for c in EXPR_CLASSES if c in targets)
    if labels is None:
        return new, None
    lookup = np.array([new.index(t) for t in targets] + [-1], dtype=np.int64)  # index -1 -> -1
    labels = np.asarray(labels, dtype=np.int64)
    return new, lookup[np.where(labels < 0, len(targets), labels)]


def predict_note(names) -> str | None:
    """None when ``affectfuse predict --expr-checkpoint`` will accept these classes, else why not and what to do."""
    unknown = [n for n in names if n not in EXPR_CLASSES]
    if not unknown:
        return None
    return (f"classes {unknown} are not ABAW expression classes ({', '.join(EXPR_CLASSES)}): "
            f"`affectfuse predict --expr-checkpoint` will refuse this checkpoint; `expr evaluate/predict` work. "
            f"To train one predict accepts, pass {LABEL_MAP_HINT}")
