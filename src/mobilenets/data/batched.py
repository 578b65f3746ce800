"""Training and evaluation batches of an in-memory array set, transformed as whole batches.

For Fashion-MNIST and CIFAR (:class:`ArrayImages`: one uint8 tensor) per-image ``transforms.v2``
in loader processes cost more than the small models they feed. Here the uint8 images move to the
training device once; each step gathers a batch and augments it with a few tensor operations:
per-image random resized crop boxes drawn with ``v2.RandomResizedCrop``'s rule, all resampled at
once by ``grid_sample`` (bilinear) with the horizontal flip folded into the affine map, and the
normalisation. Evaluation batches go through the data set's own evaluation transform once and are
kept.

Randomness: each step's generator is seeded from the epoch's seed and the step's index, so a run
resumed in the middle of an epoch draws what the uninterrupted run drew.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import BatchSampler, Dataset, Sampler, Subset
from torchvision.transforms.v2 import functional as TF

from .arrays import ArrayImages
from .transforms import CROP_RATIO, fit_channels

# Draws per image before the central-crop fallback, as in ``v2.RandomResizedCrop``.
CROP_ATTEMPTS = 10
# Evaluation batches are kept when they take at most this many bytes (Fashion-MNIST's 10 000 test
# images at 64 px: 160 MB); larger sets are transformed again at every evaluation.
EVAL_CACHE_BYTES = 1 << 30
# Elements (images × channels × pixels) per evaluation batch: large batches, bounded memory.
EVAL_BATCH_ELEMENTS = 1 << 22

Batch = tuple[torch.Tensor, torch.Tensor]


class ArrayView(NamedTuple):
    """An in-memory array set's uint8 images (N, C, H, W), labels (N,) and per-image transform."""

    images: torch.Tensor
    labels: torch.Tensor
    transform: Callable[[torch.Tensor], torch.Tensor] | None


def array_view(dataset: Dataset) -> ArrayView | None:
    """The images, labels and transform of ``dataset`` when it is an :class:`ArrayImages` or a
    (nested) ``Subset`` of one, in the dataset's order; None for any other data set."""
    indices: list[int] | None = None
    while isinstance(dataset, Subset):
        outer = list(dataset.indices)
        indices = outer if indices is None else [outer[i] for i in indices]
        dataset = dataset.dataset
    if not isinstance(dataset, ArrayImages):
        return None
    if indices is None:
        return ArrayView(dataset.images, dataset.labels, dataset.transform)
    index = torch.tensor(indices, dtype=torch.long)
    return ArrayView(dataset.images[index], dataset.labels[index], dataset.transform)


