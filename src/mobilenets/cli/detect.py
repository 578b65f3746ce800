"""``mobilenets detect``: train object detectors (``detect train``), evaluate their weights with the
COCO metrics (``detect eval``), and find objects in images (``detect predict``).

``detect train``'s options are the fields of :class:`mobilenets.train.detect.DetectConfig`, as
``mobilenets train``'s are those of ``TrainConfig``; ``torchrun ... -m mobilenets detect train ...``
trains data-parallel, rank 0 alone writing and printing.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from ..checkpoint import write_json
from ..detect import DEFAULT_SCORE_THRESHOLD, drawn_name, open_detector, save_drawn
from ..predict import image_files
from ..train.detect import DetectConfig, evaluate_detection_weights, resume_detection_config, train_detector
from ..train.detection_metrics import plot_precision_recall
from . import describe_error
from .eval import plot_path
from .train import add_training_options, run_training

DETECTIONS_JSON = "detections.json"
SHOWN = 5  # detections printed per image (all are in the JSON and drawn)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``detect`` group's description and its commands to its parser."""
    parser.description = (
        "Object detection with MobileNet backbones (SSD, SSDLite, Faster R-CNN): train a detector, evaluate it "
        "with the COCO metrics, draw its boxes on images."
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    text = "train a detector (default: a small SSDLite on the built-in Fashion-MNIST scenes)"
    train = sub.add_parser("train", help=text, description=text)
    train.description = (
        "Train a detector: SGD with momentum, warm-up then cosine decay, the validation mAP@[.5:.95] every "
        "--eval-every epochs choosing the best weights. Writes a checkpoint every epoch (resume with --resume), "
        "metrics.jsonl/csv, curves.png, and at the end the precision-recall curves and a few validation images "
        "with their boxes drawn. Run under `torchrun --nproc_per_node=N -m mobilenets detect train ...` for "
        "data-parallel training."
    )
    add_training_options(train, DetectConfig, run_train)

    text = "COCO mAP of a detector's weights from `detect train`"
    evaluate = sub.add_parser("eval", help=text, description=text)
    evaluate.description = (
        "Evaluate a detector's weights from `mobilenets detect train` (best.safetensors, or last.safetensors): "
        "COCO mAP@[.5:.95], @.5, @.75, for small, medium and large objects, and per class, and a precision-recall "
        "PNG. The model, its classes and its data come from the file."
    )
    evaluate.add_argument("--weights", required=True, metavar="FILE", help="weights from `mobilenets detect train`")
    evaluate.add_argument(
        "--data", metavar="SOURCE", help="COCO or VOC folder, or the built-in set (default: the data it was trained on)"
    )
    evaluate.add_argument("--split", default="val", choices=("train", "val"), help="which split (default: val)")
    evaluate.add_argument("--limit", type=int, metavar="N", help="evaluate at most N images (quick checks)")
    evaluate.add_argument("--batch-size", type=int, default=8, metavar="B", help="images per batch (default: 8)")
    evaluate.add_argument("--workers", type=int, default=0, metavar="N", help="data-loading processes (default: 0)")
    evaluate.add_argument("--device", metavar="DEVICE", help="torch device (default: CUDA when available)")
    evaluate.add_argument(
        "--plot",
        metavar="PNG",
        help="where to write the precision-recall curves (default: eval-precision-recall.png beside the weights)",
    )
    evaluate.add_argument("--json", action="store_true", help="print JSON (APs as fractions) instead of text")
    evaluate.set_defaults(handler=run_eval)

    text = "find objects in images and draw their boxes"
    predict = sub.add_parser("predict", help=text, description=text)
    predict.description = (
        "Run a detector on images: its weights from `mobilenets detect train`, or the detector exported by "
        "`mobilenets export` (.onnx, .xml), run in its runtime with the selection and NMS its metadata describes. "
        f"Writes {DETECTIONS_JSON} (for each "
        "image its boxes in pixels x0, y0, x1, y1, class names and scores) and each image with its boxes drawn "
        "and labelled into --out. An image that cannot be read gets a one-line error, the others still run, and "
        "the exit status is then 1."
    )
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or folders of them (recursively)")
    predict.add_argument(
        "--weights",
        required=True,
        metavar="FILE",
        help="weights from `mobilenets detect train`, or a detector exported by `mobilenets export` (.onnx, .xml)",
    )
    predict.add_argument("--out", required=True, metavar="DIR", help="folder for the JSON and the drawn images")
    predict.add_argument(
        "--score-threshold",
        type=float,
        default=DEFAULT_SCORE_THRESHOLD,
        metavar="S",
        help=f"keep the boxes scoring at least S, in [0, 1] (default: {DEFAULT_SCORE_THRESHOLD})",
    )
    predict.add_argument(
        "--device", metavar="DEVICE", help="torch device (default: CUDA when available; an exported file: the CPU)"
    )
    predict.set_defaults(handler=run_predict)


def run_train(args: argparse.Namespace) -> int:
    return run_training(
        args, DetectConfig, resume=resume_detection_config, train=train_detector, command="mobilenets detect train"
    )


def run_eval(args: argparse.Namespace) -> int:
    plot = plot_path(args.plot, args.weights, "eval-precision-recall.png", "--plot")
    metrics, info = evaluate_detection_weights(
        args.weights,
        args.data,
        split=args.split,
        limit=args.limit,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
    )
    if args.json:
        fields_ = {key: info[key] for key in ("model", "data", "split", "images")}
        print(json.dumps({**fields_, **metrics.to_dict(), "precision_recall_png": str(plot)}, indent=2))
    else:
        print(f"{info['model']}: {info['images']:,} {info['split']} images of {info['data']}")
        print(metrics.format())
    sys.stdout.flush()
    try:
        plot_precision_recall(metrics, plot)
    except OSError as err:
        print(
            f"mobilenets detect: error: precision-recall curves not written to {str(plot)!r}: {describe_error(err)} "
            "(choose another place with --plot)",
            file=sys.stderr,
        )
        return 1
    if not args.json:
        print(f"precision-recall curves: {plot}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    if not 0 <= args.score_threshold <= 1:
        raise ValueError(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {args.out!r} is a file; give a folder")
    images = image_files(args.images)
    detector = open_detector(args.weights, device=args.device, score_threshold=args.score_threshold)
    out.mkdir(parents=True, exist_ok=True)
    results, taken, failed = [], set(), 0
    for image in images:
        try:
            pixels, detections = detector(image)
        except (ValueError, FileNotFoundError) as err:
            print(f"mobilenets detect: error: {err}", file=sys.stderr)
            failed += 1
            continue
        drawn = out / drawn_name(image, taken)
        save_drawn(pixels, detections, detector.classes, drawn)
        results.append({"image": str(image), "drawn": str(drawn), "detections": [asdict(d) for d in detections]})
        shown = ", ".join(f"{d.name} {d.score:.2f}" for d in detections[:SHOWN])
        more = f" and {len(detections) - SHOWN} more" if len(detections) > SHOWN else ""
        found = f"{len(detections)} object{'' if len(detections) == 1 else 's'}{': ' if shown else ''}"
        print(f"{image}: {found}{shown}{more} -> {drawn}")
    write_json(out / DETECTIONS_JSON, results)
    print(f"boxes of {len(results)} images: {out / DETECTIONS_JSON}")
    if failed:
        print(f"mobilenets detect: {failed} of {len(images)} images could not be read", file=sys.stderr)
    return 1 if failed else 0
