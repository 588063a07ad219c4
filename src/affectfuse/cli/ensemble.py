"""``affectfuse ensemble``: average several runs' prediction files into one (the paper's ensemble).

    affectfuse ensemble run1/val_predictions.csv run2/val_predictions.csv --out ens.csv \\
        [--ensemble-weights 0.5,0.5] [--table data_info.csv --split val]

The kinds of file (ERI CSVs, per-frame EXPR probabilities) and the averaging: :mod:`affectfuse.inference.ensemble`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from affectfuse.cli.common import deprecated

HELP = "average prediction files of several runs (ERI CSVs, EXPR probabilities) and score the ensemble"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="PRED.csv", help="prediction files of several runs")
    parser.add_argument("--out", required=True, type=Path, metavar="ENS.csv", help="ensemble file to write")
    parser.add_argument("--ensemble-weights", default=None, metavar="W1,W2,...",
                        help="one non-negative weight per file (normalised to sum 1; default: equal)")
    parser.add_argument("--weights", default=None, dest="old_weights", help=argparse.SUPPRESS)
    parser.add_argument("--table", default=None, type=Path,
                        help="labels to score the ensemble on: ERI: a table (data_info.csv, MuSe folder or "
                             "manifest); EXPR: an Aff-Wild2 annotation folder")
    parser.add_argument("--split", default="val", help="split of an ERI --table to score (default: val)")


def parse_weights(text: str | None, n: int):
    """(n,) weights summing to 1 from ``'w1,w2,...'`` (``None`` -> equal weights)."""
    from affectfuse.inference.ensemble import normalise_weights

    if text is None:
        return normalise_weights(None, n)
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError as exc:
        raise ValueError(f"--ensemble-weights {text!r}: not a comma-separated list of numbers") from exc
    if len(values) != n:
        raise ValueError(f"--ensemble-weights gives {len(values)} weights for {n} files")
    try:
        return normalise_weights(values, n)
    except ValueError:
        raise ValueError(f"--ensemble-weights {text!r}: weights must be non-negative with a positive sum") from None


def run(args: argparse.Namespace) -> int:
    from affectfuse.inference.ensemble import ensemble

    text = args.ensemble_weights
    if args.old_weights is not None:
        deprecated("ensemble --weights", "ensemble --ensemble-weights")
        text = text or args.old_weights
    weights = parse_weights(text, len(args.files))
    _, scores = ensemble(args.files, args.out, weights, args.table, args.split)
    if scores is not None:
        print(json.dumps(scores))
    return 0
