"""``mobilenets deploy``: a trained run exported to fp32 and int8 (a detection run: fp32), verified, and
timed, in one report."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from ..bench import DEFAULT_TIMING
from ..deploy.export import DEFAULT_MIN_AGREEMENT, DEFAULT_MIN_EVAL_SAMPLES, INT8_FORMATS, VerificationError
from ..deploy.quantize import DEFAULT_CALIB_SAMPLES
from ..deploy.trained import DEFAULT_EVAL_SAMPLES, deploy_run
from .bench import bench_warnings


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``deploy`` command's description and options to its parser."""
    parser.description = (
        "Export RUN_DIR's best weights (from `mobilenets train`) to fp32 and int8 files beside them, verify both "
        "(int8: top-1 agreement and accuracy on the held-out images, calibrated on training images), then time "
        "batch-1 latency of eager PyTorch and both files on the CPU, and print one report. A failed check exits "
        "with status 1. Without the format's extra (deploy; mobile for executorch) it says so and times eager "
        "PyTorch only. A run of `mobilenets detect train` is exported in fp32 only (onnx or openvino), its "
        "detections verified against PyTorch on the first validation images of its data, then eager PyTorch and "
        "the file are timed on the network alone and end to end (preprocessing, network, selection and NMS)."
    )
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", help="a folder written by `mobilenets train` or `mobilenets detect train`"
    )
    parser.add_argument(
        "--format",
        default="onnx",
        choices=list(INT8_FORMATS),
        help="onnx (ONNX Runtime), openvino, or executorch (ExecuTorch on XNNPACK; classifiers only) (default: onnx)",
    )
    parser.add_argument("--data", metavar="SOURCE", help="data to calibrate and verify on (default: the run's)")
    parser.add_argument(
        "--calib-samples",
        type=int,
        metavar="N",
        help=f"training images int8 is calibrated on (default: {DEFAULT_CALIB_SAMPLES})",
    )
    parser.add_argument(
        "--eval-samples",
        type=int,
        metavar="N",
        help=f"held-out images the int8 check runs on, at most (default: {DEFAULT_EVAL_SAMPLES:,})",
    )
    parser.add_argument(
        "--min-agreement",
        type=float,
        metavar="F",
        help=f"required int8 top-1 agreement with fp32 PyTorch, in (0, 1] (default: {DEFAULT_MIN_AGREEMENT})",
    )
    parser.add_argument(
        "--min-eval-samples",
        type=int,
        metavar="N",
        help=f"an int8 check on fewer images fails (default: {DEFAULT_MIN_EVAL_SAMPLES})",
    )
    parser.add_argument("--threads", type=int, metavar="N", help="threads for every runtime (default: the cores)")
    parser.add_argument(
        "--repeats", type=int, default=DEFAULT_TIMING.repeats, metavar="N", help="timed calls (default: %(default)s)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    timing = replace(DEFAULT_TIMING, repeats=args.repeats)
    try:
        with bench_warnings("deploy"):  # a noisy timing: one warning line, not Python's source excerpt
            report = deploy_run(
                args.run_dir,
                fmt=args.format,
                data=args.data,
                calib_samples=args.calib_samples,
                eval_samples=args.eval_samples,
                min_agreement=args.min_agreement,
                min_eval_samples=args.min_eval_samples,
                threads=args.threads,
                timing=timing,
            )
    except VerificationError as err:
        print(f"mobilenets deploy: error: {err} (the files are kept for inspection)", file=sys.stderr)
        return 1
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 0
