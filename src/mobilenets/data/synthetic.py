"""A small synthetic image-folder data set, for smoke tests where no real data is at hand.

Class k is a bright bar at angle k·90°/num_classes on a noisy background, at a random position,
so that a model must learn orientation rather than memorise pixels. Angles stay below 90° so that
a horizontal flip (θ → 180° − θ) never turns one class into another.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image


def synthetic_image(label: int, num_classes: int, *, size: int, rng: np.random.Generator) -> np.ndarray:
    """One (size, size, 3) uint8 image of class ``label``."""
    angle = math.pi / 2 * label / num_classes
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - (size - 1) / 2
    cx, cy = rng.uniform(-size / 8, size / 8, 2)
    distance = np.abs(-(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle))
    bar = np.clip(1.5 - distance / (size / 16), 0, 1)
    tint = rng.uniform(0.6, 1.0, 3)
    noise = rng.normal(0.15, 0.08, (size, size, 3))
    return (255 * np.clip(noise + bar[..., None] * tint, 0, 1)).astype(np.uint8)


def make_image_folder(
    root: str | os.PathLike,
    num_classes: int = 4,
    per_class: int = 16,
    size: int = 32,
    val_per_class: int = 0,
    seed: int = 0,
) -> Path:
    """Write PNGs under ``root``: ``class_k/`` folders, or ``train/class_k`` and ``val/class_k`` when
    ``val_per_class`` > 0. Returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    splits = {"train": per_class, "val": val_per_class} if val_per_class else {"": per_class}
    for split, count in splits.items():
        for label in range(num_classes):
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(synthetic_image(label, num_classes, size=size, rng=rng)).save(folder / f"{i:04d}.png")
    return root
