"""Multi-label data: images whose target is a set of labels, as a 0/1 vector over the label vocabulary.

Two sources:

* a manifest file, CSV or JSON lines, paths relative to the manifest's folder:

  - CSV (``.csv``) with the header ``path,labels`` and labels separated by ``|``
    (``shirt|bag``; an empty field: an image without any label); without a ``labels`` column
    the manifest is unlabelled;
  - JSON lines (``.jsonl``): ``{"path": "a.jpg", "labels": ["shirt", "bag"]}`` a line; lines
    without ``labels`` make an unlabelled manifest.

  Beside the training manifest, ``val``, ``valid``, ``validation`` or ``test`` with the same
  suffix is the evaluation manifest; without one, a fixed ``val_fraction`` of the images is held
  out. The vocabulary is the sorted labels of the training manifest (of the evaluation one when
  training is unlabelled, which only distillation can use); a label seen only in evaluation is an
  error, a named file that does not exist too. An image without any label is kept, all-negative.
* ``fashion-mnist-multilabel``: 2×2 grids of real Fashion-MNIST items (training items for
  "train", test items for "val"), each cell empty with probability 1/4, labelled by the classes
  present; made in memory, the same every time.

Each dataset yields ``(image, target)``: ``target`` a float tensor (labels,) of 0 and 1; NaN for an
unlabelled image (never to be read); :data:`UNREADABLE` (-1) everywhere for a file that cannot
be decoded (a zero image, skipped by losses and metrics, counted).
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from .arrays import FASHION_MNIST_CLASSES, load_fashion_mnist
from .decode import decode_image, mode_for
from .folder import UNREADABLE

FASHION_MNIST_MULTILABEL = "fashion-mnist-multilabel"
MULTILABEL = "multilabel"  # the task of these sources, as a weights file records it (absent: single-label)
MANIFEST_SUFFIXES = (".csv", ".jsonl")
LABEL_SEPARATOR = "|"  # between the labels of one CSV row
EVAL_NAMES = ("val", "valid", "validation", "test")  # the evaluation manifest's stem, beside the training one
GRID = 2  # the built-in set's images are GRID × GRID cells of 28 × 28 items
GRID_SIZE = 28 * GRID
EMPTY_CELL = 0.25  # chance that a cell of the built-in set holds no item
GRID_SEEDS = {"train": 0, "val": 1}


class MultiLabelDataset(Dataset):
    """``(transform(image), target)`` for images that are in memory (uint8 (N, C, H, W)) or files
    (decoded to ``in_chans`` channels when read). ``targets``: float (N, labels), 0/1 or NaN
    (unlabelled); ``classes``: the label names."""

    def __init__(
        self,
        images: torch.Tensor | list[Path],
        targets: torch.Tensor,
        *,
        classes: list[str],
        in_chans: int = 3,
        transform: Callable[[torch.Tensor | Image.Image], torch.Tensor] | None = None,
        blank_shape: tuple[int, ...] = (),
    ) -> None:
        self.images, self.targets, self.classes = images, targets, list(classes)
        self.mode = mode_for(in_chans)
        self.transform = transform
        self.blank_shape = blank_shape

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        if isinstance(image, Path):
            try:
                image = decode_image(image, mode=self.mode)
            except (ValueError, OSError) as err:  # OSError: a file removed since the manifest was read
                warnings.warn(f"skipping unreadable image: {err}", stacklevel=2)
                return torch.zeros(self.blank_shape), torch.full_like(self.targets[index], UNREADABLE)
        return (self.transform(image) if self.transform else image), self.targets[index]


def targets_of(dataset: Dataset) -> torch.Tensor:
    """The targets (N, labels) of a :class:`MultiLabelDataset` or of a subset of one, in its order."""
    if isinstance(dataset, Subset):
        return targets_of(dataset.dataset)[list(dataset.indices)]
    return dataset.targets


# --- manifests -------------------------------------------------------------------------------------


def read_manifest(path: str | os.PathLike) -> tuple[list[Path], list[list[str]] | None]:
    """(image paths, each image's labels or None for an unlabelled manifest) of a CSV or JSON-lines
    manifest (see the module's docstring); paths relative to the manifest's folder. Raises
    ``ValueError`` naming the file and line of a malformed entry, ``FileNotFoundError`` naming the
    images that do not exist."""
    path = Path(path)
    if path.suffix.lower() not in MANIFEST_SUFFIXES:
        raise ValueError(f"manifest {str(path)!r} must be a .csv or .jsonl file")
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _jsonl_rows(path)
    if not rows:
        raise ValueError(f"manifest {str(path)!r} lists no images")
    has_labels = {labels is not None for _, labels in rows}
    if len(has_labels) > 1:
        raise ValueError(f"manifest {str(path)!r} gives labels for some images only: give them for all or none")
    files = [path.parent / name for name, _ in rows]
    missing = [str(file) for file in files if not file.is_file()]
    if missing:
        raise FileNotFoundError(
            f"manifest {str(path)!r} names {len(missing)} image(s) that do not exist, first {missing[0]!r} "
            "(paths are relative to the manifest's folder)"
        )
    return files, [labels for _, labels in rows] if has_labels == {True} else None


def _csv_rows(path: Path) -> list[tuple[str, list[str] | None]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if "path" not in columns or not set(columns) <= {"path", "labels"}:
            raise ValueError(
                f"manifest {str(path)!r} must have the header 'path,labels' (or 'path' alone), got {columns}"
            )
        rows = []
        for line, row in enumerate(reader, 2):
            if not row["path"] or None in row:  # None: more fields than the header names
                raise ValueError(f"manifest {str(path)!r} line {line}: expected 'path,labels', got {row}")
            text = row.get("labels")
            labels = None if "labels" not in columns else [x.strip() for x in (text or "").split(LABEL_SEPARATOR)]
            rows.append((row["path"], None if labels is None else [x for x in labels if x]))
    return rows


def _jsonl_rows(path: Path) -> list[tuple[str, list[str] | None]]:
    rows = []
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        try:
            entry = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"manifest {str(path)!r} line {line}: not JSON ({err})") from None
        labels = entry.get("labels") if isinstance(entry, dict) else None
        ok = isinstance(entry, dict) and isinstance(entry.get("path"), str) and entry["path"]
        if not ok or not (labels is None or (isinstance(labels, list) and all(isinstance(x, str) for x in labels))):
            raise ValueError(
                f'manifest {str(path)!r} line {line}: expected {{"path": "...", "labels": ["...", ...]}}, got {text}'
            )
        rows.append((entry["path"], labels))
    return rows


def eval_manifest(path: Path) -> Path | None:
    """The evaluation manifest beside the training manifest ``path`` (``val.csv`` beside ``train.csv``), if any."""
    for stem in EVAL_NAMES:
        candidate = path.with_name(stem + path.suffix)
        if candidate.is_file() and candidate.resolve() != path.resolve():
            return candidate
    return None


def _encode(labels: list[list[str]] | None, classes: list[str], count: int, where: str) -> torch.Tensor:
    """Each of ``count`` images' labels as a 0/1 row over ``classes`` (NaN rows when unlabelled)."""
    if labels is None:
        return torch.full((count, len(classes)), float("nan"))
    unknown = sorted({x for row in labels for x in row} - set(classes))
    if unknown:
        raise ValueError(f"{where} has labels {unknown} that the training manifest does not have (it has {classes})")
    index = {name: i for i, name in enumerate(classes)}
    targets = torch.zeros(len(labels), len(classes))
    for i, row in enumerate(labels):
        targets[i, [index[x] for x in row]] = 1.0
    return targets


def load_manifest(
    path: str | os.PathLike, split: str, *, val_fraction: float, in_chans: int, blank_shape: tuple[int, ...]
) -> MultiLabelDataset:
    """One split of the manifest source whose training manifest is ``path``, without a transform."""
    path = Path(path)
    files, labels = read_manifest(path)
    val_path = eval_manifest(path)
    if val_path is not None:
        val_files, val_labels = read_manifest(val_path)
    else:
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(0)).tolist()
        n_val = round(len(files) * val_fraction)
        if not 0 < n_val < len(files):
            raise ValueError(
                f"val_fraction {val_fraction} holds out {n_val} of the {len(files)} images of manifest {str(path)!r}: "
                f"raise it, or give a val{path.suffix} beside it"
            )
        held, kept = sorted(order[:n_val]), sorted(order[n_val:])
        val_files, files = [files[i] for i in held], [files[i] for i in kept]
        if labels is not None:
            val_labels, labels = [labels[i] for i in held], [labels[i] for i in kept]
        else:
            val_labels = None
    defining = labels if labels is not None else val_labels
    if defining is None:
        raise ValueError(
            f"manifest {str(path)!r} and its evaluation images have no labels: evaluation needs labelled images"
        )
    classes = sorted({x for row in defining for x in row})
    if not classes:
        raise ValueError(f"manifest {str(path)!r}: no image has a label, so there is nothing to learn")
    if split == "train":
        chosen, chosen_labels, where = files, labels, f"manifest {str(path)!r}"
    else:
        chosen, chosen_labels, where = val_files, val_labels, f"evaluation manifest {str(val_path or path)!r}"
    targets = _encode(chosen_labels, classes, len(chosen), where)
    return MultiLabelDataset(chosen, targets, classes=classes, in_chans=in_chans, blank_shape=blank_shape)


# --- the built-in set ------------------------------------------------------------------------------


def fashion_mnist_grids(split: str, root: str | os.PathLike | None = None) -> MultiLabelDataset:
    """``fashion-mnist-multilabel``'s ``split``: GRID × GRID cells of Fashion-MNIST items of that split,
    each item used at most once, cells empty with probability :data:`EMPTY_CELL`; without a transform."""
    items = load_fashion_mnist(split, root)
    rng = np.random.default_rng(GRID_SEEDS[split])
    cells = GRID * GRID
    count = len(items) // cells
    chosen = torch.from_numpy(rng.permutation(len(items))[: count * cells].reshape(count, cells))
    present = torch.from_numpy(rng.random((count, cells)) >= EMPTY_CELL)
    images = torch.zeros(count, 1, GRID_SIZE, GRID_SIZE, dtype=torch.uint8)
    targets = torch.zeros(count, len(FASHION_MNIST_CLASSES))
    rows = torch.arange(count)
    for cell in range(cells):
        y, x = divmod(cell, GRID)
        placed = items.images[chosen[:, cell]] * present[:, cell, None, None, None]
        images[:, :, 28 * y : 28 * (y + 1), 28 * x : 28 * (x + 1)] = placed
        targets[rows[present[:, cell]], items.labels[chosen[present[:, cell], cell]]] = 1.0
    return MultiLabelDataset(images, targets, classes=list(FASHION_MNIST_CLASSES), in_chans=1)
