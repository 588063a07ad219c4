"""The ``affectfuse`` command: one sub-command per module.

Each sub-command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int`` (the exit code). Heavy imports (torch, av) happen inside ``run`` so that
``affectfuse --help`` stays fast. Register a new command by adding it to ``COMMANDS``.

Shape: ``predict VIDEO...`` (the report), ``extract``, ``eri {train,evaluate,predict,ablate}``,
``expr {train,evaluate,predict,submit,validate}`` (per frame, Aff-Wild2 layout), ``classify {train,evaluate,
predict,cv}`` (one label per manifest item), ``finetune``, ``ensemble``, ``synth``. The old spellings in
``ALIASES`` (and a few inside the groups) still work, hidden from ``--help``, after one deprecation line on stderr.

Error policy (every command): a documented user error (``ValueError``: bad file, manifest, name) and
every I/O error (``OSError``: missing file, permission, read-only folder, disk full) end the command with
one line ``affectfuse CMD: error: FILE: cause`` on stderr and exit code 1; files finished before it stay
(every writer is atomic). ``-v`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys

from affectfuse import __version__
from affectfuse.cli.common import add_sub, run_group
from affectfuse.utils import fewer_gc_passes

# name -> module path; order is the order shown in --help.
COMMANDS: dict[str, str] = {
    "predict": "affectfuse.cli.predict",
    "extract": "affectfuse.cli.extract",
    "eri": "affectfuse.cli.eri",
    "expr": "affectfuse.cli.expr",
    "classify": "affectfuse.cli.classify",
    "finetune": "affectfuse.cli.finetune",
    "ensemble": "affectfuse.cli.ensemble",
    "synth": "affectfuse.cli.synth",
}
# old top-level spelling -> (group, sub-command): hidden, deprecated
ALIASES: dict[str, tuple[str, str]] = {"train": ("eri", "train"), "evaluate": ("eri", "evaluate"),
                                       "ablate": ("eri", "ablate")}


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
    modules = _available()
    for name, module in modules.items():
        p = sub.add_parser(name, help=getattr(module, "HELP", ""), description=getattr(module, "HELP", ""))
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    for old, (group, name) in ALIASES.items():
        if group in modules:
            add_sub(sub, old, modules[group].COMMANDS[name], old=old, new=f"{group} {name}").set_defaults(
                _run=run_group)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the command's own process (not a caller's, e.g. tests): before the sub-commands' imports
        fewer_gc_passes()
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
    except (OSError, ValueError) as exc:
        # Documented user errors (bad file, bad manifest, missing weights) and I/O errors -> one clear line.
        if args.verbose:
            raise
        name = " ".join(filter(None, (args.command, getattr(args, f"{args.command}_command", None))))
        print(f"affectfuse {name}: error: {error_line(exc)}", file=sys.stderr)
        return 1


_CAUSES = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
           errno.EACCES: "permission denied", errno.EPERM: "permission denied",
           errno.ENAMETOOLONG: "file name too long"}


def error_line(exc: BaseException) -> str:
    """One line for the user: ``FILE: cause`` for an ``OSError`` (the errno named in words), else the message."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.filename:
        cause = _CAUSES.get(exc.errno, exc.strerror or errno.errorcode.get(exc.errno, str(exc.errno)))
        detail = f" ({exc.strerror})" if exc.strerror and exc.strerror.lower() != cause else ""
        return f"{exc.filename}: {cause}{detail}"
    return " ".join(str(exc).split("\n")[0].split()) if isinstance(exc, OSError) else str(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
