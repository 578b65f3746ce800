"""A 1×1 convolution's training step (forward and both backward passes) as PyTorch runs it, against
the same convolution over the batch viewed as one image of N·H rows (ConvBNAct's fast path for maps
of at most 9 pixels, ``mobilenets.layers``), at the shapes of MobileNet V1's layers: α = 1 at 32 px,
batch 128 (the timm comparison of ``bench/train_speed.py``), α = 0.25 at 40 px, batch 256 (the main
job), α = 1 at 224 px, batch 32. Channels-last inputs; rounds alternate; medians in ms.

    PYTHONPATH=src python bench/pointwise_one_image.py [--threads 2] [--rounds 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from tabulate import tabulate
from torch.nn import functional as F

from mobilenets.device import keep_freed_memory
from mobilenets.layers import conv1x1_as_one_image

# (batch, in channels, out channels, map side)
SHAPES = (
    (128, 1024, 1024, 1),
    (128, 512, 1024, 1),
    (128, 512, 512, 2),
    (256, 256, 256, 3),
    (128, 256, 256, 4),
    (256, 128, 128, 5),
    (128, 128, 128, 8),
    (256, 64, 64, 10),
    (32, 512, 512, 14),
)


def timed_step(
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    weight: torch.Tensor,
    grad: torch.Tensor,
) -> float:
    """Milliseconds of ``forward(x, weight)`` and its backward for ``grad``."""
    start = time.perf_counter()
    forward(x, weight).backward(grad)
    return 1e3 * (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    keep_freed_memory()  # as `mobilenets train` does
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    rows = []
    for batch, cin, cout, side in SHAPES:
        x = torch.randn(batch, cin, side, side).contiguous(memory_format=torch.channels_last).requires_grad_()
        weight = torch.randn(cout, cin, 1, 1, requires_grad=True)
        grad = torch.randn(batch, cout, side, side).contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(conv1x1_as_one_image(x, weight), F.conv2d(x, weight), rtol=1e-4, atol=1e-3)

        times: dict[str, list[float]] = {"conv": [], "one image": []}
        for round_ in range(args.rounds + 2):  # the first two rounds warm up
            order = (("conv", F.conv2d), ("one image", conv1x1_as_one_image))
            for name, forward in order[:: 1 if round_ % 2 == 0 else -1]:
                elapsed = timed_step(forward, x, weight, grad)
                if round_ >= 2:
                    times[name].append(elapsed)
        conv, one = statistics.median(times["conv"]), statistics.median(times["one image"])
        gflop = 2 * 3 * batch * side * side * cin * cout / 1e9
        rows.append(
            [
                f"{batch}×{cin}→{cout} at {side}×{side}",
                f"{conv:.2f}",
                f"{one:.2f}",
                f"{conv / one:.2f}×",
                f"{gflop / conv * 1e3:.0f}",
                f"{gflop / one * 1e3:.0f}",
            ]
        )
    print(
        tabulate(
            rows,
            ["layer (batch×in→out, map)", "conv ms", "one image ms", "speed-up", "conv GFLOP/s", "one image GFLOP/s"],
            tablefmt="github",
        )
    )
    load_after = os.getloadavg()[0]
    print(
        f"{args.threads} threads, median of {args.rounds} rounds; "
        f"load average {load_before:.2f} before, {load_after:.2f} after"
    )


if __name__ == "__main__":
    main()
