"""``mobilenets study``: re-run one of the MobileNets paper's accuracy claims at small scale."""

from __future__ import annotations

import argparse
import sys

from tabulate import tabulate

from ..study import FULL_SEEDS, MAX_SEEDS, QUICK_SEEDS, STUDIES


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``study`` command's description and options to its parser."""
    parser.description = (
        "Train the runs of a study of the MobileNets paper's claims (separable vs full convolutions, thin vs "
        "shallow, width, resolution, the α × resolution grid, distillation, the family at matched mult-adds) "
        "with the trainer, once per seed; each finished run is cached in DIR/runs/ (a second invocation trains "
        "only what is missing, an interrupted run is resumed), and the results are aggregated over seeds into "
        "DIR/results.csv, DIR/results.md and PNG plots. Accuracy is the last epoch's, never the best's. "
        "See docs/reproduction.md."
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help=f"the study: {', '.join(STUDIES)}")
    parser.add_argument("--list", action="store_true", help="list the studies, their runs and estimated minutes")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run: the study's quick settings (fewer epochs and images, see --list), {QUICK_SEEDS} seed "
        f"(default: its full settings, {FULL_SEEDS} seeds)",
    )
    parser.add_argument("--seeds", type=int, metavar="N", help=f"seeds 0 … N-1, N from 1 to {MAX_SEEDS}")
    parser.add_argument(
        "--data",
        default="fashion-mnist",
        metavar="SOURCE",
        help="'fashion-mnist' or an image folder (train/ and val/ class subfolders, or class subfolders) "
        "(default: fashion-mnist)",
    )
    parser.add_argument("--out", metavar="DIR", help="the study's folder: its runs, results and plots")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..study import describe_studies, get_study, run_study
    from ..train import NonFiniteLoss, TrainingInterrupted

    if args.list:
        if args.name is not None:
            raise ValueError("--list takes no study name")
        print(tabulate(describe_studies(), headers="keys"))
        return 0
    if args.name is None:
        raise ValueError(f"a study name is required: {', '.join(STUDIES)} (or --list)")
    study = get_study(args.name)
    if args.out is None or not args.out.strip():
        raise ValueError("--out DIR is required: the folder for the study's runs and results")
    try:
        result = run_study(study, out=args.out, data=args.data, seeds=args.seeds, quick=args.quick)
    except NonFiniteLoss as err:
        print(f"mobilenets study: stopped: {err}", file=sys.stderr)
        return 1
    except TrainingInterrupted as err:
        print(f"mobilenets study: {err.args[0].split(';')[0]}; run the same command again to resume", file=sys.stderr)
        return 128 + err.signum
    print(f"results    {', '.join(str(path) for path in result.files)}")
    return 0
