"""Image transforms at a model's resolution, from ``torchvision.transforms.v2``.

Data sets hand their transform a PIL image (image folders, "L" or "RGB", see ``data.decode``) or a
uint8 tensor (C, H, W) (Fashion-MNIST, CIFAR) with C = 1 (grey) or 3 (RGB); the transform returns a
float tensor (in_chans, resolution, resolution) normalised with mean/std. Resizing and cropping run
on the PIL image when there is one, as torchvision's reference ImageNet evaluation does (resizing a
tensor rounds differently: pixels differ by one level and probabilities by up to 2e-3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from ..models.base import MAX_RESOLUTION

# The paper's "reduced distortion": Inception's crop samples 8-100 % of the image area; MobileNets
# were trained with smaller distortions, so the smallest crop here keeps 35 % of the area.
DEFAULT_CROP_SCALE = (0.35, 1.0)
# Aspect ratios (width / height) of the random resized crop: Inception's, torchvision's default.
CROP_RATIO = (3 / 4, 4 / 3)
# Inception's evaluation crop: resize to resolution / 0.875, keep the central resolution².
DEFAULT_CROP_PCT = 0.875
IMAGE_CHANNELS = (1, 3)


def fit_channels(values: Sequence[float], in_chans: int, name: str) -> tuple[float, ...]:
    """Per-channel normalisation constants for ``in_chans``: RGB values are averaged for grey."""
    values = tuple(float(v) for v in values)
    if len(values) == in_chans:
        return values
    if len(values) == 3 and in_chans == 1:
        return (sum(values) / 3,)
    if len(values) == 1:
        return values * in_chans
    raise ValueError(f"{name} must have 1 or {in_chans} values for in_chans={in_chans}, got {len(values)}")


def check_image_args(resolution: int, *, in_chans: int, crop_scale: Sequence[float], crop_pct: float) -> None:
    if not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
    if in_chans not in IMAGE_CHANNELS:
        raise ValueError(f"in_chans must be 1 (grey) or 3 (RGB) for image data, got {in_chans!r}")
    low, high = crop_scale
    if not 0 < low <= high <= 1:
        raise ValueError(f"crop_scale must be (low, high) with 0 < low <= high <= 1, got {tuple(crop_scale)}")
    if not 0 < crop_pct <= 1 or resolution / crop_pct > MAX_RESOLUTION:  # the side images are resized to
        raise ValueError(f"crop_pct must be in (0, 1] and >= resolution / {MAX_RESOLUTION}, got {crop_pct!r}")


def build_transform(
    resolution: int,
    *,
    in_chans: int,
    mean: Sequence[float],
    std: Sequence[float],
    train: bool,
    crop_scale: Sequence[float] = DEFAULT_CROP_SCALE,
    crop_pct: float = DEFAULT_CROP_PCT,
    hflip: bool = True,
    source_chans: int | None = None,
) -> v2.Compose:
    """PIL image or uint8 (C, H, W) -> float (in_chans, resolution, resolution), normalised.

    ``source_chans``: the channels C of the images when known; a conversion to ``in_chans`` is added
    unless they already match.

    Training: Inception-style random resized crop with area fraction in ``crop_scale`` and aspect
    ratio in [3/4, 4/3], then a random horizontal flip (``hflip``). Evaluation: resize the shorter
    side to ``resolution / crop_pct``, then the central ``resolution``² crop.
    """
    check_image_args(resolution, in_chans=in_chans, crop_scale=crop_scale, crop_pct=crop_pct)
    if train:
        geometry: list[v2.Transform] = [
            v2.RandomResizedCrop(resolution, scale=tuple(crop_scale), ratio=CROP_RATIO, antialias=True)
        ]
        if hflip:
            geometry.append(v2.RandomHorizontalFlip())
    else:
        geometry = [v2.Resize(round(resolution / crop_pct), antialias=True), v2.CenterCrop(resolution)]
    channels: list[v2.Transform] = []
    if source_chans != in_chans:
        channels.append(v2.Grayscale(1) if in_chans == 1 else v2.RGB())
    return v2.Compose(
        [
            *geometry,
            v2.ToImage(),
            *channels,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(fit_channels(mean, in_chans, "mean"), fit_channels(std, in_chans, "std")),
        ]
    )
