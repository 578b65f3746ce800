"""Where a training step's milliseconds go, for the main job's setting (`scripts/train_default.sh`:
MobileNet V1 α = 0.25 at 40×40×1, batch 128, channels_last, RMSProp, no augmentation, the batched
in-memory loader, ConvBNAct's fast paths and freed memory kept, as `mobilenets train` runs it), from
PyTorch's profiler: data, forward, backward and optimiser; within them each
layer type (first convolution, depthwise, pointwise, BatchNorm, ReLU6, pooling + classifier + loss);
and the share of the arithmetic bound the step reaches (2 FLOPs per counted mult-add, 3 passes:
forward, and backward for inputs and for weights, against the machine's fp32 GEMM peak).

    PYTHONPATH=src python bench/train_profile.py [--threads 1] [--steps 30] [--warmup 10] [--modules-only]

The profiler adds its own time to every operator; the table is therefore scaled to the step time
measured without it (median of --steps steps), and the rest of each phase (operators not listed,
Python, dispatch) is reported as "other".
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable

import torch
from tabulate import tabulate
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.data import RandomSampler

from mobilenets import create_model
from mobilenets.bench import gemm_peak
from mobilenets.cost import count_cost
from mobilenets.data import load_dataset
from mobilenets.data.batched import BatchedTrainLoader, array_view, batch_transform
from mobilenets.device import keep_freed_memory
from mobilenets.layers import fast_training_paths
from mobilenets.train import RMSpropTF

PHASES = ("data", "forward", "backward", "optimiser")
# The global pooling, the fully connected classifier and the loss, forward and backward.
HEAD_OPS = (
    "aten::adaptive_avg_pool2d",
    "aten::mean",
    "aten::linear",
    "aten::cross_entropy_loss",
    "aten::_adaptive_avg_pool2d_backward",
    "aten::mm",
    "aten::sum",
)
BATCH, RESOLUTION = 128, 40


def conv_kind(input_shape: list[int], weight_shape: list[int]) -> str:
    """A convolution's layer type from its input's shape (N, C, H, W) and its weight's (out, in / groups, kh, kw)."""
    out_channels, per_group, height, width = weight_shape
    if per_group == 1 and input_shape[1] == out_channels > 1:
        return "depthwise conv"
    return "pointwise conv" if (height, width) == (1, 1) else "first conv (full 3×3)"


