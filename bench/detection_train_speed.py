"""Training speed of every registered detector family: images per second for forward + losses +
backward + optimiser step, at α = 1 and each detector's own resolution, on the built-in scenes.

One model after another, each on the same augmented training scenes of the built-in set (10 classes
and the background), prepared before the clock starts so that only the step is timed, as
``mobilenets detect train`` runs it: channels_last weights, SGD with momentum and weight decay.
``warmup`` untimed steps, then ``steps`` timed ones; the 1-minute load average is printed before
and after each model (figures taken on a busy machine are slow).

    PYTHONPATH=src python bench/detection_train_speed.py --threads 1 [--batch 8] [--steps 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from tabulate import tabulate

from mobilenets import count_cost, create_model, get_entry
from mobilenets.data.detection import DEFAULT_DETECTION_DATA, collate_detection, load_detection_dataset
from mobilenets.device import resolve_device
from mobilenets.registry import DETECTION, list_models
from mobilenets.train.detect import as_targets

# One per detector family at α = 1, with torchvision's own SSDLite as the peer.
DETECTORS = tuple(n for n in list_models(task=DETECTION) if get_entry(n).defaults.get("width_mult", 1.0) == 1.0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, args: argparse.Namespace, device: torch.device) -> dict:
    """Training images/s of detector ``name`` at its registered resolution (see the module doc)."""
    resolution = get_entry(name).resolution
    count = args.batch * (args.warmup + args.steps)
    scenes = load_detection_dataset(DEFAULT_DETECTION_DATA, "train", train=True, resolution=resolution, limit=count)
    batches = [collate_detection([scenes[i] for i in range(s, s + args.batch)]) for s in range(0, count, args.batch)]
    model = create_model(name, num_classes=len(scenes.classes) + 1, resolution=resolution)
    cost = count_cost(model)
    model = model.to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=4e-5)

    def step(images: list[torch.Tensor], targets: list[dict]) -> None:
        images = [image.as_subclass(torch.Tensor).to(device) for image in images]
        loss = sum(model(images, as_targets(targets, device)).values())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    load_before = os.getloadavg()[0]
    for images, targets in batches[: args.warmup]:
        step(images, targets)
    sync(device)
    start = time.perf_counter()
    for images, targets in batches[args.warmup :]:
        step(images, targets)
    sync(device)
    seconds = time.perf_counter() - start
    return {
        "model": name,
        "resolution": resolution,
        "mult-adds (B)": round(cost.mult_adds / 1e9, 3),
        "params (M)": round(cost.params / 1e6, 3),
        "images/s": round(args.batch * args.steps / seconds, 2),
        "s/step": round(seconds / args.steps, 2),
        "load before, after": f"{load_before:.1f}, {os.getloadavg()[0]:.1f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DETECTORS), metavar="NAME", help="detectors to time")
    parser.add_argument("--batch", type=int, default=8, help="images per step (default: 8)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default: 1)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (default: 3)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's; use 1 on a busy machine)")
    parser.add_argument("--device", help="torch device (default: CUDA when available)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for name in args.models:
        rows.append(measure(name, args, device))
        if not args.json:
            print(f"{name}: {rows[-1]['images/s']} images/s", flush=True)
    if args.json:
        print(json.dumps({"device": str(device), "threads": torch.get_num_threads(), "results": rows}, indent=2))
        return
    print(tabulate(rows, headers="keys"))
    print(
        f"device {device}, {torch.get_num_threads()} threads, batch {args.batch}, {args.steps} timed steps after "
        f"{args.warmup} untimed; the scenes' augmentation is done before timing"
    )


if __name__ == "__main__":
    main()
