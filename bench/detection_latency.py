"""Batch-1 latency of the detectors, network alone and end to end, in eager PyTorch, ONNX Runtime and
OpenVINO, with torchvision's own SSDLite320-MobileNetV3-Large (random weights) as a peer.

    PYTHONPATH=src python bench/detection_latency.py [--threads 2] [--repeats 20] [--models NAME ...] [--quick]
        [--json out.json]

Prints the 1-minute load average before and after (figures taken on a busy machine are slow and noisy).
"""

from __future__ import annotations

import argparse
import json
import os

from mobilenets import create_model
from mobilenets.bench import QUICK, Timing, benchmark, format_table
from mobilenets.registry import DETECTION, get_entry, list_models

# Every detector family at α = 1, and torchvision's own SSDLite (registered with random weights) as a peer.
MODELS = tuple(n for n in list_models(task=DETECTION) if get_entry(n).defaults.get("width_mult", 1.0) == 1.0)
RUNTIMES = ("eager", "onnx", "openvino")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="a smoke test: α = 0.5 at 64 px, 3 repeats")
    parser.add_argument("--models", nargs="+", default=list(MODELS), metavar="NAME", help="detectors to time")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    timing = QUICK if args.quick else Timing(warmup=args.warmup, repeats=args.repeats, block=5)
    print(f"load average before: {os.getloadavg()[0]:.1f}", flush=True)
    results = []
    for name in args.models:
        sized = {"resolution": 64} if args.quick else {}
        if args.quick and "width_mult" in get_entry(name).defaults:
            sized["width_mult"] = 0.5  # the smallest width every backbone takes
        model = create_model(name, **sized).eval()
        results += benchmark(model, RUNTIMES, threads=args.threads, device="cpu", timing=timing)
        print(f"load average {os.getloadavg()[0]:.1f}", format_table(results[-6:]), sep="\n", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(format_table(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump([r.to_dict() for r in results], file, indent=1)


if __name__ == "__main__":
    main()
