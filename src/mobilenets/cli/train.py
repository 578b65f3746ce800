"""``mobilenets train``: train a model with the paper's recipe, resume a run, print a short report.

Every option is a field of :class:`mobilenets.train.TrainConfig`, built from the field's type,
default and metadata (help, metavar, choices); the defaults are the quick Fashion-MNIST run.
Under ``torchrun --nproc_per_node=N -m mobilenets train ...`` each process runs this command and
only rank 0 writes and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from ..train import NonFiniteLoss, TrainConfig, TrainingInterrupted, resume_config, train
from ..train.config import RESUMABLE, RunSettings, field_types
from ..train.distributed import is_main_process


def _argparse_kwargs(kind: Any) -> dict[str, Any]:
    """argparse's ``type`` and ``nargs`` for a config field of type ``kind``."""
    args = [k for k in typing.get_args(kind) if k is not type(None)] or [kind]
    kind = args[0] if len(args) == 1 else kind
    if typing.get_origin(kind) is tuple:
        items = typing.get_args(kind)
        return {"type": items[0], "nargs": len(items)}
    return {} if kind is str else {"type": kind}


def add_training_options(
    parser: argparse.ArgumentParser, config_type: type, handler: Callable[[argparse.Namespace], int]
) -> None:
    """A training command's options: one per field of ``config_type`` (:func:`add_config_options`),
    ``--resume RUN_DIR`` and ``--json``; ``handler`` runs the command."""
    add_config_options(parser, config_type)
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint, with its saved config; only "
        + ", ".join("--" + name.replace("_", "-") for name in RESUMABLE)
        + " may be given with it",
    )
    parser.add_argument("--json", action="store_true", help="print the final report as JSON")
    parser.set_defaults(handler=handler)


def add_config_options(parser: argparse.ArgumentParser, config_type: type) -> None:
    """An option for each field of the config dataclass ``config_type``, from its type, default and
    metadata; an option not given is None (the config's default applies)."""
    kinds = field_types(config_type)
    settings = {f.name for f in fields(RunSettings)} if issubclass(config_type, RunSettings) else set()
    for f in sorted(fields(config_type), key=lambda f: f.name in settings):  # the run's own options first
        flag = "--" + f.name.replace("_", "-")
        text = f.metadata["help"]
        default = " ".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        text += "" if default is None or "default:" in text else f" (default: {default})"
        if kinds[f.name] is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            cli = {key: f.metadata[key] for key in ("metavar", "choices") if key in f.metadata}
            parser.add_argument(flag, default=None, help=text, **cli, **_argparse_kwargs(kinds[f.name]))


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` command's description and options to its parser."""
    parser.description = (
        "Train a model with the MobileNets recipe (RMSProp with TensorFlow's epsilon, warm-up then exponential "
        "or cosine decay, EMA of the weights, no weight decay on depthwise filters, BN or biases). Writes a "
        "checkpoint every epoch, tracks the best weights, and ends with a short report. Run under "
        "`torchrun --nproc_per_node=N -m mobilenets train ...` for data-parallel training."
    )
    add_training_options(parser, TrainConfig, run)


def run(args: argparse.Namespace) -> int:
    return run_training(args, TrainConfig, resume=resume_config, train=train, command="mobilenets train")


def run_training(
    args: argparse.Namespace,
    config_type: type,
    *,
    resume: Callable[..., Any],
    train: Callable[..., Any],
    command: str,
) -> int:
    """Build a ``config_type`` from the options given (or ``resume`` the run ``--resume`` names, with
    them), ``train`` it and print its report; 1 after a non-finite loss, 128 + N after signal N."""
    given = {f.name: getattr(args, f.name) for f in fields(config_type) if getattr(args, f.name) is not None}
    if args.resume is not None:
        if "out" in given and given.pop("out") != args.resume:
            raise ValueError("--out must not differ from --resume RUN_DIR: a resumed run stays in its folder")
        config = resume(args.resume, **given)
    else:
        config = config_type(**given)
    main = is_main_process()
    try:
        result = train(config, resume=args.resume is not None)
    except NonFiniteLoss as err:
        if main:
            print(f"{command}: stopped: {err}", file=sys.stderr)
        return 1
    except TrainingInterrupted as err:
        if main:
            print(f"{command}: {err}", file=sys.stderr)
        return 128 + err.signum
    if main:
        print(json.dumps(result.to_dict(), indent=2) if args.json else "\n" + result.format())
    return 0
