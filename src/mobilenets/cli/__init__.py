"""The ``mobilenets`` command line: a thin layer over the Python API.

Each command lives in its own module exposing ``register(subparsers)``, which adds its parser
and sets ``handler``. Errors caused by the user's input (``ValueError``, missing files) are
printed as one line, without a traceback, and the exit status is 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import bench, eval, export, models, predict, profile, select, train

COMMANDS = (models, profile, export, bench, select, predict, train, eval)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mobilenets",
        description="MobileNets and their family: build models sized to a budget and count what they cost.",
        epilog="Run `mobilenets COMMAND --help` for the options of each command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args) or 0
    except (ValueError, FileNotFoundError, PermissionError) as err:
        print(f"mobilenets {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
