"""The runtime table of docs/deploy.md: MobileNet V1, MobileNetV2 and ShuffleNet V2 (α = 1, 224²) in every
CPU runtime, fp32 and int8, at batch 1 and 8, beside timm's and torchvision's own models of the same
architectures in eager PyTorch and exported to ONNX Runtime.

Run in the benchmark environment (timm lives only there; ``bash bench/setup.sh`` creates it):

    .venv-bench/bin/python bench/runtime_table.py [--threads 2] [--batches 1,8] [--json FILE] [--quick]

Each model at each batch size is one group: its rows (ours in every runtime, the peers) are timed by
``mobilenets.bench.measure`` in turns, so that a change in the machine's load falls on all of them
alike. The fp32 and int8 GEMM peaks are measured before and after all groups and the better of each kept
(a peak read under load is low). Then, per runtime, the median share of its peak over the groups and
the int8 speed-up over the same runtime's fp32. Weights are random (speed does not depend on them);
int8 is calibrated on random images (its accuracy is measured elsewhere: docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import timm
import torch
import torchvision
from latency import peer_entries
from tabulate import tabulate

from mobilenets import create_model
from mobilenets.bench import (
    GEMM_SIZE,
    INT8_RUNTIMES,
    QUICK,
    QUICK_GEMM_SIZE,
    RUNTIMES,
    BenchResult,
    Timing,
    format_table,
    gemm_peak,
    int8_gemm_peak,
    measure,
    model_entries,
    torch_threads,
)

# Ours, and the other libraries' models of the same architecture: (library, name).
MODELS = {
    "mobilenet_v1_1.0_224": (("timm", "mobilenetv1_100"),),
    "mobilenet_v2_1.0_224": (("timm", "mobilenetv2_100"), ("torchvision", "mobilenet_v2")),
    "shufflenet_v2_1.0": (("torchvision", "shufflenet_v2_x1_0"),),
}
OURS = tuple(r for r in RUNTIMES if r != "compile")  # compile: minutes of compilation for eager's speed


def peer(library: str, name: str) -> torch.nn.Module:
    """Another library's model, randomly initialised (nothing is downloaded)."""
    if library == "timm":
        return timm.create_model(name, pretrained=False)
    return getattr(torchvision.models, name)(weights=None)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for every runtime (default 2)")
    parser.add_argument("--batches", default="1,8", help="batch sizes, comma-separated (default 1,8)")
    names = ",".join(MODELS)
    parser.add_argument("--models", default=names, help=f"ours, comma-separated (default {names})")
    parser.add_argument("--quick", action="store_true", help="a smoke test: few calls, a small GEMM")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    args = parser.parse_args()
    try:
        args.batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        parser.error(f"--batches: comma-separated integers, got {args.batches!r}")
    if any(b < 1 for b in args.batches):
        parser.error(f"--batches: each at least 1, got {args.batches}")
    args.models = args.models.split(",")
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"--models: {unknown} not among {list(MODELS)}")
    return args


def peaks(threads: int, size: int) -> tuple[float, float]:
    """(fp32 GFLOP/s, int8 GOP/s) measured now."""
    return gemm_peak("cpu", threads, size=size, refresh=True), int8_gemm_peak("cpu", threads, size=size, refresh=True)


def summary(results: list[BenchResult]) -> str:
    """Per runtime of ours: the median share of its peak over the groups, and int8's speed-up over fp32."""
    ours = [r for r in results if r.model in MODELS]
    shares: dict[str, list[float]] = defaultdict(list)
    for r in ours:
        shares[r.runtime].append(r.peak_fraction)
    p50 = {(r.model, r.batch, r.runtime): r.p50_ms for r in ours}
    rows = []
    for runtime in OURS:
        if runtime not in shares:
            continue
        low, high = min(shares[runtime]), max(shares[runtime])
        row = [runtime, f"{100 * statistics.median(shares[runtime]):.0f} %", f"{100 * low:.0f}–{100 * high:.0f} %"]
        if runtime in INT8_RUNTIMES:
            fp32 = runtime.removesuffix("-int8")
            speedups = [p50[(m, b, fp32)] / ms for (m, b, r), ms in p50.items() if r == runtime and (m, b, fp32) in p50]
            row.append(f"{statistics.median(speedups):.2f}×" if speedups else "-")
        else:
            row.append("")
        rows.append(row)
    headers = ["runtime (ours)", "of its peak, median", "range", "int8 ÷ fp32 speed, median"]
    return tabulate(rows, headers, disable_numparse=True)


def main() -> int:
    args = parse_args()
    timing = QUICK if args.quick else Timing(warmup=10, repeats=50, block=5)
    size = QUICK_GEMM_SIZE if args.quick else GEMM_SIZE
    cpu = torch.device("cpu")
    before = peaks(args.threads, size)
    results: list[BenchResult] = []
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp, torch_threads(args.threads):
        for name in args.models:
            ours = create_model(name)
            resolution = ours.meta.resolution
            for batch in args.batches:
                workdir = Path(tmp) / f"{name}-batch{batch}"
                workdir.mkdir()
                x = rng.standard_normal((batch, 3, resolution, resolution), dtype=np.float32)
                entries = model_entries(
                    ours, OURS, batch=batch, workdir=workdir, device=cpu, threads=args.threads,
                    resolution=resolution, alone=False,
                )  # fmt: skip
                for library, other in MODELS[name]:
                    entries += peer_entries(peer(library, other), f"{library} {other}", x, args.threads, workdir)
                group = measure(entries, x, device=cpu, threads=args.threads, timing=timing)
                print(f"{name}, batch {batch}: {len(group)} rows timed", file=sys.stderr, flush=True)
                results += group
    after = peaks(args.threads, size)
    fp32_peak, int8_peak = max(before[0], after[0]), max(before[1], after[1])
    results = [replace(r, gemm_peak_gflops=int8_peak if r.runtime in INT8_RUNTIMES else fp32_peak) for r in results]
    setting = f"{args.threads} threads, {timing.repeats} timed calls each, {timing.block} per turn"
    print(f"Runtimes at batch {', '.join(map(str, args.batches))}: {setting}\n")
    print(format_table(results))
    print(f"\nfp32 GEMM peak {fp32_peak:.1f} GFLOP/s, int8 GEMM peak {int8_peak:.1f} GOP/s (better of before/after)")
    print(summary(results))
    if args.json:
        data = {"gemm_peak_gflops": fp32_peak, "int8_gemm_peak_gops": int8_peak, "peaks_before": before,
                "peaks_after": after, "results": [r.to_dict() for r in results]}  # fmt: skip
        Path(args.json).write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
