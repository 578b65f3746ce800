"""Detection scenes composed from real items: a few objects pasted on a background, with exact boxes.

:func:`compose_scene` places grey items (an object bright on black, as in Fashion-MNIST) on an RGB
background, each resized, tinted and kept apart from the others, and returns the image with one box
per item: the bounding box of the pixels it painted. :func:`random_background` draws a solid colour,
a gradient, smooth noise or a texture tiled from another item. :func:`random_scene` draws both from a
random generator, so a set is one generator per scene index: its first N scenes are the same
whatever its length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

SCENE_SIZE = 320
ITEMS_PER_SCENE = (1, 4)
ITEM_SIZES = (24, 160)
# A resized item's pixel belongs to it above this grey level (of 255): the faint ring that resizing
# spreads around an item is left out both of what is painted and of its box, so the box is exact.
ITEM_THRESHOLD = 24
# Gap kept between items (pixels), so that no item hides part of another and every box stays exact.
ITEM_GAP = 2
PLACEMENT_TRIES = 30
BACKGROUNDS = ("solid", "gradient", "noise", "texture")


@dataclass(frozen=True)
class Scene:
    """``image`` uint8 (H, W, 3); ``boxes`` float32 (N, 4) xyxy in pixels; ``labels`` int64 (N,)."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


def _resize(item: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(item).resize((width, height), Image.Resampling.BILINEAR))


def _colour(rng: np.random.Generator, *, low: float, high: float) -> np.ndarray:
    return rng.uniform(low, high, 3).astype(np.float32)


def random_background(rng: np.random.Generator, size: int, items: np.ndarray) -> np.ndarray:
    """A (size, size, 3) uint8 background of a kind drawn from :data:`BACKGROUNDS`; ``items`` (N, h, w)
    uint8 are the grey items a texture may be tiled from."""
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    base = _colour(rng, low=0, high=255)
    if kind == "solid":
        out = np.broadcast_to(base, (size, size, 3))
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        t = xx * np.cos(angle) + yy * np.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        out = base + t[..., None] * (_colour(rng, low=0, high=255) - base)
    elif kind == "noise":
        cells = int(rng.integers(3, 24))
        coarse = rng.uniform(0, 255, (cells, cells, 3)).astype(np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), np.float32)
        out = 0.5 * smooth + 0.5 * base + rng.normal(0, rng.uniform(0, 12), (size, size, 3))
    else:  # a faint tiling of one item: clutter that looks like the objects without being one
        tile_side = int(rng.integers(12, 48))
        tile = _resize(items[rng.integers(len(items))], tile_side, tile_side).astype(np.float32) / 255
        reps = -(-size // tile_side)
        tiled = np.tile(tile, (reps, reps))[:size, :size]
        contrast = _colour(rng, low=-60, high=60)
        out = base + tiled[..., None] * contrast
    return np.clip(out, 0, 255).astype(np.uint8)


def compose_scene(
    background: np.ndarray,
    items: Sequence[np.ndarray],
    labels: Sequence[int],
    *,
    rng: np.random.Generator,
    sizes: tuple[int, int] = ITEM_SIZES,
) -> Scene:
    """Paste grey ``items`` (each (h, w) uint8, the object bright on black) of class ``labels`` on a
    copy of ``background`` (H, W, 3) uint8: each resized to a side drawn in ``sizes`` (pixels, aspect
    jittered by up to 25 %), maybe mirrored, tinted with a random colour, at a random place apart from
    the items before it. An item that finds no free place in :data:`PLACEMENT_TRIES` draws, or keeps
    no pixel above :data:`ITEM_THRESHOLD`, is left out (with its label).
    """
    if len(items) != len(labels):
        raise ValueError(f"compose_scene needs one label per item, got {len(items)} items and {len(labels)} labels")
    image = background.astype(np.float32)
    height, width = image.shape[:2]
    boxes: list[list[float]] = []
    kept: list[int] = []
    for item, label in zip(items, labels, strict=True):
        side = rng.uniform(*sizes)
        aspect = np.exp(rng.uniform(np.log(0.8), np.log(1.25)))
        w = int(min(width, max(2, round(side * aspect**0.5))))
        h = int(min(height, max(2, round(side / aspect**0.5))))
        grey = _resize(item[:, ::-1] if rng.random() < 0.5 else item, w, h)
        mask = grey > ITEM_THRESHOLD
        if not mask.any():
            continue
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        for _ in range(PLACEMENT_TRIES):
            x = int(rng.integers(0, width - w + 1))
            y = int(rng.integers(0, height - h + 1))
            box = [x + left, y + top, x + right, y + bottom]
            if all(_apart(box, other) for other in boxes):
                break
        else:
            continue
        # Dark parts of an item stay visible as a darker shade of its colour, not as holes.
        shade = 0.35 + 0.65 * grey.astype(np.float32)[..., None] / 255
        region = image[y : y + h, x : x + w]
        region[mask] = (shade * _colour(rng, low=30, high=255))[mask]
        boxes.append([float(v) for v in box])
        kept.append(int(label))
    return Scene(
        image=np.clip(image, 0, 255).astype(np.uint8),
        boxes=np.array(boxes, np.float32).reshape(-1, 4),
        labels=np.array(kept, np.int64),
    )


def _apart(box: list[float], other: list[float]) -> bool:
    return (
        box[0] >= other[2] + ITEM_GAP
        or other[0] >= box[2] + ITEM_GAP
        or box[1] >= other[3] + ITEM_GAP
        or other[1] >= box[3] + ITEM_GAP
    )


def random_scene(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, *, size: int = SCENE_SIZE) -> Scene:
    """One scene of :data:`ITEMS_PER_SCENE` items drawn from ``images`` (N, h, w) uint8 with class
    ``labels`` (N,), on a :func:`random_background` (textures tiled from the same ``images``)."""
    count = int(rng.integers(ITEMS_PER_SCENE[0], ITEMS_PER_SCENE[1] + 1))
    picks = rng.integers(len(images), size=count)
    background = random_background(rng, size, images)
    return compose_scene(background, [images[i] for i in picks], labels[picks].tolist(), rng=rng)