def layer_type(name: str, shapes: list[list[int]]) -> str | None:
    """The layer type an operator's time counts for, or None for operators counted inside another."""
    if name == "aten::convolution":
        return conv_kind(shapes[0], shapes[1])
    if name == "aten::convolution_backward":
        return conv_kind(shapes[1], shapes[2])
    # ConvBNAct's fast path calls native_batch_norm and clamp_ itself (inside aten::batch_norm otherwise).
    if name in ("aten::batch_norm", "aten::native_batch_norm", "aten::native_batch_norm_backward"):
        return "BatchNorm"
    if name in ("aten::hardtanh", "aten::hardtanh_", "aten::clamp_", "aten::hardtanh_backward"):
        return "ReLU6"
    if name in HEAD_OPS:
        return "pool, classifier, loss"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument(
        "--modules-only", action="store_true", help="ConvBNAct's training fast paths off (every layer its module)"
    )
    args = parser.parse_args()
    keep_freed_memory()  # as `mobilenets train` does
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cpu")
    model = create_model("mobilenet_v1_0.25_224", num_classes=10, in_chans=1, resolution=RESOLUTION)
    cost = count_cost(model, RESOLUTION)
    common = {"resolution": RESOLUTION, "in_chans": 1, "mean": model.meta.mean, "std": model.meta.std}
    view = array_view(load_dataset("fashion-mnist", "train", train=False, **common))
    transform = batch_transform(view.transform)
    generator = torch.Generator().manual_seed(0)
    batches = iter(
        BatchedTrainLoader(
            view.images,
            view.labels,
            sampler=RandomSampler(range(len(view.labels)), num_samples=10**8, generator=generator),
            batch_size=BATCH,
            augment=lambda images, _: transform(images),
            epoch_generator=generator,
            device=device,
            memory_format=torch.channels_last,
        )
    )
    model = model.to(device, memory_format=torch.channels_last).train()
    optimizer = RMSpropTF(model.parameters(), lr=1e-3)

    def step(mark: Callable[[str], object]) -> None:
        with mark("data"):
            images, labels = next(batches)
        with mark("forward"), fast_training_paths(not args.modules_only):
            loss = nn.functional.cross_entropy(model(images), labels)
        with mark("backward"):
            loss.backward()
        with mark("optimiser"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    class Clock:
        """Wall time per phase, without the profiler."""

        def __init__(self) -> None:
            self.seconds: dict[str, float] = defaultdict(float)

        def __call__(self, phase: str) -> Clock:
            self.phase = phase
            return self

        def __enter__(self) -> None:
            self.start = time.perf_counter()

        def __exit__(self, *_: object) -> None:
            self.seconds[self.phase] += time.perf_counter() - self.start

    load_before = os.getloadavg()[0]
    for _ in range(args.warmup):
        step(Clock())
    step_ms, phase_ms = [], defaultdict(list)
    for _ in range(args.steps):
        clock = Clock()
        started = time.perf_counter()
        step(clock)
        step_ms.append(1e3 * (time.perf_counter() - started))
        for phase in PHASES:
            phase_ms[phase].append(1e3 * clock.seconds[phase])
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.steps):
            step(record_function)
    load_after = os.getloadavg()[0]

    profiled: dict[str, float] = defaultdict(float)  # phase -> µs over all steps
    by_type: dict[tuple[str, str], float] = defaultdict(float)  # (phase, layer type) -> µs
    for event in prof.events():
        if event.name in PHASES:
            profiled[event.name] += event.cpu_time_total
            continue
        kind = layer_type(event.name, event.input_shapes)
        if kind is None:
            continue
        parent = event.cpu_parent
        while parent is not None and parent.name not in PHASES:
            if layer_type(parent.name, parent.input_shapes) is not None:
                break  # counted with its parent
            parent = parent.cpu_parent
        if parent is not None and parent.name in PHASES:
            by_type[(parent.name, kind)] += event.cpu_time_total
    rows = []
    for phase in PHASES:
        measured = statistics.median(phase_ms[phase])
        scale = measured / (profiled[phase] / 1e3 / args.steps) if profiled[phase] else 0.0
        rows.append([phase, "(all)", f"{measured:.2f}", f"{100 * measured / statistics.median(step_ms):.0f} %"])
        listed = 0.0
        for (p, kind), micros in sorted(by_type.items(), key=lambda item: -item[1]):
            if p != phase:
                continue
            ms = micros / 1e3 / args.steps * scale
            listed += ms
            rows.append(["", kind, f"{ms:.2f}", f"{100 * ms / statistics.median(step_ms):.0f} %"])
        if listed:
            rest = measured - listed
            rows.append(["", "other", f"{rest:.2f}", f"{100 * rest / statistics.median(step_ms):.0f} %"])
    step_median = statistics.median(step_ms)
    low, _, high = statistics.quantiles(step_ms, n=4)
    peak = gemm_peak(device, args.threads)
    flops = 2 * 3 * cost.mult_adds * BATCH
    print(f"load average {load_before:.1f} before, {load_after:.1f} after; {args.threads} thread(s), batch {BATCH}")
    print(
        f"step {step_median:.2f} ms (quartiles {low:.2f}–{high:.2f}), {1e3 * BATCH / step_median:,.0f} images/s; "
        f"{cost.mult_adds / 1e6:.2f} M mult-adds an image → {flops / 1e9:.2f} GFLOP a step (3 passes), "
        f"{flops / step_median / 1e6:.1f} GFLOP/s = {100 * flops / step_median / 1e6 / peak:.0f} % of the "
        f"{peak:.1f} GFLOP/s fp32 GEMM peak; the arithmetic bound: {flops / peak / 1e6:.2f} ms a step"
    )
    print(tabulate(rows, ["phase", "layer type", "ms / step", "of the step"], tablefmt="github"))


if __name__ == "__main__":
    main()
