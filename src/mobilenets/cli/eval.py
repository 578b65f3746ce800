"""``mobilenets eval``: top-1, top-5 and per-class accuracy of trained weights, and a confusion-matrix PNG."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..checkpoint import check_writable_file
from ..train.evaluate import evaluate_weights
from ..train.records import plot_confusion
from ..weights import WEIGHTS_FILES
from . import describe_error


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``eval`` command's description and options to its parser."""
    parser.description = (
        "Evaluate weights written by `mobilenets train` (best.safetensors, or the last.safetensors checkpoint: "
        "its EMA weights) or a state dict in our or torchvision's names: top-1, top-5 and per-class accuracy, and a "
        "confusion-matrix PNG. Model arguments and normalisation come from the file when it records them."
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
    parser.add_argument("--json", action="store_true", help="print JSON (accuracies as fractions) instead of text")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Checked before evaluating, which may take long; a full disk is still reported after the figures.
    if args.confusion is None:
        confusion = Path(args.weights).parent / "eval-confusion.png"
    elif Path(args.confusion).suffix.lower() != ".png":
        raise ValueError(f"--confusion must end with .png (a PNG is written), got {args.confusion!r}")
    else:
        confusion = check_writable_file(args.confusion, "--confusion", make_folder=True)
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
    )
    # The figures first: a confusion matrix that cannot be written must not hide them.
    if args.json:
        print(json.dumps({**result.to_dict(), "confusion_png": str(confusion)}, indent=2))
    else:
        print(result.format())
    sys.stdout.flush()
    title = f"{result.model}: {Path(args.weights).name}"
    try:
        plot_confusion(result, confusion, title, resolution=result.resolution, split=args.split)
    except OSError as err:
        print(
            f"mobilenets eval: error: confusion matrix not written to {str(confusion)!r}: {describe_error(err)} "
            "(choose another place with --confusion)",
            file=sys.stderr,
        )
        return 1
    if not args.json:
        print(f"confusion matrix: {confusion}")
    return 0
