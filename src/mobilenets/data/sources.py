"""Choosing a data source by name or path, and loading one split of it with its transform."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from .arrays import ArrayImages, cifar_kind, load_cifar, load_fashion_mnist
from .folder import ImageFolder, class_folders, scan_folder, split_samples
from .multilabel import (
    FASHION_MNIST_MULTILABEL,
    GRID_SIZE,
    MANIFEST_SUFFIXES,
    MultiLabelDataset,
    fashion_mnist_grids,
    load_manifest,
)
from .transforms import DEFAULT_CROP_PCT, DEFAULT_CROP_SCALE, build_transform, check_image_args

FASHION_MNIST = "fashion-mnist"
NAMED_SOURCES = (FASHION_MNIST, FASHION_MNIST_MULTILABEL)
# The kinds whose images carry sets of labels (trained with a sigmoid head): the one place the task is read from.
MULTILABEL_KINDS = (FASHION_MNIST_MULTILABEL, "manifest")
SPLITS = ("train", "val")
CIFAR_SUBFOLDERS = ("cifar-10-batches-py", "cifar-100-python")
# Beside train/, the first of these present is the evaluation split (any case).
EVAL_FOLDERS = ("val", "valid", "validation", "test")
_WHAT_DATA_IS = (
    f"{FASHION_MNIST!r}, an image folder (class subfolders, or train/ and val/ holding them), a CIFAR-10/100 "
    f"python-format folder, {FASHION_MNIST_MULTILABEL!r} or a multi-label manifest (.csv, .jsonl)"
)


@dataclass(frozen=True, kw_only=True)
class SourceInfo:
    """What a source holds before it is loaded.

    ``kind``: "fashion-mnist", "cifar-10", "cifar-100", "folders" (train/ and an evaluation folder)
    or "folder" (class subfolders split by a fraction); ``path`` its folder; ``channels`` of the
    stored images; ``image_size`` their side when they all share one (28 or 32), else None.
    Image folders only: ``train_dir`` holds the training class subfolders (the source itself or
    its train/), ``val_dir`` the evaluation ones (its val/, valid/, validation/ or test/), None
    when ``train_dir`` is split by a fraction.
    """

    kind: str
    path: Path | None
    channels: int
    image_size: int | None
    train_dir: Path | None = None
    val_dir: Path | None = None

    @property
    def multilabel(self) -> bool:
        """Whether its images carry sets of labels (a manifest, the built-in multi-label set)."""
        return self.kind in MULTILABEL_KINDS


def _source_text(source: str | os.PathLike) -> str:
    text = os.fspath(source)
    if not text.strip():
        raise ValueError(f"data must be {_WHAT_DATA_IS}, got {text!r}")
    return text


def canonical_source(source: str | os.PathLike) -> str:
    """``source`` as a run records it: "fashion-mnist" unchanged, a folder as an absolute path, so
    that a saved config or weights file finds its data from any working folder."""
    text = _source_text(source)
    return text if text in NAMED_SOURCES else os.path.abspath(text)


def inspect_source(source: str | os.PathLike, fashion_mnist_dir: str | os.PathLike | None = None) -> SourceInfo:
    """Recognise ``source``: the name "fashion-mnist" or "fashion-mnist-multilabel", a CIFAR
    python-format folder, an image folder, or a multi-label manifest file."""
    text = _source_text(source)
    if text in NAMED_SOURCES:
        return SourceInfo(
            kind=text,
            path=Path(fashion_mnist_dir) if fashion_mnist_dir else None,
            channels=1,
            image_size=28 if text == FASHION_MNIST else GRID_SIZE,
        )
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(
            f"data {text!r} is neither {FASHION_MNIST!r} nor an existing folder (give {_WHAT_DATA_IS})"
        )
    if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        return SourceInfo(kind="manifest", path=path, channels=3, image_size=None)
    if not path.is_dir():
        raise ValueError(f"data {text!r} is a file, not a folder (give {_WHAT_DATA_IS})")
    for candidate in (path, *(path / sub for sub in CIFAR_SUBFOLDERS)):
        kind = cifar_kind(candidate)
        if kind:
            return SourceInfo(kind=kind, path=candidate, channels=3, image_size=32)
    train_dir, val_dir = _image_splits(path)
    return SourceInfo(
        kind="folders" if val_dir else "folder",
        path=path,
        channels=3,
        image_size=None,
        train_dir=train_dir,
        val_dir=val_dir,
    )


def _image_splits(path: Path) -> tuple[Path, Path | None]:
    """(training folder, evaluation folder or None) of an image folder: its train/ and val/ (or
    valid/, validation/, test/), or train/ alone, or the folder itself when it holds classes only."""
    subfolders = class_folders(path, "data")
    named = {name.lower(): path / name for name in subfolders if name.lower() in ("train", *EVAL_FOLDERS)}
    # Split folders hold class subfolders, or are all there is: a class may be called "train" or
    # "test" among others, but classes "train" and "test" alone are a layout mistake.
    if not named or (len(named) < len(subfolders) and not any(class_folders(p) for p in named.values())):
        return path, None
    others = [name for name in subfolders if name.lower() not in named]
    problems = (["no train/"] if "train" not in named else []) + ([f"other folders {others}"] if others else [])
    if problems:
        raise ValueError(
            f"data {str(path)!r} has split folders {sorted(p.name for p in named.values())} with "
            f"{' and '.join(problems)}: give train/ (with val/, valid/, validation/ or test/ beside it, or alone "
            "to split it by val_fraction) or class subfolders only"
        )
    train_dir = named["train"]
    val_dir = next((named[name] for name in EVAL_FOLDERS if name in named), None)
    if val_dir is not None and val_dir.resolve() == train_dir.resolve():
        raise ValueError(
            f"data {str(path)!r}: {val_dir.name}/ is train/ (a link to it): evaluating on the training "
            "images would overstate accuracy (give held-out images, or train/ alone to split it by val_fraction)"
        )
    return train_dir, val_dir


def eval_crop_pct(info: SourceInfo, crop_pct: float | None = None) -> float:
    """The evaluation crop's share of the image side: ``crop_pct`` when given, else 1 (the whole
    image) for Fashion-MNIST and CIFAR, whose objects fill the frame, else Inception's 0.875."""
    if crop_pct is not None:
        return crop_pct
    return 1.0 if info.kind in (*NAMED_SOURCES, "cifar-10", "cifar-100") else DEFAULT_CROP_PCT


