"""``mobilenets eval``: top-1, top-5 and per-class accuracy of trained weights, and a confusion-matrix PNG;
for multi-label weights, each label's AP, F1, precision and recall, the mean AP, and precision-recall curves."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..checkpoint import check_writable_file
from ..predict import DEFAULT_THRESHOLD
from ..train.evaluate import evaluate_weights
from ..train.multilabel import MultiLabelResult, plot_pr_curves
from ..train.records import plot_confusion
from ..weights import WEIGHTS_FILES
from . import describe_error


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``eval`` command's description and options to its parser."""
    parser.description = (
        "Evaluate weights written by `mobilenets train` (best.safetensors, or the last.safetensors checkpoint: "
        "its EMA weights) or a state dict in our or torchvision's names: top-1, top-5 and per-class accuracy, and a "
        "confusion-matrix PNG. Weights of a multi-label run: each label's average precision, F1, precision, "
        "recall and support, the mean AP, and a PNG of the precision-recall curves. Model arguments and "
        "normalisation come from the file when it records them."
    )
    parser.add_argument(
        "model",
        nargs="?",
        help="registered model name the weights belong to (default: the one the weights file records; "
        "see `mobilenets list`)",
    )
    parser.add_argument(
        "--weights",
        required=True,
        metavar="FILE",
        help=WEIGHTS_FILES,
    )
    parser.add_argument(
        "--data",
        metavar="SOURCE",
        help="'fashion-mnist', an image folder or a CIFAR python-format folder (default: the data it was trained on)",
    )
    parser.add_argument("--split", default="val", choices=("train", "val"), help="which split (default: val)")
    parser.add_argument("--resolution", type=int, metavar="R", help="input size (default: the trained one)")
    parser.add_argument("--in-chans", type=int, choices=(1, 3), help="input channels (default: the trained ones)")
    parser.add_argument("--crop-pct", type=float, metavar="F", help="central crop fraction (default: as in training)")
    parser.add_argument("--limit", type=int, metavar="N", help="evaluate a random (seeded) subset of N images")
    parser.add_argument("--batch-size", type=int, default=256, metavar="B", help="images per batch (default: 256)")
    parser.add_argument("--workers", type=int, default=0, metavar="N", help="data-loading processes (default: 0)")
    parser.add_argument("--device", metavar="DEVICE", help="torch device (default: CUDA when available)")
    parser.add_argument(
        "--confusion",
        metavar="PNG",
        help="where to write the confusion matrix (default: eval-confusion.png beside the weights)",
    )
    parser.add_argument(
        "--pr-curves",
        metavar="PNG",
        help="multi-label weights: where to write the precision-recall curves (default: eval-pr-curves.png beside "
        "the weights)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        metavar="P",
        help=f"multi-label weights: probability from which a label counts as predicted, for F1, precision and "
        f"recall (default: {DEFAULT_THRESHOLD})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON (accuracies as fractions) instead of text")
    parser.set_defaults(handler=run)


def plot_path(given: str | None, weights: str, default: str, option: str) -> Path:
    """Where a plot goes: ``given`` (checked to be a writable .png) or ``default`` beside the weights."""
    if given is None:
        return Path(weights).parent / default
    if Path(given).suffix.lower() != ".png":
        raise ValueError(f"{option} must end with .png (a PNG is written), got {given!r}")
    return check_writable_file(given, option, make_folder=True)


def run(args: argparse.Namespace) -> int:
    # Checked before evaluating, which may take long; a full disk is still reported after the figures.
    confusion = plot_path(args.confusion, args.weights, "eval-confusion.png", "--confusion")
    pr_curves = plot_path(args.pr_curves, args.weights, "eval-pr-curves.png", "--pr-curves")
    result = evaluate_weights(
        args.model,
        args.weights,
        args.data,
        split=args.split,
        resolution=args.resolution,
        in_chans=args.in_chans,
        crop_pct=args.crop_pct,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        limit=args.limit,
        threshold=args.threshold,
    )
    multilabel = isinstance(result, MultiLabelResult)
    what, png, option = (
        ("precision-recall curves", pr_curves, "--pr-curves")
        if multilabel
        else ("confusion matrix", confusion, "--confusion")
    )
    # The figures first: a plot that cannot be written must not hide them.
    if args.json:
        key = "pr_curves_png" if multilabel else "confusion_png"
        print(json.dumps({**result.to_dict(), key: str(png)}, indent=2))
    else:
        print(result.format())
    sys.stdout.flush()
    title = f"{result.model}: {Path(args.weights).name}"
    try:
        if multilabel:
            plot_pr_curves(result, png, f"{title} ({args.split} split)")
        else:
            plot_confusion(result, png, title, resolution=result.resolution, split=args.split)
    except OSError as err:
        print(
            f"mobilenets eval: error: {what} not written to {str(png)!r}: {describe_error(err)} "
            f"(choose another place with {option})",
            file=sys.stderr,
        )
        return 1
    if not args.json:
        print(f"{what}: {png}")
    return 0
