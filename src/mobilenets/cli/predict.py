"""``mobilenets predict``: the top-k classes of images, with their probabilities."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from ..data.decode import MAX_ASPECT_RATIO
from ..predict import ARTIFACT_FORMATS, Classifier, artifact_format, image_files, load_artifact
from ..registry import create_model, get_entry
from ..weights import PRETRAINED, WEIGHTS_FILES, load_model
from . import NO_MODEL


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``predict`` command's description and options to its parser."""
    parser.description = (
        "Classify each image (any format PIL reads; greyscale, RGBA and large images included) and print "
        "its most likely classes with their probabilities. An image that cannot be read gets a one-line "
        "error on stderr, the others still run, a last line counts them, and the exit status is then 1. Images "
        "are decoded upright (EXIF orientation) and refused when larger than PIL's decompression-bomb limit "
        f"or more than {MAX_ASPECT_RATIO}:1 between their sides."
    )
    # MODEL may be left out, so the words are split by hand (see _model_and_images); two positionals
    # rather than one list keep `predict MODEL --weights W IMAGE` working (argparse parses in chunks).
    parser.add_argument(
        "model",
        metavar="[MODEL]",
        help="a registered model name (see `mobilenets list`); may be left out when --weights is a file from "
        "`mobilenets train`, which records it",
    )
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image files, or folders of them (recursively)")
    parser.add_argument(
        "--weights",
        metavar="FILE|pretrained",
        help=(
            f"weights to load: '{PRETRAINED}' (the packaged ImageNet weights, for mobilenet_v2_1.0_224) or "
            f"{WEIGHTS_FILES}; their input size, normalisation and class names come with them. Or a file "
            f"written by `mobilenets export` ({', '.join(ARTIFACT_FORMATS)}), run in its runtime (on the CPU unless "
            "--device says otherwise) as its metadata says. Without it the model is untrained and a warning says so"
        ),
    )
    parser.add_argument(
        "--topk",
        type=int,
        metavar="K",
        help="how many classes to print, 1 to the class count (default 5, or all when fewer)",
    )
    parser.add_argument(
        "--draft",
        action="store_true",
        help=(
            "decode JPEGs at a reduced scale (1/2 to 1/8, never below the resize size): faster for large photos, "
            "but probabilities differ from the reference preprocessing (see docs/benchmarks.md)"
        ),
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print JSON: a list of {"image", "top": [{"index", "label", "prob"}]}, prob in 0-1',
    )
    parser.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: cuda when available)")
    parser.set_defaults(handler=run)


def _model_and_images(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """MODEL (None: the one --weights records) and the images, from the command's words."""
    first, rest = args.model, args.images
    try:
        get_entry(first)
    except ValueError:
        if not Path(first).exists():
            raise  # an unknown name, with the names it is close to
        if args.weights is None:
            raise ValueError(NO_MODEL) from None
        return None, [first, *rest]
    if not rest:
        raise ValueError(f"give the images to classify after the model name {first!r}")
    return first, rest


def run(args: argparse.Namespace) -> int:
    name, paths = _model_and_images(args)
    images = image_files(paths)
    artifact = args.weights is not None and artifact_format(args.weights) is not None
    if artifact:
        model = load_artifact(args.weights, name, device=args.device)
    else:
        model = load_model(args.weights, name) if args.weights is not None else create_model(name)
    num_classes = model.meta.num_classes
    if args.topk is not None and not 1 <= args.topk <= num_classes:
        raise ValueError(f"--topk must be an integer in [1, {num_classes}] (the class count), got {args.topk}")
    topk = args.topk or min(5, num_classes)
    classifier = Classifier(model, topk, None if artifact else args.device, draft=args.draft)
    if args.weights is None:
        print(
            f"mobilenets predict: warning: no --weights: {model.meta.name} is untrained, its predictions are random "
            f"(try --weights {PRETRAINED} with mobilenet_v2_1.0_224)",
            file=sys.stderr,
        )
    results, failed = [], 0
    for image in map(str, images):
        try:
            top = classifier(image)
        except (ValueError, FileNotFoundError) as err:
            print(f"mobilenets predict: error: {err}", file=sys.stderr)
            failed += 1
            continue
        results.append({"image": image, "top": [asdict(p) for p in top]})
        if not args.json:
            print(image)
            for rank, p in enumerate(top, 1):
                print(f"  {rank}. {100 * p.prob:6.2f} %  {p.label} ({p.index})")
    if args.json:
        print(json.dumps(results, indent=2))
    if failed:
        print(f"mobilenets predict: {failed} of {len(images)} images could not be classified", file=sys.stderr)
    return 1 if failed else 0
