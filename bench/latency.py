"""Latency of 1.0 MobileNet-224 at batch 1: ours in every runtime against timm's mobilenetv1_100, in one process.

Run in the benchmark environment (``bash bench/setup.sh`` creates it; timm lives only there):

    .venv-bench/bin/python bench/latency.py                     # the issue's setting: batch 1, 2 threads
    .venv-bench/bin/python bench/latency.py --profile           # also: which operators take the time
    .venv-bench/bin/python bench/latency.py --weights runs/RUN/best.safetensors \\
        --calib fashion-mnist   # also: int8 accuracy of weights trained by `mobilenets train`

It prints every figure, then the issue's goals and, for each goal missed, by how much:

* our fastest fp32 runtime ≥ 3× faster than timm in eager PyTorch, ≥ 1.2× faster than ONNX Runtime
  on timm's own ONNX export (the same ONNX Runtime settings as ours);
* our fastest int8 runtime ≥ 1.5× faster than our fastest fp32 one, top-1 within 1 point of fp32
  (checked only with ``--weights`` and ``--calib``: random weights have no accuracy to keep);
* effective GFLOP/s (2 × counted mult-adds / p50) ≥ 50 % of the fp32 GEMM peak, for every runtime.

Weights are random for the timings (speed does not depend on them); timm's model is built without
pretrained weights (nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import timm
import torch

from mobilenets import count_cost, create_model
from mobilenets.bench import (
    GEMM_SIZE,
    QUICK,
    QUICK_GEMM_SIZE,
    RUNTIMES,
    BenchResult,
    Entry,
    Timing,
    format_table,
    gemm_peak,
    measure,
    model_entries,
    torch_threads,
)
from mobilenets.deploy import Runner, calibration_data, export_model, onnx_runner
from mobilenets.deploy.export import export_onnx
from mobilenets.deploy.quantize import quantize_onnx
from mobilenets.deploy.runtimes import ort_session_options
from mobilenets.weights import load_model

PEER = "mobilenetv1_100"
PEER_LABEL = f"timm {PEER}"
FP32 = ("eager", "compile", "onnx", "openvino")
GOALS = {"vs_timm_eager": 3.0, "vs_timm_onnx": 1.2, "int8_vs_fp32": 1.5, "int8_top1_drop_points": 1.0, "of_peak": 0.5}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenet_v1_1.0_224", help="our model (default mobilenet_v1_1.0_224)")
    parser.add_argument("--threads", type=int, default=2, help="threads for every runtime (default 2)")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls (default 20)")
    parser.add_argument("--repeats", type=int, default=100, help="timed calls (default 100)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    parser.add_argument("--quick", action="store_true", help="a smoke test: few repeats, small GEMM")
    parser.add_argument("--profile", action="store_true", help="print ONNX Runtime's time per operator type")
    parser.add_argument(
        "--accuracy-model",
        help="model of --weights for the int8 accuracy check (default: the one a weights file from "
        "`mobilenets train` records; needed for other files)",
    )
    parser.add_argument("--weights", help="trained weights for the int8 accuracy check (file or 'pretrained')")
    parser.add_argument("--num-classes", type=int, help="classes of --weights (default: as recorded)")
    parser.add_argument("--in-chans", type=int, help="input channels of --weights (default: as recorded)")
    parser.add_argument("--resolution", type=int, help="input size of the accuracy check (default: the model's)")
    parser.add_argument("--calib", help="data for the int8 accuracy check: 'fashion-mnist' or an image folder")
    parser.add_argument("--eval-samples", type=int, default=1000, help="held-out images for it (default 1000)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    return parser.parse_args()


def peer_onnx(label: str, workdir: Path) -> Path:
    """Where :func:`peer_entries` exports the peer named ``label``."""
    return workdir / f"{label.replace(' ', '_')}.onnx"


def peer_entries(model: torch.nn.Module, label: str, x: np.ndarray, threads: int, workdir: Path) -> list[Entry]:
    """Another library's ``model`` in eager PyTorch (as its users run it: NCHW, no folding) and its own ONNX
    export in ONNX Runtime; ``label`` names it in the results."""
    model = model.eval()
    mult_adds = count_cost(model, x.shape[-1], label).mult_adds
    path = peer_onnx(label, workdir)

    def eager() -> Runner:
        def run(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(batch)).numpy()

        return run

    def onnx_runtime() -> Runner:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation notice
            torch.onnx.export(model, (torch.from_numpy(x),), str(path), input_names=["input"], dynamo=False)
        return onnx_runner(path, threads=threads, spin=False)

    return [
        Entry(model=label, runtime="eager", build=eager, mult_adds=mult_adds),
        Entry(model=label, runtime="onnx", build=onnx_runtime, mult_adds=mult_adds),
    ]


def _kind(node: onnx.NodeProto) -> str:
    """An operator with its convolution kind: depthwise (groups > 1) or its kernel size."""
    attributes = {a.name: a for a in node.attribute}
    if "group" in attributes and attributes["group"].i > 1:
        return f"{node.op_type} depthwise"
    if "kernel_shape" in attributes:
        return f"{node.op_type} {'×'.join(map(str, attributes['kernel_shape'].ints))}"
    return node.op_type


def ort_profile(path: Path, x: np.ndarray, threads: int, runs: int = 50) -> dict[str, float]:
    """ONNX Runtime's own profile: mean ms per call in each kind of operator (convolutions split into
    depthwise, 1×1 and 3×3), largest first."""
    options = ort_session_options(threads)
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    options.optimized_model_filepath = str(path.with_suffix(".optimized.onnx"))  # the graph that runs
    options.log_severity_level = 3  # no warning that the optimized graph is specific to this CPU
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for _ in range(runs):
        session.run(None, {name: x})
    events = json.loads(Path(session.end_profiling()).read_text())
    kinds = {node.name: _kind(node) for node in onnx.load(options.optimized_model_filepath).graph.node}
    per_kind: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            node = event["name"].removesuffix("_kernel_time")
            per_kind[kinds.get(node, event["args"]["op_name"])] += event["dur"] / 1000 / runs
    return dict(sorted(per_kind.items(), key=lambda item: -item[1]))


def profiles(model: torch.nn.Module, x: np.ndarray, threads: int, workdir: Path) -> dict[str, dict[str, float]]:
    """Per-operator profiles of our fp32 and int8 ONNX models and of timm's."""
    fp32 = export_onnx(model, workdir / "ours_profile.onnx", x.shape[-1])
    int8 = quantize_onnx(fp32, workdir / "ours_profile_int8.onnx", [x])
    return {
        "ours onnx": ort_profile(fp32, x, threads),
        "ours onnx-int8": ort_profile(int8, x, threads),
        "timm onnx": ort_profile(peer_onnx(PEER_LABEL, workdir), x, threads),
    }


