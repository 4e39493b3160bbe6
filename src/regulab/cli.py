"""``regulab`` command line: one dispatcher, each command in its own module.

Each command module exposes ``register(subparsers)``, which adds a parser
whose ``func(args) -> int`` runs the command. Any :class:`RegulabError`
(or ``ValueError`` raised while validating user input) becomes one line on
stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import RegulabError

# command name -> module that implements it (imported lazily: `regulab --help`
# must not pay for torch/ray imports of every command).
COMMANDS = {
    "study": "regulab.study.cli",
    "report": "regulab.report.cli",
    "doctor": "regulab.doctor.cli",
    "mc": "regulab.analysis.cli",
    "build": "regulab.ops.cli",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors exit 2 too
        self.print_usage(sys.stderr)
        self.exit(2, f"regulab: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="regulab", description="Dropout and the other regularizers, measured.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, modname in COMMANDS.items():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("regulab"):
                continue  # command not built yet
            raise
        mod.register(sub)
    return parser


def _version() -> str:
    from . import __version__

    return f"regulab {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except RegulabError as e:
        print(f"regulab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"regulab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
