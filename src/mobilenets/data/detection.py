"""PLACEHOLDER for the detection data module: a COCO-format folder reader, just enough for the
detection trainer's tests (the real module replaces this file)."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from .decode import decode_image

DEFAULT_DETECTION_DATA = "fashion-mnist-scenes"


class DetectionDataset(Dataset):
    """Images and boxes of one split of a COCO-format folder (``annotations/instances_<split>.json``,
    images under ``<root>/<split>/``)."""

    def __init__(self, root: Path, split: str, *, train: bool, resolution: int, limit: int | None) -> None:
        path = root / "annotations" / f"instances_{split}.json"
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco = COCO(str(path))
        self.classes = [c["name"] for c in sorted(json.loads(path.read_text())["categories"], key=lambda c: c["id"])]
        self.ids = sorted(self.coco.imgs)[:limit]
        self.folder, self.split, self.source, self.skipped = root / split, split, str(root), {}
        resize = [v2.Resize((resolution, resolution))] if train else []
        self.transform = v2.Compose([*resize, v2.SanitizeBoundingBoxes()])

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        image = v2.functional.to_dtype(
            v2.functional.to_image(decode_image(self.folder / info["file_name"])), torch.float32, scale=True
        )
        anns = [a for a in self.coco.imgToAnns[image_id] if not a.get("iscrowd")]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=image.shape[-2:]),
            "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
            "image_id": image_id,
        }
        return self.transform(image, target)


def load_detection_dataset(
    source: str,
    split: str,
    *,
    train: bool,
    resolution: int,
    limit: int | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> DetectionDataset:
    root = Path(source)
    if not (root / "annotations" / f"instances_{split}.json").is_file():
        raise FileNotFoundError(f"data {source!r}: no annotations/instances_{split}.json (a COCO-format folder)")
    return DetectionDataset(root, split, train=train, resolution=resolution, limit=limit)


def collate_detection(batch: list[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[list[torch.Tensor], list[dict]]:
    return [image for image, _ in batch], [target for _, target in batch]