def int8_accuracy(args: argparse.Namespace) -> dict[str, float] | None:
    """fp32 and int8 top-1 of trained weights on held-out data (None without --weights and --calib)."""
    if not (args.weights and args.calib):
        return None
    overrides = {"num_classes": args.num_classes, "in_chans": args.in_chans, "resolution": args.resolution}
    model = load_model(args.weights, args.accuracy_model, **{k: v for k, v in overrides.items() if v is not None})
    calibration, evaluation = calibration_data(
        args.calib, model, resolution=model.meta.resolution, calib_samples=256, eval_samples=args.eval_samples
    )
    with tempfile.TemporaryDirectory() as tmp:
        report = export_model(
            model,
            "onnx",
            Path(tmp) / "int8.onnx",
            calibration=calibration,
            evaluation=evaluation,
            min_agreement=0.5,
            calibration_asked=256,
        )
    return {"accuracy_fp32": report.accuracy_fp32, "accuracy_int8": report.accuracy_int8, "agreement": report.agreement}


def goal_line(label: str, value: float, goal: float, unit: str = "×") -> str:
    """One goal: reached, or missed by how much."""
    if value >= goal:
        return f"  reached  {label}: {value:.2f}{unit} (goal ≥ {goal:g}{unit})"
    short = f"short by {goal - value:.2f}{unit}, {value / goal:.0%} of the goal"
    return f"  MISSED   {label}: {value:.2f}{unit} (goal ≥ {goal:g}{unit}; {short})"