def crop_boxes(
    count: int,
    height: int,
    width: int,
    *,
    scale: Sequence[float],
    ratio: Sequence[float] = CROP_RATIO,
    generator: torch.Generator,
) -> torch.Tensor:
    """``count`` random resized crop boxes (top, left, height, width) in pixels, int64 (count, 4).

    The rule of ``v2.RandomResizedCrop``: up to ``CROP_ATTEMPTS`` draws of an area fraction uniform in
    ``scale`` and an aspect ratio log-uniform in ``ratio``; the first draw whose rounded box fits is
    placed uniformly at random; when none fits, the central crop of the ratio nearest the image's.
    All draws are made at once on the generator's device, so the boxes follow the same distribution
    as torchvision's, not its random stream.
    """
    device = generator.device
    draws = torch.rand(count, CROP_ATTEMPTS, 2, generator=generator, device=device, dtype=torch.float64)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * draws[..., 0])
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_low + (log_high - log_low) * draws[..., 1])
    # torch.round, like Python's round, rounds halves to even.
    w, h = torch.sqrt(area * aspect).round(), torch.sqrt(area / aspect).round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)  # the first fitting attempt (0 when none fits)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    # Where no attempt fits: the central crop, as torchvision's fallback computes it.
    in_ratio = width / height
    if in_ratio < min(ratio):
        fallback_w, fallback_h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fallback_w, fallback_h = round(height * max(ratio)), height
    else:
        fallback_w, fallback_h = width, height
    found = fits.any(1)
    w = torch.where(found, w, fallback_w)
    h = torch.where(found, h, fallback_h)
    place = torch.rand(count, 2, generator=generator, device=device, dtype=torch.float64)
    top = torch.minimum((place[:, 0] * (height - h + 1)).floor(), height - h)
    left = torch.minimum((place[:, 1] * (width - w + 1)).floor(), width - w)
    top = torch.where(found, top, (height - fallback_h) // 2)
    left = torch.where(found, left, (width - fallback_w) // 2)
    return torch.stack([top, left, h, w], 1).long()


def resized_crops(images: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor) -> torch.Tensor:
    """Each image's box (top, left, height, width) resized bilinearly to ``size``², mirrored where ``flip``.

    ``images`` float (B, C, H, W), ``boxes`` (B, 4), ``flip`` bool (B,) -> float (B, C, size, size).
    One sampling grid for the batch: output pixel centres map to the box's sub-pixel positions as
    ``F.interpolate(..., align_corners=False)`` maps them, so a box covering the whole image gives
    the plain bilinear resize. Within half a pixel of a box's edge the neighbours outside the box are
    sampled (interpolating the cut-out crop would repeat its edge). No antialiasing: the array sets
    are at most 32 px and models at least 32 px, so crops are only ever enlarged.
    """
    batch, _, height, width = images.shape
    top, left, h, w = boxes.to(images.dtype).unbind(1)
    # Output pixel centres in [-1, 1] (align_corners=False), then each box's affine map of them:
    # separable, so built by broadcasting rather than F.affine_grid's batched matrix product.
    centres = (2 * torch.arange(size, device=images.device, dtype=images.dtype) + 1) / size - 1
    x = ((2 * left + w) / width - 1)[:, None] + (torch.where(flip, -w, w) / width)[:, None] * centres
    y = ((2 * top + h) / height - 1)[:, None] + (h / height)[:, None] * centres
    grid = torch.stack([x[:, None, :].expand(batch, size, size), y[:, :, None].expand(batch, size, size)], -1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


@dataclass(frozen=True, kw_only=True)
class BatchAugment:
    """The training transform of ``build_transform(train=True)`` for a uint8 batch (B, C, H, W) on
    any device: channels to ``in_chans``, normalisation, random resized crop to ``resolution``² with
    area fraction in ``crop_scale``, random horizontal flip (``hflip``). Returns float (B, in_chans, R, R)."""

    resolution: int
    in_chans: int
    mean: Sequence[float]
    std: Sequence[float]
    crop_scale: Sequence[float]
    hflip: bool = True

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = images.float()
        if x.shape[1] != self.in_chans:
            x = TF.rgb_to_grayscale(x) if self.in_chans == 1 else x.expand(-1, 3, -1, -1)
        # Normalised before resampling, which is linear: fewer pixels (28² instead of R²) to scale.
        mean = torch.tensor(fit_channels(self.mean, self.in_chans, "mean"), device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(fit_channels(self.std, self.in_chans, "std"), device=x.device).view(1, -1, 1, 1)
        x = (x / 255 - mean) / std
        boxes = crop_boxes(len(x), x.shape[2], x.shape[3], scale=self.crop_scale, generator=generator)
        flip = torch.rand(len(x), generator=generator, device=generator.device) < 0.5
        flip &= self.hflip
        return resized_crops(x, boxes.to(x.device), self.resolution, flip.to(x.device))


def batch_transform(transform: Callable[[torch.Tensor], torch.Tensor] | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A per-image ``v2`` transform without randomness (the evaluation one) applied to a whole
    uint8 batch (B, C, H, W) at once, returning a plain tensor (None: the images as floats)."""

    def apply(images: torch.Tensor) -> torch.Tensor:
        return transform(images).as_subclass(torch.Tensor) if transform else images.float()

    return apply


def step_seed(epoch_seed: int, step: int) -> int:
    """A well-mixed 63-bit seed for one step of an epoch."""
    return int(np.random.SeedSequence([epoch_seed, step]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class BatchedTrainLoader:
    """Training batches (images, labels) on ``device``: the indices of ``sampler`` (a
    ``ResumableSampler``: its order, sharding and skipped steps) in batches of ``batch_size``
    (the last partial one dropped), gathered from ``images`` and transformed by ``augment``
    (``images``, generator) -> float (B, C, R, R), in ``memory_format``.

    Each step's generator is seeded from ``epoch_generator``'s seed (the epoch's) and the step's
    index within the epoch.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        sampler: Sampler[int],
        batch_size: int,
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
        epoch_generator: torch.Generator,
        device: torch.device,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.sampler = sampler
        self.batch_size = batch_size
        self.augment = augment
        self.epoch_generator = epoch_generator
        self.device = device
        self.memory_format = memory_format
        self.generator = torch.Generator(device=device)

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def __iter__(self) -> Iterator[Batch]:
        seed = self.epoch_generator.initial_seed()
        first = getattr(self.sampler, "skip", 0) // self.batch_size  # steps a resumed epoch had done
        for step, indices in enumerate(BatchSampler(self.sampler, self.batch_size, drop_last=True), start=first):
            index = torch.tensor(indices, device=self.device)
            self.generator.manual_seed(step_seed(seed, step))
            images = self.augment(self.images[index], self.generator)
            yield images.contiguous(memory_format=self.memory_format), self.labels[index]


class BatchedEvalLoader:
    """Evaluation batches (images, labels) on ``device``: ``images`` uint8 (N, C, H, W) through the
    batch ``transform`` in batches of about ``EVAL_BATCH_ELEMENTS`` elements, computed at the first
    pass and kept when they fit in ``EVAL_CACHE_BYTES``."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        transform: Callable[[torch.Tensor], torch.Tensor],
        out_elements: int,
        min_batch: int,
        device: torch.device,
    ) -> None:
        self.images, self.labels = images, labels
        self.transform = transform
        self.device = device
        self.batch_size = max(min_batch, EVAL_BATCH_ELEMENTS // out_elements)
        self.keep = len(images) * out_elements * 4 <= EVAL_CACHE_BYTES
        self.kept: list[Batch] | None = None

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        if self.kept is not None:
            yield from self.kept
            return
        batches = []
        for start in range(0, len(self.images), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            batch = self.transform(self.images[chunk].to(self.device)), self.labels[chunk].to(self.device)
            if self.keep:
                batches.append(batch)
            yield batch
        if self.keep:
            self.kept = batches
