"""What the command modules share: sub-command groups, hidden old spellings, the deprecation line, JSON output.

A group (``affectfuse eri|expr|classify``) is a dict of :class:`Sub` (help, ``add_arguments(parser)``,
``run(args) -> exit code``); :func:`add_group` makes one sub-parser per entry. An old spelling is a hidden
sub-parser (no help entry) that runs the new command after :func:`deprecated` printed one line to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Sub:
    """One sub-command: its help line, how it adds its options, and what it runs."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def deprecated(old: str, new: str, same_options: bool = True) -> None:
    """The one deprecation line of an old spelling, on stderr."""
    how = " (same options)" if same_options else ""
    print(f"affectfuse: `affectfuse {old}` is deprecated; use `affectfuse {new}`{how}", file=sys.stderr)


def add_sub(sub, name: str, command: Sub, old: str | None = None, new: str | None = None,
            same_options: bool = True) -> argparse.ArgumentParser:
    """Add ``command`` as ``name``; with ``new`` (the new spelling of the ``old`` one) it is hidden from --help
    and prints the deprecation line when used."""
    kwargs = {} if new else {"help": command.help}
    p = sub.add_parser(name, description=command.help, **kwargs)
    command.add_arguments(p)
    p.set_defaults(_sub=command.run, _deprecated=(old, new, same_options) if new else None)
    return p


def add_group(parser: argparse.ArgumentParser, group: str, commands: dict[str, Sub],
              hidden: dict[str, tuple] | None = None) -> None:
    """Sub-commands of ``affectfuse GROUP``; ``hidden``: old name -> (command, its new spelling[, same options])."""
    sub = parser.add_subparsers(dest=f"{group}_command", metavar="SUBCOMMAND", required=True)
    for name, command in commands.items():
        add_sub(sub, name, command)
    for name, (command, new, *same) in (hidden or {}).items():
        add_sub(sub, name, command, old=f"{group} {name}", new=new, same_options=same[0] if same else True)


def run_group(args: argparse.Namespace) -> int:
    """Run the sub-command the parser chose (after its deprecation line, for an old spelling)."""
    if getattr(args, "_deprecated", None):
        deprecated(*args._deprecated)
    return args._sub(args)


def frame_config(path: str | None, overrides: list[str]):
    """:class:`~affectfuse.training.expr.ExprTrainConfig`: defaults -> recipe YAML -> ``--set`` pairs, through
    the shared typed resolver (``lr: 1e-4`` is a float; errors name key, value, type and source)."""
    from affectfuse.training.expr import ExprTrainConfig
    from affectfuse.training.resolver import resolve_dataclass

    return resolve_dataclass(ExprTrainConfig, files=path, overrides=overrides)


def print_json(obj) -> None:
    print(json.dumps(obj))


def score_summary(scores: dict) -> dict:
    """The headline of classification scores: macro F1, UAR, accuracy (4 decimals) and n."""
    return {k: round(scores[k], 4) if isinstance(scores[k], float) else scores[k]
            for k in ("macro_f1", "uar", "accuracy", "n")}