def goals(results: list[BenchResult], accuracy: dict[str, float] | None, peak: float) -> list[str]:
    """The issue's goals, each reached or missed by how much. ``results``: timm eager, timm onnx, then ours."""
    timm_eager, timm_onnx = (r.p50_ms for r in results[:2])
    mine = {r.runtime: r for r in results[2:]}
    fp32 = min((mine[r] for r in FP32 if r in mine), key=lambda r: r.p50_ms)
    int8 = min((r for r in mine.values() if r.runtime.endswith("int8")), key=lambda r: r.p50_ms)
    lines = [
        f"Goals (our fastest fp32: {fp32.runtime}; our fastest int8: {int8.runtime}):",
        goal_line(f"our {fp32.runtime} vs timm eager", timm_eager / fp32.p50_ms, GOALS["vs_timm_eager"]),
        goal_line(f"our {fp32.runtime} vs timm's ONNX in ONNX Runtime", timm_onnx / fp32.p50_ms, GOALS["vs_timm_onnx"]),
        goal_line(f"our {int8.runtime} vs our {fp32.runtime}", fp32.p50_ms / int8.p50_ms, GOALS["int8_vs_fp32"]),
    ]
    lines += [
        f"           ({runtime}-int8 vs {runtime}: {mine[runtime].p50_ms / mine[runtime + '-int8'].p50_ms:.2f}×)"
        for runtime in ("onnx", "openvino")
        if runtime in mine and f"{runtime}-int8" in mine
    ]
    if accuracy is None:
        lines.append("  -        int8 top-1 within 1 point of fp32: not checked (give --weights and --calib)")
    else:
        fp32_top1, int8_top1 = 100 * accuracy["accuracy_fp32"], 100 * accuracy["accuracy_int8"]
        drop = fp32_top1 - int8_top1
        verdict = "reached" if drop <= GOALS["int8_top1_drop_points"] else "MISSED "
        lines.append(
            f"  {verdict}  int8 top-1 {int8_top1:.2f}% vs fp32 {fp32_top1:.2f}%: {drop:+.2f} points lost (goal ≤ 1; "
            f"top-1 agreement {100 * accuracy['agreement']:.1f}%)"
        )
    lines += [
        goal_line(f"{r.model} {r.runtime}: share of the {peak:.0f} GFLOP/s GEMM peak", 100 * r.peak_fraction,
                  100 * GOALS["of_peak"], "%")
        for r in results
    ]  # fmt: skip
    return lines


def main() -> int:
    args = parse_args()
    timing = QUICK if args.quick else Timing(warmup=args.warmup, repeats=args.repeats)
    torch.manual_seed(0)
    gemm_size = QUICK_GEMM_SIZE if args.quick else GEMM_SIZE
    peak_before = gemm_peak("cpu", args.threads, size=gemm_size, refresh=True)
    ours = create_model(args.model)
    resolution = ours.meta.resolution
    x = np.random.default_rng(0).standard_normal((args.batch, 3, resolution, resolution), dtype=np.float32)
    runtimes = [r for r in RUNTIMES if r != "compile" or args.compile]
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp, torch_threads(args.threads):
        entries = peer_entries(timm.create_model(PEER, pretrained=False), PEER_LABEL, x, args.threads, Path(tmp))
        entries += model_entries(
            ours,
            runtimes,
            batch=args.batch,
            workdir=Path(tmp),
            device=cpu,
            threads=args.threads,
            resolution=resolution,
            alone=False,
        )
        results = measure(entries, x, device=cpu, threads=args.threads, timing=timing)
        # The GEMM once more after the runs: the better of the two is the less disturbed by other programs.
        peak = max(peak_before, gemm_peak("cpu", args.threads, size=gemm_size, refresh=True))
        results = [replace(r, gemm_peak_gflops=peak) for r in results]
        profile = profiles(ours, x, args.threads, Path(tmp)) if args.profile else {}
        accuracy = int8_accuracy(args)

    setting = f"batch {args.batch}, {args.threads} threads, {timing.repeats} timed calls each, {timing.block} per turn"
    print(f"{args.model} vs timm {PEER}: {setting}\n")
    print(format_table(results))
    for title, ops in profile.items():
        total = sum(ops.values())
        top = ", ".join(f"{op} {ms:.2f} ms ({ms / total:.0%})" for op, ms in list(ops.items())[:6])
        print(f"\nprofile, {title}: {total:.2f} ms in operators per call: {top}")
    print("\n" + "\n".join(goals(results, accuracy, peak)))
    if args.json:
        data = {"gemm_peak_gflops": peak, "results": [r.to_dict() for r in results], "profile": profile,
                "int8_accuracy": accuracy}  # fmt: skip
        Path(args.json).write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
