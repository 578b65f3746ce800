"""``mobilenets export``: write a model as ONNX, TorchScript, OpenVINO IR or ExecuTorch (fp32 or int8), verified."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import Any

from torch import nn

from ..checkpoint import read_saved_weights
from ..deploy import FORMATS, VerificationError, calibration_data, export_model
from ..deploy.export import (
    DEFAULT_MIN_AGREEMENT,
    DEFAULT_MIN_CALIBRATION,
    DEFAULT_MIN_EVAL_SAMPLES,
    DEFAULT_TOLERANCE,
    check_destination,
)
from ..deploy.quantize import DEFAULT_CALIB_SAMPLES, DEFAULT_EVAL_SAMPLES
from ..detect import load_detector
from ..embed import load_embedder
from ..models.embedding import EMBEDDING
from ..registry import CLASSIFICATION, DETECTION, create_model, get_entry, same_architecture
from ..weights import PRETRAINED, WEIGHTS_FILES, load_model
from . import NO_MODEL


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``export`` command's description and options to its parser."""
    parser.description = (
        "Write MODEL with BatchNorm folded and a dynamic batch dimension, then load the file back in its runtime "
        "and compare it with PyTorch: fp32, the largest absolute output difference on random inputs; int8, the "
        "top-1 agreement (and accuracy) on real images, saying how many were used for calibration and for the "
        "check. Any NaN or infinite output fails. A failed check exits with status 1. The file records the model "
        "name, input size, mean/std and class names (ONNX metadata_props, OpenVINO rt_info, ExecuTorch a .pte.json "
        "file beside the program, which takes batch 1 only). A detector (onnx or openvino, fp32) takes one RGB picture "
        "in 0..1 resized to its resolution and gives its boxes and class probabilities (SSD, selected by the NumPy "
        "step mobilenets.deploy.detection.postprocess) or its detections (Faster R-CNN); it is checked on validation "
        "scenes of the built-in detection set: every detection of PyTorch and of the file must be matched by one of "
        "the other (same class, IoU >= 0.99, scores within 1e-3)."
    )
    parser.add_argument(
        "model",
        nargs="?",
        help="registered model name (see `mobilenets list`); with --weights from `mobilenets train`, the name it "
        "records by default",
    )
    parser.add_argument(
        "--format",
        required=True,
        choices=list(FORMATS),
        help="onnx (.onnx), torchscript (.pt), openvino (.xml + .bin), executorch (.pte + .pte.json, XNNPACK)",
    )
    parser.add_argument("--out", required=True, metavar="PATH", help="file to write, with the format's suffix")
    parser.add_argument(
        "--weights",
        metavar="FILE",
        help=f"'{PRETRAINED}' (the packaged ImageNet weights, for mobilenet_v2_1.0_224) or {WEIGHTS_FILES} "
        "(default: random weights)",
    )
    parser.add_argument("--resolution", type=int, metavar="R", help="input size in pixels, >= 32 (default: model's)")
    parser.add_argument("--num-classes", type=int, metavar="N", help="classifier outputs (default: the model's, 1000)")
    parser.add_argument("--in-chans", type=int, metavar="C", help="input channels, 1 for Fashion-MNIST (default 3)")
    parser.add_argument("--width-mult", type=float, metavar="A", help="width multiplier α > 0 (default: the model's)")
    parser.add_argument(
        "--int8",
        action="store_true",
        help="int8 post-training static quantization (per-channel weights; onnx: QDQ with ONNX Runtime, openvino: "
        "NNCF, executorch: PT2E with the XNNPACK quantizer); needs --calib",
    )
    parser.add_argument(
        "--calib",
        metavar="DATA",
        help="calibration data for --int8: 'fashion-mnist' or an image folder (class subfolders, optionally train/ "
        "and val/); calibrated on its train split, verified on its val split",
    )
    # The int8 options and --tolerance default to None, so that one given where it has no use is refused.
    parser.add_argument(
        "--calib-samples", type=int, metavar="N", help=f"int8: calibration images (default {DEFAULT_CALIB_SAMPLES})"
    )
    parser.add_argument(
        "--eval-samples",
        type=int,
        metavar="N",
        help=f"int8: images the check runs on (default {DEFAULT_EVAL_SAMPLES})",
    )
    parser.add_argument(
        "--min-calibration",
        type=int,
        metavar="N",
        help=f"int8: fewer calibration images found is an error (default {DEFAULT_MIN_CALIBRATION})",
    )
    parser.add_argument(
        "--min-eval-samples",
        type=int,
        metavar="N",
        help=f"int8: a check on fewer images fails (default {DEFAULT_MIN_EVAL_SAMPLES})",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        metavar="T",
        help=f"fp32: allowed max |difference|, times the largest output when above 1 (default {DEFAULT_TOLERANCE})",
    )
    parser.add_argument(
        "--min-agreement",
        type=float,
        metavar="F",
        help=f"int8: required top-1 agreement with fp32 PyTorch, in (0, 1] (default {DEFAULT_MIN_AGREEMENT})",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=run)


