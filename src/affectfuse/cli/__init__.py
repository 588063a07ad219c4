"""The ``affectfuse`` command: one sub-command per module.

Each sub-command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int`` (the exit code). Heavy imports (torch, av) happen inside ``run`` so that
``affectfuse --help`` stays fast. Register a new command by adding it to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from affectfuse import __version__

# name -> module path; order is the order shown in --help.
COMMANDS: dict[str, str] = {
    "predict": "affectfuse.cli.predict",
    "extract": "affectfuse.cli.extract",
    "train": "affectfuse.cli.train",
    "evaluate": "affectfuse.cli.evaluate",
    "ensemble": "affectfuse.cli.ensemble",
    "ablate": "affectfuse.cli.ablate",
    "synth": "affectfuse.cli.synth",
    "expr": "affectfuse.cli.expr",
    "finetune": "affectfuse.cli.finetune",
}


def _available() -> dict[str, object]:
    out = {}
    for name, module in COMMANDS.items():
        try:
            out[name] = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:  # command not built yet
                continue
            raise
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="affectfuse", description="Raw video to emotion estimates (ABAW ERI and EXPR).")
    parser.add_argument("--version", action="version", version=f"affectfuse {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _available().items():
        p = sub.add_parser(name, help=getattr(module, "HELP", ""), description=getattr(module, "HELP", ""))
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError) as exc:
        # Documented user errors (bad file, bad manifest, missing weights) -> one clear message.
        if args.verbose:
            raise
        print(f"affectfuse {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
