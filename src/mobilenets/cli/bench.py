"""``mobilenets bench``: latency, throughput and effective GFLOP/s of models in each runtime, on this machine."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from ..bench import (
    DEFAULT_TIMING,
    GEMM_SIZE,
    INT8_RUNTIMES,
    QUICK,
    QUICK_GEMM_SIZE,
    RUNTIMES,
    BenchWarning,
    Timing,
    benchmark,
    check_batches,
    check_detector_options,
    check_runtimes,
    check_threads,
    default_runtimes,
    format_table,
    gemm_peak,
    int8_gemm_peak,
    warn_if_busy,
)
from ..device import resolve_device
from ..models.base import check_resolution
from ..registry import DETECTION, create_model, get_entry


def comma_list(kind: type):
    """An argparse type: "a,b,c" -> [kind(a), kind(b), kind(c)]."""

    def parse(text: str) -> list:
        try:
            return [kind(item) for item in text.split(",") if item]
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from err

    return parse


@contextmanager
def bench_warnings(command: str) -> Iterator[None]:
    """Print the :class:`BenchWarning`s raised in the block after it, one ``mobilenets COMMAND: warning:`` line
    each on stderr (other warnings are shown as usual)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BenchWarning)
        try:
            yield
        finally:
            for warning in caught:
                if issubclass(warning.category, BenchWarning):
                    print(f"mobilenets {command}: warning: {warning.message}", file=sys.stderr)
                else:
                    warnings.showwarning(
                        warning.message, warning.category, warning.filename, warning.lineno, warning.file, warning.line
                    )


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` command's description and options to its parser."""
    parser.description = (
        "Time each MODEL in each runtime: warm-up calls, then timed calls of one batch, the runtimes taking turns "
        "(an untimed call, then 5 timed ones, each) so that other load falls on all alike; print latency p50/p90, "
        "its spread (p90/p50, IQR), images/s, effective GFLOP/s (2 × counted mult-adds / time) as a fraction of "
        "this machine's measured matrix-multiply peak (cached: the best measurement; fp32 the faster of torch.mm and a "
        "oneDNN 1×1 convolution, or for the int8 "
        "runtimes int8 torch._int_mm), and peak memory; warn "
        "when other processes load the cores or a spread is too wide to trust. Runtimes: eager (PyTorch, BN "
        "folded, channels_last), compile (torch.compile), onnx / onnx-int8 (ONNX Runtime, fp32 or int8 QDQ), "
        "openvino / openvino-int8 (OpenVINO CPU), executorch / executorch-int8 (ExecuTorch on XNNPACK, a program "
        "written for each batch size). "
        "int8 runtimes are calibrated on random images here (speed only; `mobilenets export --int8` checks accuracy). "
        "A detector (eager, onnx, openvino; batch 1) is timed twice: its network alone on a (1, 3, R, R) input, and "
        "end to end on a 640×480 picture (resize, network, box decoding, NMS: torchvision's in eager, the NumPy step "
        "of its exported file in onnx and openvino)."
    )
    parser.add_argument("models", nargs="+", metavar="MODEL", help="registered model names (see `mobilenets list`)")
    parser.add_argument(
        "--runtime",
        type=comma_list(str),
        metavar="R,...",
        help=f"comma-separated, among {', '.join(RUNTIMES)} (default: eager,onnx,openvino on the CPU, eager on CUDA)",
    )
    parser.add_argument("--batch", type=comma_list(int), default=[1], metavar="B,...", help="batch sizes (default 1)")
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads for every runtime, at most the cores this process may use (default: all of them, or "
        "OMP_NUM_THREADS when set)",
    )
    parser.add_argument("--resolution", type=int, metavar="R", help="input size in pixels (default: each model's)")
    parser.add_argument("--device", metavar="D", help="cpu or cuda[:i] (default: cuda when available)")
    parser.add_argument(
        "--warmup",
        type=int,
        metavar="N",
        help=f"untimed calls first (default {DEFAULT_TIMING.warmup}; not with --quick)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        metavar="N",
        help=f"timed calls per runtime (default {DEFAULT_TIMING.repeats}; not with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK.warmup} warm-up, {QUICK.repeats} repeats, small GEMM: a smoke test",
    )
    parser.add_argument(
        "--refresh",
        action="store_true",
        help="measure the GEMM peaks again (the cache keeps the best of every measurement)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Every option checked before anything is measured.
    device = resolve_device(args.device)
    threads = check_threads(args.threads)
    runtimes = check_runtimes(default_runtimes(device) if args.runtime is None else args.runtime, device)
    batches = check_batches(args.batch)
    if args.resolution is not None:
        check_resolution(args.resolution)
    calls = {name: getattr(args, name) for name in ("warmup", "repeats") if getattr(args, name) is not None}
    if args.quick and calls:
        raise ValueError(f"--quick sets the calls itself: give --quick or --{next(iter(calls))}, not both")
    timing = QUICK if args.quick else Timing(**calls)
    # A detector resizes every picture to the size it is built at: --resolution builds it there.
    sized = {} if args.resolution is None else {"resolution": args.resolution}
    detectors = [name for name in args.models if get_entry(name).task == DETECTION]
    if detectors:
        check_detector_options(runtimes, batches)
    models = [create_model(name, **(sized if name in detectors else {})) for name in args.models]
    with bench_warnings("bench"):
        warn_if_busy(threads, device)
        size = QUICK_GEMM_SIZE if args.quick else GEMM_SIZE
        peak = gemm_peak(device, threads, size=size, refresh=args.refresh)
        int8_peak = None
        if any(runtime in INT8_RUNTIMES for runtime in runtimes):
            int8_peak = int8_gemm_peak(device, threads, size=size, refresh=args.refresh)
        results = [
            result
            for model in models
            for result in benchmark(
                model,
                runtimes,
                batches=batches,
                threads=threads,
                device=device,
                timing=timing,
                resolution=args.resolution,
                peak=peak,
                int8_peak=int8_peak,
            )
        ]
        if args.json:
            peaks = {"gemm_peak_gflops": peak, "int8_gemm_peak_gops": int8_peak}
            print(json.dumps(peaks | {"results": [r.to_dict() for r in results]}, indent=2))
        else:
            print(format_table(results))
    return 0
