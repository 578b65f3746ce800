"""Classify images: read any image file, preprocess as the model's weights expect, return the top-k classes.

Images are decoded as for training (:func:`mobilenets.data.decode.decode_image`), then go through
the data pipeline's evaluation transform (torchvision.transforms.v2, on the PIL image): resize the
shorter side to ``meta.resize`` (by default ``resolution / 0.875``, 256 for 224), centre-crop
``resolution``², scale to [0, 1], normalise with the meta's mean and std. This is torchvision's
reference ImageNet evaluation: with the same weights, probabilities agree to about 1e-6.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from .data.decode import convert_image, decode_image, mode_for
from .data.folder import is_image_file
from .data.transforms import DEFAULT_CROP_PCT, build_transform
from .device import resolve_device
from .registry import ModelMeta
from .weights import packaged_class_names

DEFAULT_THRESHOLD = 0.5  # probability from which a multi-label model predicts a label


def check_threshold(threshold: float | None) -> float:
    """``threshold``, or :data:`DEFAULT_THRESHOLD` for None; ``ValueError`` unless it is in (0, 1)."""
    if threshold is None:
        return DEFAULT_THRESHOLD
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise ValueError(f"threshold must be a probability in (0, 1), got {threshold!r}")
    return float(threshold)


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """One of the top classes: its index, name and probability (0-1; softmax, or a multi-label model's sigmoid)."""

    index: int
    label: str
    prob: float


def resize_size(meta: ModelMeta) -> int:
    """Shorter side, pixels, before the centre crop: the weights' own, else ``resolution / 0.875``."""
    return meta.resize or round(meta.resolution / DEFAULT_CROP_PCT)


def preprocessing(meta: ModelMeta) -> v2.Compose:
    """PIL image (any mode) -> normalised float tensor (in_chans, resolution, resolution), as ``meta``
    prescribes: converted as decoded files are (a 1-channel model gets the image's luminance), then
    the evaluation transform."""
    crop_pct = meta.resolution / resize_size(meta)
    evaluation = build_transform(
        meta.resolution,
        in_chans=meta.in_chans,
        mean=meta.mean,
        std=meta.std,
        train=False,
        crop_pct=crop_pct,
        source_chans=meta.in_chans,
    )
    return v2.Compose([partial(convert_image, mode=mode_for(meta.in_chans)), evaluation])


def labels_for(meta: ModelMeta) -> tuple[str, ...]:
    """Class names: the weights' own, else ImageNet's for a 1000-class model, else ``class <i>``."""
    if meta.labels:
        return meta.labels
    if meta.num_classes == 1000:
        return packaged_class_names()
    return tuple(f"class {i}" for i in range(meta.num_classes))


def image_files(paths: list[str | Path]) -> list[Path]:
    """``paths`` with each folder replaced by the image files inside it (recursively, sorted).

    Raises ``ValueError`` for an empty path (``Path("")`` would mean the working folder) or a folder
    without images; files are kept as given (checked when read).
    """
    files: list[Path] = []
    for given in paths:
        if not str(given).strip():
            raise ValueError(f"image path {str(given)!r} is empty: give image files or folders of them")
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if is_image_file(p))
            if not found:
                raise ValueError(f"folder {str(path)!r} holds no image files")
            files += found
        else:
            files.append(path)
    return files


class Classifier:
    """A model ready to classify images: eval mode, on ``device`` (CUDA when available), with its
    preprocessing and class names from ``model.meta``.

    ``classifier(image)``: a PIL image or an image file -> its ``topk`` most likely classes, best first;
    with ``threshold`` (a multi-label model's weights), every label whose sigmoid probability reaches
    it instead, most likely first (``topk`` unused).
    ``draft``: decode JPEG files at a reduced scale (never below the resize size): faster for large
    photos, but the probabilities move away from the reference pipeline's (docs/benchmarks.md).
    Raises ``FileNotFoundError`` or ``ValueError`` (one line) for a file that cannot be classified.
    """

    def __init__(
        self,
        model: nn.Module,
        topk: int = 5,
        device: str | torch.device | None = None,
        *,
        draft: bool = False,
        threshold: float | None = None,
    ) -> None:
        meta: ModelMeta | None = getattr(model, "meta", None)
        if meta is None:
            raise ValueError("model has no meta: build it with create_model")
        if meta.num_classes < 1:
            raise ValueError("model was built with num_classes=0: it has no classifier to predict with")
        if not isinstance(topk, int) or not 1 <= topk <= meta.num_classes:
            raise ValueError(f"topk must be an integer in [1, {meta.num_classes}], got {topk!r}")
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.threshold = None if threshold is None else check_threshold(threshold)
        self.meta, self.topk, self.draft = meta, topk, draft
        self.transform = preprocessing(meta)
        self.labels = labels_for(meta)

    def __call__(self, image: Image.Image | str | Path) -> list[Prediction]:
        if not isinstance(image, Image.Image):
            draft_size = resize_size(self.meta) if self.draft else None
            image = decode_image(image, mode=mode_for(self.meta.in_chans), draft=draft_size)
        x = self.transform(image).unsqueeze(0).to(self.device)
        with torch.inference_mode():
            logits = self.model(x)[0]
        if self.threshold is None:
            values, indices = logits.softmax(0).topk(self.topk)
        else:
            values, indices = logits.sigmoid().sort(descending=True)
            values, indices = values[values >= self.threshold], indices[values >= self.threshold]
        return [
            Prediction(index=i, label=self.labels[i], prob=p)
            for p, i in zip(values.tolist(), indices.tolist(), strict=True)
        ]