def source_task(model: str | None, weights: str | None) -> str:
    """What the model to export does: its registered task (a name given), else the task its weights
    file records (``detect train``: detection, ``embed train``: embedding), else classification."""
    if model:
        return get_entry(model).task
    if weights is None or weights == PRETRAINED:
        return CLASSIFICATION
    try:
        return read_saved_weights(weights)[1].get("task") or CLASSIFICATION
    except (OSError, ValueError):  # not a safetensors file: load_model reads or refuses it
        return CLASSIFICATION


def load_detector_to_export(model: str | None, weights: str | None, given: dict[str, Any]) -> nn.Module:
    """A detector built by name with ``given`` arguments, or as its weights file records it (with its class names)."""
    if weights is None:
        return create_model(model, **given)
    if given:
        raise ValueError(f"--{next(iter(given)).replace('_', '-')}: a detector's weights file records its arguments")
    detector, classes = load_detector(weights)
    if model is not None and not same_architecture(model, detector.meta.name):
        raise ValueError(f"weights {weights!r} are of {detector.meta.name}, not {model}")
    detector.meta = replace(detector.meta, labels=tuple(classes))
    return detector


def run(args: argparse.Namespace) -> int:
    task = source_task(args.model, args.weights)
    if task != CLASSIFICATION and args.int8:  # int8 is verified by top-1 agreement: single-label classifiers only
        raise ValueError(f"--int8 is for classifiers; {task} models export in fp32 (leave out --int8)")
    if args.int8 and not args.calib:
        raise ValueError("--int8 needs --calib DATA: 'fashion-mnist' or a folder of images in class subfolders")
    int8_only = ("calib", "calib_samples", "eval_samples", "min_calibration", "min_eval_samples", "min_agreement")
    unused = [name for name in int8_only if getattr(args, name) is not None] if not args.int8 else []
    if unused:
        raise ValueError(f"--{unused[0].replace('_', '-')} is only used with --int8")
    if args.int8 and args.tolerance is not None:
        raise ValueError("--tolerance is only used without --int8 (the fp32 check; int8 is checked by --min-agreement)")
    out = check_destination(args.format, args.out, args.int8)
    chosen = {
        "num_classes": args.num_classes,
        "in_chans": args.in_chans,
        "width_mult": args.width_mult,
        "resolution": args.resolution,
    }
    given = {key: value for key, value in chosen.items() if value is not None}
    if not (args.model or args.weights):
        raise ValueError(NO_MODEL)
    # Weights set meta too (resolution, normalisation); files from `train` also the model's name and arguments.
    if task == DETECTION:
        model = load_detector_to_export(args.model, args.weights, given)
    elif task == EMBEDDING:
        if given:
            raise ValueError(
                f"--{next(iter(given)).replace('_', '-')}: an embedding model's weights file records its arguments"
            )
        model = load_embedder(args.weights)
    elif args.weights is not None:
        model = load_model(args.weights, args.model, **given)
    else:
        model = create_model(args.model, **given)
    resolution = args.resolution if args.resolution is not None else model.meta.resolution
    calibration = evaluation = calib_samples = None
    if args.int8:
        calib_samples = DEFAULT_CALIB_SAMPLES if args.calib_samples is None else args.calib_samples
        eval_samples = DEFAULT_EVAL_SAMPLES if args.eval_samples is None else args.eval_samples
        calibration, evaluation = calibration_data(
            args.calib, model, resolution=resolution, calib_samples=calib_samples, eval_samples=eval_samples
        )
    limits = ("tolerance", "min_agreement", "min_calibration", "min_eval_samples")
    given_limits = {name: getattr(args, name) for name in limits if getattr(args, name) is not None}
    try:
        report = export_model(
            model,
            args.format,
            out,
            resolution=resolution,
            calibration=calibration,
            evaluation=evaluation,
            calibration_asked=calib_samples,
            **given_limits,
        )
    except VerificationError as err:
        print(f"mobilenets export: error: {err} (the file is kept for inspection)", file=sys.stderr)
        return 1
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_text())
    return 0
