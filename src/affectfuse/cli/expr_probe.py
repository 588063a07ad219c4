"""``affectfuse expr probe`` (hidden, deprecated): k-fold scores of the EXPR frame transformer and a logistic
probe on mean features over a manifest's items, optionally next to a face network's zero-shot classes.

``affectfuse classify cv`` is the supported way to score a manifest (the item classifier and its probe across
groups); this command stays for the frame model's numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path

from affectfuse.cli.common import frame_config, print_json, score_summary

HELP = "k-fold frame-model / logistic probe on a labelled manifest (deprecated: classify cv)"


def add_arguments(r) -> None:
    r.add_argument("--manifest", required=True, metavar="CSV")
    r.add_argument("--features", nargs="+", required=True, metavar="FOLDER")
    r.add_argument("--folds", type=int, default=5)
    r.add_argument("--group", action="store_true", help="grouped folds by the manifest's 'group' column")
    r.add_argument("--classifier", choices=("transformer", "logreg", "both"), default="both",
                   help="transformer (the EXPR frame model, minutes per fold), logreg (linear probe on mean "
                        "features, seconds) or both (default)")
    r.add_argument("--zero-shot", action="store_true",
                   help="also score the feature network's own class probabilities (faceexpressionnet)")
    r.add_argument("--fill", choices=("ffill", "interpolate", "mask"), default="ffill")
    r.add_argument("--config", metavar="YAML")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", metavar="DIR")


def run(args) -> int:
    from affectfuse.data.manifest_splits import manifest_frames, open_sets
    from affectfuse.inference.zero_shot import zero_shot_probabilities
    from affectfuse.metrics.classification import classification_scores, format_scores
    from affectfuse.outputs.class_scores import write_scores
    from affectfuse.training.expr_probe import cross_validate_items

    face = open_sets(args.features)
    table, items = manifest_frames(args.manifest, None, face, args.fill)
    class_names = list(table.label_names)
    if args.group and table.groups is None:
        raise ValueError(f"{args.manifest}: --group needs a 'group' column")
    groups = table.groups if args.group else None
    config = frame_config(args.config, args.set)
    kinds = ("transformer", "logreg") if args.classifier == "both" else (args.classifier,)
    print(f"expr probe: {len(items)} items, {args.folds} folds, classifier(s) {' then '.join(kinds)} "
          f"(--classifier transformer|logreg|both, default both; logreg is the fast one)", file=sys.stderr)
    results = {}
    for kind in kinds:
        res = cross_validate_items(items, class_names, args.folds, groups, kind, config, args.seed)
        results[kind] = res["scores"]
        results[kind]["fold_macro_f1"] = [f["macro_f1"] for f in res["folds"]]
    if args.zero_shot:
        results["zero_shot"] = classification_scores(
            table.labels, zero_shot_probabilities(items, face[0], class_names).argmax(1), len(class_names), class_names)
    for kind, scores in results.items():
        print(f"== {kind} ==\n{format_scores(scores)}")
        if args.out:
            write_scores(Path(args.out), scores, f"{kind}: {Path(args.manifest).name}", prefix=f"{kind}_")
    print_json({kind: score_summary(s) for kind, s in results.items()})
    return 0
