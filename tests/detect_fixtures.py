"""What the detection tests share: the detector they train (the thinnest SSDLite, at 64 px) and a
tiny COCO-format set of coloured squares."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

MODEL = "ssdlite320_mobilenet_v2_0.25"
RESOLUTION = 64
CLASSES = ["red", "green", "blue"]
COLOURS = [(230, 40, 40), (40, 200, 40), (40, 60, 230)]


def make_squares(root: Path, *, train: int = 8, val: int = 4, size: int = 64, seed: int = 0) -> Path:
    """A COCO-format folder (``annotations/instances_<split>.json``, PNGs in ``<split>/``) of ``size``²
    images, each with one or two coloured squares on a dark noisy background; returns ``root``."""
    rng = np.random.default_rng(seed)
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(CLASSES)]
    next_id = 1
    for split, count in (("train", train), ("val", val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            pixels = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
            for _ in range(int(rng.integers(1, 3))):
                side = int(rng.integers(size // 5, size // 2))
                x, y = (int(v) for v in rng.integers(0, size - side, 2))
                label = int(rng.integers(0, len(CLASSES)))
                pixels[y : y + side, x : x + side] = COLOURS[label]
                annotations.append(
                    {
                        "id": next_id,
                        "image_id": index + 1,
                        "category_id": label + 1,
                        "bbox": [x, y, side, side],
                        "area": side * side,
                        "iscrowd": 0,
                    }
                )
                next_id += 1
            name = f"{split}_{index}.png"
            Image.fromarray(pixels).save(root / split / name)
            images.append({"id": index + 1, "file_name": name, "width": size, "height": size})
        (root / "annotations").mkdir(exist_ok=True)
        document = {"images": images, "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(document))
    return root
