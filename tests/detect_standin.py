"""What the detection tests share: a tiny COCO-format set of coloured squares, and a tiny SSD
registered under a test-only name until the project's detectors are used instead (set ``MODEL`` to
one, e.g. "ssdlite320_mobilenet_v2_0.25", and ``register`` does nothing)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD, SSDHead

from mobilenets.registry import register_model, registry

STANDIN = "test_tiny_ssd_64"
MODEL = STANDIN
RESOLUTION = 64
CLASSES = ["red", "green", "blue"]
COLOURS = [(230, 40, 40), (40, 200, 40), (40, 60, 230)]


class TinyBackbone(nn.Module):
    """Two feature maps (strides 8 and 16) from a few plain convolutions."""

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.stem = nn.Sequential(block(3, 8), block(8, 16), block(16, 16))
        self.extra = block(16, 16)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        first = self.stem(x)
        return {"0": first, "1": self.extra(first)}


def tiny_ssd(num_classes: int = 4, in_chans: int = 3) -> SSD:
    """An SSD of a few thousand parameters at 64×64 (``in_chans`` is always 3: as the registry asks)."""
    anchors = DefaultBoxGenerator([[2], [2]], min_ratio=0.3, max_ratio=0.8)
    head = SSDHead([16, 16], anchors.num_anchors_per_location(), num_classes)
    return SSD(
        TinyBackbone(),
        anchors,
        (RESOLUTION, RESOLUTION),
        num_classes,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
        head=head,
        score_thresh=0.01,
        detections_per_img=20,
        topk_candidates=50,
    )


def register() -> str:
    """Register the stand-in (once) when ``MODEL`` is it; return ``MODEL``."""
    if MODEL == STANDIN and STANDIN not in registry():
        register_model(STANDIN, tiny_ssd, "ssd", {"num_classes": 4}, resolution=RESOLUTION)
    return MODEL


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


if __name__ == "__main__":  # `python tests/detect_standin.py ARGS` (or under torchrun): the CLI with the stand-in
    import sys

    from mobilenets.cli import main

    register()
    sys.exit(main(sys.argv[1:]))
