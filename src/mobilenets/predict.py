"""Classify images: read any image file, preprocess as the model's weights expect, return the top-k classes.

Preprocessing is the data pipeline's evaluation transform (torchvision.transforms.v2): resize the
shorter side to ``meta.resize`` (by default ``resolution / 0.875``, 256 for 224), centre-crop
``resolution``², scale to [0, 1], normalise with the meta's mean and std.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn
from torchvision.transforms import v2

from .data.folder import is_image_file
from .data.transforms import build_transform
from .device import resolve_device
from .registry import ModelMeta
from .weights import class_names

# The usual ImageNet evaluation crop: the centre 87.5 % of the resized image (224 of 256).
CROP_FRACTION = 0.875


@dataclass(frozen=True)
class Prediction:
    """One of the top classes: its index, name and softmax probability (0-1)."""

    index: int
    label: str
    prob: float


def resize_size(meta: ModelMeta) -> int:
    """Shorter side, pixels, before the centre crop: the weights' own, else ``resolution / 0.875``."""
    return meta.resize or round(meta.resolution / CROP_FRACTION)


def preprocessing(meta: ModelMeta) -> v2.Compose:
    """PIL RGB image -> normalised float tensor (in_chans, resolution, resolution), as ``meta``
    prescribes (a 1-channel model gets the image's luminance)."""
    crop_pct = meta.resolution / resize_size(meta)
    evaluation = build_transform(
        meta.resolution, meta.in_chans, meta.mean, meta.std, train=False, crop_pct=crop_pct, source_chans=3
    )
    return v2.Compose([v2.ToImage(), evaluation])


def labels_for(meta: ModelMeta) -> tuple[str, ...]:
    """Class names: the weights' own, else ImageNet's for a 1000-class model, else ``class <i>``."""
    if meta.labels:
        return meta.labels
    if meta.num_classes == 1000:
        return class_names()
    return tuple(f"class {i}" for i in range(meta.num_classes))


def image_files(paths: list[str | Path]) -> list[Path]:
    """``paths`` with each folder replaced by the image files inside it (recursively, sorted).

    Raises ``ValueError`` for a folder without images; files are kept as given (checked when read).
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if is_image_file(p))
            if not found:
                raise ValueError(f"folder {str(path)!r} holds no image files")
            files += found
        else:
            files.append(path)
    return files


def read_image(path: str | Path, min_size: int = 0) -> Image.Image:
    """Open an image file as 8-bit RGB: greyscale (8 or 16 bits) and palette images are expanded,
    transparency is composited on white. ``min_size`` lets large JPEGs decode at a reduced scale (never below it).

    Raises ``FileNotFoundError`` or ``ValueError`` (unreadable, truncated or not an image).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {str(path)!r} does not exist or is not a file")
    try:
        with Image.open(path) as image:
            if min_size:
                image.draft("RGB", (min_size, min_size))
            image.load()
            if image.mode.startswith("I"):  # 16-bit greyscale (PNG, TIFF): 0-65535 down to 0-255
                return Image.fromarray(
                    (np.asarray(image, np.float32) / 257).round().clip(0, 255).astype(np.uint8)
                ).convert("RGB")
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                rgba = image.convert("RGBA")
                return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
            return image.convert("RGB")
    except UnidentifiedImageError:
        raise ValueError(f"image {str(path)!r} is not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"image {str(path)!r} could not be decoded: {err}") from None


class Classifier:
    """A model ready to classify images: eval mode, on ``device`` (CUDA when available), with its
    preprocessing and class names from ``model.meta``.

    ``classifier(image)``: a PIL image or an image file -> its ``topk`` most likely classes, best first.
    """

    def __init__(self, model: nn.Module, topk: int = 5, device: str | torch.device | None = None) -> None:
        meta: ModelMeta | None = getattr(model, "meta", None)
        if meta is None:
            raise ValueError("model has no meta: build it with create_model")
        if meta.num_classes < 1:
            raise ValueError("model was built with num_classes=0: it has no classifier to predict with")
        if not isinstance(topk, int) or not 1 <= topk <= meta.num_classes:
            raise ValueError(f"topk must be an integer in [1, {meta.num_classes}], got {topk!r}")
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.meta, self.topk = meta, topk
        self.transform = preprocessing(meta)
        self.labels = labels_for(meta)

    def __call__(self, image: Image.Image | str | Path) -> list[Prediction]:
        if not isinstance(image, Image.Image):
            image = read_image(image, min_size=resize_size(self.meta))
        x = self.transform(image).unsqueeze(0).to(self.device)
        with torch.inference_mode():
            probs = self.model(x).softmax(dim=1)[0]
        values, indices = probs.topk(self.topk)
        return [Prediction(i, self.labels[i], p) for p, i in zip(values.tolist(), indices.tolist(), strict=True)]
