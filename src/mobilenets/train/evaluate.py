"""Evaluation: top-1, top-5, per-class accuracy and the confusion matrix of a model on a data set."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from typing import Any

import torch
from tabulate import tabulate
from torch import nn
from torch.utils.data import DataLoader

from ..data import FASHION_MNIST, UNREADABLE, SourceInfo, inspect_source, load_dataset
from ..device import resolve_device, usable_cores
from ..models.base import MIN_RESOLUTION
from ..registry import CLASSIFICATION, check_task, get_entry
from ..weights import model_from, read_weights_source
from .config import MAX_BATCH_SIZE, TrainConfig
from .distributed import Dist, all_reduce


@dataclass(kw_only=True)
class EvalResult:
    """Counts over an evaluation set. ``confusion[i, j]``: images of class i predicted as j."""

    classes: list[str]
    confusion: torch.Tensor  # (C, C) int64
    top5_correct: int
    loss_sum: float
    skipped: int  # unreadable images, left out of every figure
    model: str = ""  # the evaluated model's name, when known
    resolution: int | None = None  # its input size, pixels, when known

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    @property
    def top1(self) -> float:
        """Fraction of images whose highest-scoring class is right."""
        return float(self.confusion.diag().sum()) / max(self.count, 1)

    @property
    def top5(self) -> float:
        """Fraction whose right class is among the 5 highest (all classes when there are fewer)."""
        return self.top5_correct / max(self.count, 1)

    @property
    def loss(self) -> float:
        """Mean cross-entropy per image (nats)."""
        return self.loss_sum / max(self.count, 1)

    @property
    def per_class(self) -> dict[str, float | None]:
        """Accuracy on each class's images (None for a class with no images)."""
        totals = self.confusion.sum(1)
        return {
            name: (float(self.confusion[i, i]) / int(totals[i]) if totals[i] else None)
            for i, name in enumerate(self.classes)
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "resolution": self.resolution,
            "top1": self.top1,
            "top5": self.top5,
            "loss": self.loss,
            "images": self.count,
            "skipped": self.skipped,
            "per_class": self.per_class,
            "classes": self.classes,
            "confusion": self.confusion.tolist(),
        }

    def format(self) -> str:
        rows = [[name, "-" if acc is None else f"{100 * acc:.1f}"] for name, acc in self.per_class.items()]
        table = tabulate(rows, ["class", "accuracy %"], colalign=("left", "right"))
        skipped = f", {self.skipped} unreadable skipped" if self.skipped else ""
        return (
            f"{table}\n\ntop-1 {100 * self.top1:.2f} %, top-5 {100 * self.top5:.2f} %, "
            f"loss {self.loss:.4f} on {self.count:,} images{skipped}"
        )


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision in ``dtype`` on ``device``, or nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    *,
    classes: list[str],
    device: torch.device,
    env: Dist | None = None,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> EvalResult:
    """Run ``model`` (in eval mode) over ``loader``; counts are summed over a ``torchrun`` job."""
    was_training = model.training
    model.eval()
    n = len(classes)
    k = min(5, n)
    confusion = torch.zeros(n * n, dtype=torch.int64, device=device)
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # top-5 correct, loss sum, skipped
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for images, labels in loader:
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        labels = labels.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = model(images).float()
        valid = labels != UNREADABLE
        logits, labels = logits[valid], labels[valid]
        confusion += torch.bincount(labels * n + logits.argmax(1), minlength=n * n)
        totals[0] += (logits.topk(k, 1).indices == labels[:, None]).any(1).sum()
        totals[1] += nn.functional.cross_entropy(logits, labels, reduction="sum")
        totals[2] += (~valid).sum()
    model.train(was_training)
    if env is not None:
        all_reduce(confusion, env)
        all_reduce(totals, env)
    top5, loss_sum, skipped = totals.tolist()
    return EvalResult(
        classes=list(classes),
        confusion=confusion.view(n, n).cpu(),
        top5_correct=int(top5),
        loss_sum=loss_sum,
        skipped=int(skipped),
    )


def resolve_input(model: str, source: SourceInfo, *, in_chans: int | None, resolution: int | None) -> tuple[int, int]:
    """(in_chans, resolution) given, else the source's channels, and the images' own size (at least
    32) for Fashion-MNIST and CIFAR or the model's default size for image folders."""
    in_chans = in_chans or source.channels
    if resolution is not None:
        return in_chans, resolution
    if source.image_size:
        return in_chans, max(source.image_size, MIN_RESOLUTION)
    return in_chans, get_entry(model).resolution


def evaluate_weights(
    model: str | None,
    weights: str | os.PathLike,
    data: str | None = None,
    *,
    split: str = "val",
    resolution: int | None = None,
    in_chans: int | None = None,
    crop_pct: float | None = None,
    batch_size: int = 256,
    workers: int = 0,
    device: str | None = None,
    limit: int | None = None,
) -> EvalResult:
    """Evaluate ``weights`` (a weights file or checkpoint from ``train``, or a state dict in our or
    torchvision's names) on a split of ``data``; the model's name (``model=None``), arguments and
    normalisation come from the file's metadata when it has them, and the arguments given here
    override them. A ``model`` other than the one the file records is an error."""
    cores = usable_cores()
    if not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be an integer in [1, {MAX_BATCH_SIZE}], got {batch_size!r}")
    if not isinstance(workers, int) or not 0 <= workers <= cores:
        raise ValueError(f"workers must be an integer in [0, {cores}] (the cores), got {workers!r}")
    read = read_weights_source(weights)
    info, recorded = read.info, read.info.get("model_args", {})
    name = read.model_name(model)
    check_task(name, CLASSIFICATION)
    data = data if data is not None else info.get("data") or FASHION_MNIST  # "" is an error, not a default
    in_chans, resolution = resolve_input(
        name,
        inspect_source(data),
        in_chans=in_chans if in_chans is not None else recorded.get("in_chans"),
        resolution=resolution if resolution is not None else recorded.get("resolution"),
    )
    # Built before the data: its arguments and the file's tensors are checked first, and its meta
    # holds the normalisation the weights were trained with.
    net = model_from(read, name, in_chans=in_chans, resolution=resolution)
    crop_pct = crop_pct if crop_pct is not None else info.get("crop_pct")
    # The held-out share the run was split with (a one-folder source): the same images stay held out.
    val_fraction = info.get("val_fraction", TrainConfig.val_fraction)
    meta = net.meta
    dataset = load_dataset(
        data,
        split,
        resolution=resolution,
        in_chans=in_chans,
        mean=meta.mean,
        std=meta.std,
        train=False,
        crop_pct=crop_pct,
        val_fraction=val_fraction,
        limit=limit,
    )
    classes = list(dataset.classes)
    if meta.num_classes != len(classes):
        raise ValueError(
            f"weights {str(weights)!r} classify {meta.num_classes} classes, data {data!r} has {len(classes)}"
        )
    target = resolve_device(device)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=target.type == "cuda")
    return replace(evaluate(net.to(target), loader, classes=classes, device=target), model=name, resolution=resolution)
