"""The ``mobilenets`` command line: a thin layer over the Python API.

Each command lives in its own module exposing ``configure(parser)``, which adds its description
and options and sets ``handler``. Only the module of the command being run is imported, so that
``mobilenets --help`` answers at once. Errors caused by the user's input (``ValueError``, missing
files) are printed as one line, without a traceback, and the exit status is 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__

# command: (its module in this package, one line for `mobilenets --help`), in the order listed there
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("models", "list the registered models"),
    "profile": ("profile", "count mult-adds and parameters"),
    "export": ("export", "export a model (ONNX, TorchScript, OpenVINO; fp32 or int8) and verify it"),
    "bench": ("bench", "time models in PyTorch, ONNX Runtime and OpenVINO"),
    "select": ("select", "pick the Pareto-optimal models for a budget"),
    "predict": ("predict", "classify images"),
    "train": ("train", "train a model (default: a small MobileNet on Fashion-MNIST)"),
    "eval": ("eval", "evaluate trained weights on a data set"),
}


def build_parser(commands: Sequence[str] = tuple(COMMANDS)) -> argparse.ArgumentParser:
    """The parser of every command; the options of those in ``commands`` only (their modules are imported)."""
    parser = argparse.ArgumentParser(
        prog="mobilenets",
        description="MobileNets and their family: build models sized to a budget and count what they cost.",
        epilog="Run `mobilenets COMMAND --help` for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"mobilenets {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, text) in COMMANDS.items():
        command = sub.add_parser(name, help=text, description=text)
        if name in commands:
            importlib.import_module(f".{module}", __name__).configure(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The command is the first word that is not an option (the top level takes only --help and --version).
    chosen = next((word for word in argv if not word.startswith("-")), None)
    args = build_parser([chosen] if chosen in COMMANDS else []).parse_args(argv)
    try:
        return args.handler(args) or 0
    except (ValueError, FileNotFoundError, PermissionError) as err:
        print(f"mobilenets {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
