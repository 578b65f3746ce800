"""Training speed: images per second for forward + loss + backward + optimiser step.

Compares this project's MobileNet V1 with timm's ``mobilenetv1_100`` (the same architecture) in
one process, in two settings: ImageNet-sized (α = 1, 224², batch 32) and the Fashion-MNIST run
(32², 1 channel, 10 classes, batch 128), each in both memory formats. Our α = 0.25 model of the
quick Fashion-MNIST run is measured too. Both models take the same optimiser (``RMSpropTF``).
Measurements alternate between the models over several rounds and report the median images/s,
its quartiles, and the median of the per-round ratios to timm, so that load from other processes
hits both models of a comparison alike.

Run in the benchmark environment (timm is not a dependency of the project):

    bash bench/setup.sh && .venv-bench/bin/python bench/train_speed.py [--iters 20] [--rounds 3] [--threads N]

Our model trains through ConvBNAct's fast paths (``mobilenets.layers``); ``ours, modules only``
is the same model with them off. ``--keep-freed-memory`` first applies, to this whole process,
the allocator setting that ``mobilenets train`` applies (``mobilenets.device.keep_freed_memory``).
``--as-shipped`` instead times each model in its own process, rounds alternating between them:
ours as ``mobilenets train`` runs it (fast paths, freed memory kept), timm's with the allocator's
defaults, as a script of its own runs it, and timm's with freed memory kept (the allocator's share).

``--loaders`` measures instead the main job's whole training step on Fashion-MNIST, data included:
per-image ``transforms.v2`` in a loader process against the batched in-memory loader
(``mobilenets.data.batched``), rounds alternating in one process (needs no timm):

    .venv/bin/python bench/train_speed.py --loaders [--iters 40] [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
from tabulate import tabulate
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from mobilenets import create_model
from mobilenets.data import load_dataset
from mobilenets.data.batched import BatchAugment, BatchedTrainLoader, array_view
from mobilenets.device import keep_freed_memory, resolve_device
from mobilenets.layers import fast_training_paths
from mobilenets.train import RMSpropTF

PEER = "timm mobilenetv1_100"
T = TypeVar("T")


@dataclass(frozen=True)
class Setting:
    key: str
    name: str
    resolution: int
    in_chans: int
    num_classes: int
    batch: int


SETTINGS = (
    Setting("imagenet", "ImageNet 224², batch 32", 224, 3, 1000, 32),
    Setting("fashion-mnist", "Fashion-MNIST 32², batch 128", 32, 1, 10, 128),
)


def ours(setting: Setting, alpha: str = "1.0") -> nn.Module:
    return create_model(
        f"mobilenet_v1_{alpha}_224",
        num_classes=setting.num_classes,
        in_chans=setting.in_chans,
        resolution=max(setting.resolution, 32),
    )


def timm_model(setting: Setting) -> nn.Module:
    import timm

    return timm.create_model("mobilenetv1_100", num_classes=setting.num_classes, in_chans=setting.in_chans)


def make_step(
    model: nn.Module, setting: Setting, device: torch.device, channels_last: bool, variant: str = ""
) -> Callable[[], None]:
    """One training step of ``model`` on a fixed random batch; ``variant`` "compile": its forward by
    ``torch.compile``, "bf16": its forward under bf16 autocast, "modules": ConvBNAct's fast paths off."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).train()
    optimizer = RMSpropTF(model.parameters(), lr=1e-3)
    forward = torch.compile(model) if variant == "compile" else model
    images = torch.randn(setting.batch, setting.in_chans, setting.resolution, setting.resolution, device=device)
    images = images.contiguous(memory_format=memory_format)
    labels = torch.randint(0, setting.num_classes, (setting.batch,), device=device)

    def step() -> None:
        with (
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=variant == "bf16"),
            fast_training_paths(variant != "modules"),
        ):
            outputs = forward(images)
        loss = nn.functional.cross_entropy(outputs.float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def alternating(contenders: dict[str, T], rounds: int) -> Iterator[tuple[str, T]]:
    """Each contender once a round for ``rounds`` rounds, every other round in reverse order, so that no
    contender always follows the same one."""
    for round_ in range(rounds):
        yield from list(contenders.items())[:: 1 if round_ % 2 == 0 else -1]


def images_per_s(step: Callable[[], None], batch: int, iters: int, device: torch.device) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    sync()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    return batch * iters / (time.perf_counter() - start)


def measure(setting: Setting, channels_last: bool, device: torch.device, args: argparse.Namespace) -> list[dict]:
    """Median images/s of each contender in ``setting``, rounds alternating between them."""
    # name: (model, variant of make_step)
    contenders = {
        "mobilenets mobilenet_v1_1.0": (ours(setting), ""),
        "mobilenets mobilenet_v1_1.0, modules only": (ours(setting), "modules"),
        PEER: (timm_model(setting), ""),
    }
    for variant in ("compile", "bf16"):
        if getattr(args, variant):
            contenders[f"mobilenets mobilenet_v1_1.0, {variant}"] = (ours(setting), variant)
    if setting.resolution == 32:
        contenders["mobilenets mobilenet_v1_0.25 (quick run)"] = (ours(setting, "0.25"), "")
    steps = {name: make_step(m, setting, device, channels_last, variant) for name, (m, variant) in contenders.items()}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for name, step in alternating(steps, args.rounds):
        rates[name].append(images_per_s(step, setting.batch, args.iters, device))
    return table_rows(setting, channels_last, rates)


def table_rows(setting: Setting, channels_last: bool, rates: dict[str, list[float]]) -> list[dict]:
    """One row per contender: median images/s, quartiles, and the median per-round ratio to timm."""
    peer = rates[PEER]
    rows = []
    for name, values in rates.items():
        low, _, high = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
        # Paired per round: load from other processes shifts both models of a round alike.
        ratio = statistics.median(v / p for v, p in zip(values, peer, strict=True))
        rows.append(
            {
                "setting": setting.name,
                "memory format": "channels_last" if channels_last else "contiguous",
                "model": name,
                "images/s": round(statistics.median(values), 1),
                "quartiles": f"{low:.0f}–{high:.0f}",
                "÷ timm": round(ratio, 3),
            }
        )
    return rows


def shipped_worker(
    conn: multiprocessing.connection.Connection,
    setting: Setting,
    channels_last: bool,
    *,
    peer: bool,
    keep_memory: bool,
    threads: int,
) -> None:
    """One model's training step in a process of its own, freed memory kept or glibc's defaults, timed on
    request: ``conn`` receives a number of steps and answers images/s, until it receives None."""
    if keep_memory:
        keep_freed_memory()
    torch.set_num_threads(threads)
    device = torch.device("cpu")
    step = make_step(timm_model(setting) if peer else ours(setting), setting, device, channels_last)
    while (iters := conn.recv()) is not None:
        conn.send(images_per_s(step, setting.batch, iters, device))


def measure_as_shipped(setting: Setting, channels_last: bool, args: argparse.Namespace) -> list[dict]:
    """Ours and timm's model each in its own CPU process, configured as each library runs it, beside timm's
    with freed memory kept (the allocator's share); one process stepping at a time, rounds alternating."""
    context = multiprocessing.get_context("spawn")
    threads = args.threads or torch.get_num_threads()
    # name: (timm's model, freed memory kept)
    contenders = {
        "mobilenets mobilenet_v1_1.0, as `mobilenets train` runs it": (False, True),
        PEER: (True, False),
        f"{PEER}, freed memory kept": (True, True),
    }
    workers = {}
    for name, (peer, keep_memory) in contenders.items():
        conn, child = context.Pipe()
        options = {"peer": peer, "keep_memory": keep_memory, "threads": threads}
        process = context.Process(target=shipped_worker, args=(child, setting, channels_last), kwargs=options)
        process.start()
        workers[name] = (conn, process)
    try:
        for conn, _ in workers.values():
            conn.send(args.warmup)
            conn.recv()
        rates: dict[str, list[float]] = {name: [] for name in workers}
        for name, (conn, _) in alternating(workers, args.rounds):
            conn.send(args.iters)
            rates[name].append(conn.recv())
    finally:
        for conn, process in workers.values():
            conn.send(None)
            process.join()
    return table_rows(setting, channels_last, rates)


def measure_loaders(device: torch.device, args: argparse.Namespace) -> list[dict]:
    """Images/s of the main job's training step (``mobilenet_v1_0.25_40``, batch 128, channels_last,
    random resized crops of 35–100 % and flips) fed by each loader, rounds alternating."""
    resolution, batch, crop_scale = 40, 128, (0.35, 1.0)
    model = create_model("mobilenet_v1_0.25_224", num_classes=10, in_chans=1, resolution=resolution)
    mean, std = model.meta.mean, model.meta.std
    common = {"resolution": resolution, "in_chans": 1, "mean": mean, "std": std, "crop_scale": crop_scale}
    train_set = load_dataset("fashion-mnist", "train", train=True, **common)
    view = array_view(train_set)
    generator = torch.Generator().manual_seed(0)
    per_image = DataLoader(
        train_set,
        batch_size=batch,
        sampler=RandomSampler(train_set, num_samples=10**8, generator=generator),
        num_workers=1,
        persistent_workers=True,
        pin_memory=device.type == "cuda",
    )
    augment = BatchAugment(resolution=resolution, in_chans=1, mean=mean, std=std, crop_scale=crop_scale)
    batched = BatchedTrainLoader(
        view.images,
        view.labels,
        sampler=RandomSampler(train_set, num_samples=10**8, generator=generator),
        batch_size=batch,
        augment=augment,
        epoch_generator=generator,
        device=device,
        memory_format=torch.channels_last,
    )
    model = model.to(device, memory_format=torch.channels_last).train()
    optimizer = RMSpropTF(model.parameters(), lr=1e-3)
    cores = torch.get_num_threads() if args.threads is None else args.threads
    # name: (batches, threads); the per-image loader takes a core, as in the main job.
    contenders = {
        "per-image v2 transforms, 1 loader process": (iter(per_image), max(1, cores - 1)),
        f"batched on {device.type}, {cores} threads": (iter(batched), cores),
        f"batched on {device.type}, 1 thread": (iter(batched), 1),
    }

    def step(batches: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> None:
        images, labels = next(batches)
        images = images.to(device, non_blocking=True, memory_format=torch.channels_last)
        loss = nn.functional.cross_entropy(model(images), labels.to(device, non_blocking=True))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for batches, threads in contenders.values():
        torch.set_num_threads(threads)
        for _ in range(args.warmup):
            step(batches)
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for name, (batches, threads) in alternating(contenders, args.rounds):
        torch.set_num_threads(threads)
        rates[name].append(images_per_s(lambda b=batches: step(b), batch, args.iters, device))
    baseline = rates[next(iter(contenders))]
    rows = []
    for name, values in rates.items():
        low, _, high = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
        rows.append(
            {
                "loader": name,
                "images/s (median)": round(statistics.median(values)),
                "quartiles": f"{low:.0f}–{high:.0f}",
                "÷ per-image": round(statistics.median(v / p for v, p in zip(values, baseline, strict=True)), 2),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=20, help="timed steps per round (default: 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is kept (default: 3)")
    parser.add_argument("--device", help="torch device (default: CUDA when available)")
    parser.add_argument(
        "--threads", type=int, help="CPU threads (default: torch's, one per core; use 1 on a busy machine)"
    )
    parser.add_argument(
        "--setting",
        choices=[s.key for s in SETTINGS],
        action="append",
        help="measure only this setting (repeatable; default: all)",
    )
    parser.add_argument(
        "--loaders",
        action="store_true",
        help="measure the main job's step fed by per-image transforms and by the batched loader instead",
    )
    parser.add_argument(
        "--compile", action="store_true", help="also our model's step with torch.compile (inductor; compiles first)"
    )
    parser.add_argument("--bf16", action="store_true", help="also our model's step under bf16 autocast")
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="first keep freed memory for reuse in this process, as `mobilenets train` does (applies to every model)",
    )
    parser.add_argument(
        "--as-shipped",
        action="store_true",
        help="each model in its own CPU process, ours as `mobilenets train` runs it, timm's with default settings",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.as_shipped and device.type != "cpu":
        parser.error(f"--as-shipped compares CPU processes: add --device cpu (the device here is {device})")
    if args.keep_freed_memory and not keep_freed_memory():
        print("--keep-freed-memory: this C library is not glibc; the allocator keeps its defaults", file=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.loaders:
        with open("/proc/loadavg") as f:
            load_before = f.read().split()[0]
        rows = measure_loaders(device, args)
        with open("/proc/loadavg") as f:
            load_after = f.read().split()[0]
        if args.json:
            print(json.dumps({"device": str(device), "load_average": [load_before, load_after], "results": rows}))
        else:
            print(tabulate(rows, headers="keys", colalign=("left", "right", "right", "right")))
            print(
                f"device {device}, median of {args.rounds} rounds × {args.iters} steps; "
                f"1-minute load average {load_before} before, {load_after} after"
            )
        return

    rows = []
    for setting in (s for s in SETTINGS if not args.setting or s.key in args.setting):
        for channels_last in (False, True):
            if args.as_shipped:
                block = measure_as_shipped(setting, channels_last, args)
            else:
                block = measure(setting, channels_last, device, args)
            rows += block
            if not args.json:  # each block as it finishes: the 224² one takes minutes on a CPU
                table = tabulate(block, headers="keys", colalign=("left", "left", "left", "right", "right", "right"))
                print(table, end="\n\n", flush=True)
    threads = torch.get_num_threads()
    if args.json:
        print(json.dumps({"device": str(device), "threads": threads, "results": rows}, indent=2))
    else:
        print(f"device {device}, {threads} threads, median of {args.rounds} rounds × {args.iters} steps")


if __name__ == "__main__":
    main()