class LabelledSubset(Subset):
    """A subset that keeps its parent's ``classes``."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        super().__init__(dataset, indices)
        self.classes = dataset.classes


def load_dataset(
    source: str | os.PathLike,
    split: str,
    *,
    resolution: int,
    in_chans: int,
    mean: Sequence[float],
    std: Sequence[float],
    train: bool = False,
    crop_scale: Sequence[float] = DEFAULT_CROP_SCALE,
    crop_pct: float | None = None,
    hflip: bool = True,
    val_fraction: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
    fashion_mnist_dir: str | os.PathLike | None = None,
) -> Dataset:
    """One split of a data source, transformed for a model.

    Args:
        source: "fashion-mnist" (the built-in default, read from Debian's ``dataset-fashion-mnist``
            files, or ``fashion_mnist_dir`` / $MOBILENETS_FASHION_MNIST); a folder with ``train/``
            and ``val/`` (or ``valid/``, ``validation/``, ``test/``) class subfolders; one folder of
            class subfolders (at least 2, none without images), or ``train/`` alone, split per
            class with ``val_fraction`` (the same split for every ``seed``); or a CIFAR-10/100
            python-format folder.
        split: "train" or "val" (for Fashion-MNIST and CIFAR, their test sets; for image folders,
            the evaluation folder beside train/).
        resolution, in_chans, mean, std: the model's input size, channels (1 or 3; grey images are
            replicated, colour ones averaged) and normalisation (RGB values are averaged for grey).
        train: augment (random resized crop with area in ``crop_scale``, flips when ``hflip``);
            otherwise resize and take the central crop holding ``crop_pct`` of the side (default:
            the whole image for Fashion-MNIST and CIFAR, whose objects fill the frame; 0.875 else).
        limit: keep a random (seeded) subset of at most this many samples.

    Returns:
        A ``Dataset`` of ``(float tensor (in_chans, resolution, resolution), int label)`` with
        ``classes``, the class names. An undecodable file yields label ``UNREADABLE`` (-1). A
        multi-label source ("fashion-mnist-multilabel" or a manifest, see ``data.multilabel``)
        yields a float target (labels,) of 0/1 instead (-1 everywhere when undecodable).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    info = inspect_source(source, fashion_mnist_dir)
    crop_pct = eval_crop_pct(info, crop_pct)
    check_image_args(resolution, in_chans=in_chans, crop_scale=crop_scale, crop_pct=crop_pct)
    # Image folders are decoded straight to in_chans channels; the array sources store theirs.
    source_chans = in_chans if info.kind.startswith("folder") or info.kind == "manifest" else info.channels
    transform = build_transform(
        resolution,
        in_chans=in_chans,
        mean=mean,
        std=std,
        train=train,
        crop_scale=crop_scale,
        crop_pct=crop_pct,
        hflip=hflip,
        source_chans=source_chans,
    )
    dataset: Dataset
    if info.kind == FASHION_MNIST:
        dataset = load_fashion_mnist(split, fashion_mnist_dir)
    elif info.kind.startswith("cifar"):
        dataset = load_cifar(info.path, split)
    elif info.kind == FASHION_MNIST_MULTILABEL:
        dataset = fashion_mnist_grids(split, fashion_mnist_dir)
    elif info.kind == "manifest":
        blank = (in_chans, resolution, resolution)
        dataset = load_manifest(info.path, split, val_fraction=val_fraction, in_chans=in_chans, blank_shape=blank)
    else:
        if info.val_dir is not None:
            train_classes = None if split == "train" else class_folders(info.train_dir, "data")
            samples, classes = scan_folder(info.train_dir if split == "train" else info.val_dir, "data", train_classes)
        else:
            all_samples, classes = scan_folder(info.train_dir, "data")
            samples = split_samples(all_samples, val_fraction)[split]
            if not samples:  # only val can be empty: every class keeps an image in train
                raise ValueError(
                    f"val_fraction {val_fraction} puts no image of data {str(info.train_dir)!r} in val "
                    "(each class gives round(images × val_fraction)): raise it, or give train/ and val/ folders"
                )
        dataset = ImageFolder(
            samples, classes, in_chans=in_chans, transform=transform, blank_shape=(in_chans, resolution, resolution)
        )
    if isinstance(dataset, (ArrayImages, MultiLabelDataset)):
        dataset.transform = transform
    if limit is not None:
        dataset = _limit(dataset, limit, seed)
    return dataset


def _limit(dataset: Dataset, limit: int, seed: int) -> Dataset:
    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    if limit >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:limit]
    return LabelledSubset(dataset, sorted(order.tolist()))
