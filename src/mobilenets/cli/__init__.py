"""The ``mobilenets`` command line: a thin layer over the Python API.

Each command lives in its own module exposing ``configure(parser)``, which adds its description
and options and sets ``handler``. Only the module of the command being run is imported, so that
``mobilenets --help`` answers at once. Errors caused by the user's input or the system (``ValueError``,
``OSError``: missing or unwritable files, a full disk; ``MemoryError``) and argparse's usage errors are
printed as one line, without a traceback, and the exit status is 2. A closed output pipe
(``mobilenets list | head``) ends the command quietly.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from .. import __version__
from ..errors import first_line

# Commands whose MODEL may come from a --weights file that records it say this when neither is given.
NO_MODEL = "give a model name (see `mobilenets list`), or --weights FILE from `mobilenets train` (which records it)"

# command: (its module in this package, one line for `mobilenets --help`), in the order listed there
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("models", "list the registered models"),
    "weights": ("weights", "list the published weights files, their provenance and how to import them"),
    "convert": ("convert", "convert a weights file (ours, torchvision's...) to our format for a registered model"),
    "profile": ("profile", "count mult-adds and parameters"),
    "export": ("export", "export a model (ONNX, TorchScript, OpenVINO; fp32 or int8) and verify it"),
    "bench": ("bench", "time models in PyTorch, ONNX Runtime and OpenVINO"),
    "select": ("select", "pick the Pareto-optimal models for a budget"),
    "predict": ("predict", "classify images"),
    "train": ("train", "train a model (default: a small MobileNet on Fashion-MNIST)"),
    "eval": ("eval", "evaluate trained weights on a data set"),
    "deploy": ("deploy", "export a trained run to verified int8 and time it beside fp32"),
    "detect": ("detect", "train, evaluate and run object detectors (SSD, SSDLite, Faster R-CNN)"),
    "embed": ("embed", "train, evaluate and compute compact image embeddings (verification at a fixed FAR)"),
    "study": ("study", "re-run the MobileNets paper's accuracy claims at small scale, over seeds"),
}


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like the commands' own errors."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser(
    commands: Sequence[str] = tuple(COMMANDS),
) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and each command's parser; the options of those in ``commands`` only
    (their modules are imported)."""
    parser = Parser(
        prog="mobilenets",
        description="MobileNets and their family: build models sized to a budget and count what they cost.",
        epilog="Run `mobilenets COMMAND --help` for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"mobilenets {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parsers = {}
    for name, (module, text) in COMMANDS.items():
        parsers[name] = command = sub.add_parser(name, help=text, description=text)
        if name in commands:
            importlib.import_module(f".{module}", __name__).configure(command)
    return parser, parsers


def describe_error(err: BaseException) -> str:
    """One line for an error: its message, or for a bare ``OSError`` its reason and the path involved."""
    if isinstance(err, OSError) and err.strerror and len(err.args) <= 2:
        path = f": {err.filename!r}" if err.filename else ""
        return f"{err.strerror}{path}"
    return first_line(err)


def _silence_stdout() -> None:
    """Point stdout at /dev/null: the reader went away, and Python's final flush must not fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The command is the first word that is not an option (the top level takes only --help and --version).
    chosen = next((word for word in argv if not word.startswith("-")), None)
    parser, commands = build_parser([chosen] if chosen in COMMANDS else [])
    if chosen not in COMMANDS:
        parser.parse_args(argv)  # --help, --version, or a one-line usage error: each exits
    where = argv.index(chosen)
    if {"-h", "--help", "--version"} & set(argv[:where]):
        parser.parse_args(argv[:where])  # they exit
    if where:
        parser.error(f"unrecognized arguments before {chosen}: {' '.join(argv[:where])}")
    # Intermixed, so that options may come between a command's positionals (`predict MODEL --weights W IMAGE`).
    # A command group (`detect train`) parses plainly: argparse cannot intermix a subcommand's words.
    command = commands[chosen]
    parse = command.parse_args if command._subparsers else command.parse_intermixed_args
    args = parse(argv[where + 1 :])
    args.command = chosen
    try:
        code = args.handler(args) or 0
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _silence_stdout()
        return 141  # as a shell reports a process ended by SIGPIPE
    except KeyboardInterrupt:
        print(f"mobilenets {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, MemoryError) as err:
        print(f"mobilenets {args.command}: error: {describe_error(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
