"""Data for training and evaluation: Fashion-MNIST (the built-in default), image folders, CIFAR.

:func:`load_dataset` gives one split of a source as a ``Dataset`` of ``(image, label)``: ``image``
a float tensor (in_chans, resolution, resolution) normalised for the model, ``label`` an int, and
``classes`` the class names. A file that cannot be decoded yields label :data:`UNREADABLE` (-1)
and a zero image, so that losses and metrics skip it and the count can be reported. Image files are
decoded by :func:`decode_image`, the same way for training, evaluation, calibration and predict.

Object detection: :func:`load_detection_dataset` gives one split of a COCO or VOC folder, or of the
built-in Fashion-MNIST scenes (:data:`DEFAULT_DETECTION_DATA`), as a :class:`DetectionDataset` of
``(image, {"boxes", "labels", "image_id"})``, batched by :func:`collate_detection`.
"""

from .arrays import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, FASHION_MNIST_ENV, ArrayImages, read_idx
from .decode import MAX_ASPECT_RATIO, convert_image, decode_image
from .detection import (
    DEFAULT_DETECTION_DATA,
    DetectionDataset,
    collate_detection,
    detection_transform,
    load_detection_dataset,
)
from .folder import UNREADABLE, ImageFolder
from .sources import FASHION_MNIST, SourceInfo, canonical_source, eval_crop_pct, inspect_source, load_dataset
from .transforms import DEFAULT_CROP_PCT, DEFAULT_CROP_SCALE, build_transform, fit_channels

__all__ = [
    "DEFAULT_CROP_PCT",
    "DEFAULT_CROP_SCALE",
    "DEFAULT_DETECTION_DATA",
    "FASHION_MNIST",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_ENV",
    "MAX_ASPECT_RATIO",
    "UNREADABLE",
    "ArrayImages",
    "DetectionDataset",
    "ImageFolder",
    "SourceInfo",
    "build_transform",
    "canonical_source",
    "collate_detection",
    "convert_image",
    "decode_image",
    "detection_transform",
    "eval_crop_pct",
    "fit_channels",
    "inspect_source",
    "load_dataset",
    "load_detection_dataset",
    "read_idx",
]
