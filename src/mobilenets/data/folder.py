"""Image folders: one subfolder per class, images decoded with Pillow when read.

A file that cannot be decoded (corrupt, truncated, not an image) does not stop a run: it is
returned as a zero image with label :data:`UNREADABLE`, which losses and metrics skip and the
training loop counts. Non-RGB images (grey, palette, RGBA, CMYK, 16-bit) are converted.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from .decode import decode_image, mode_for

UNREADABLE = -1
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")


def is_image_file(path: Path) -> bool:
    """A visible file with an image suffix (``IMAGE_EXTENSIONS``, any case)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def class_folders(root: str | os.PathLike, name: str = "source") -> list[str]:
    """The class subfolders of ``root``, sorted: label i is the i-th name."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{name} {str(root)!r} is not a folder")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_folder(
    root: str | os.PathLike, name: str = "source", classes: list[str] | None = None
) -> tuple[list[tuple[Path, int]], list[str]]:
    """(path, label) for every image in the class subfolders of ``root``, sorted, and the class names.

    ``classes`` fixes the names (and so the labels), e.g. a val/ folder takes those of train/;
    without it the subfolders define the classes, and there must be at least 2, none without images.
    """
    root = Path(root)
    found = class_folders(root, name)
    defines = classes is None
    classes = found if classes is None else classes
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(f"{name} {str(root)!r} has classes {unknown} that are not among {classes}")
    label = {cls: i for i, cls in enumerate(classes)}
    samples = [(path, label[cls]) for cls in found for path in sorted((root / cls).rglob("*")) if is_image_file(path)]
    if not samples:
        raise ValueError(
            f"{name} {str(root)!r} holds no images: it needs one subfolder per class with "
            f"{', '.join(IMAGE_EXTENSIONS)} files inside"
        )
    if defines:
        filled = {label for _, label in samples}
        empty = [cls for i, cls in enumerate(classes) if i not in filled]
        if empty:
            raise ValueError(
                f"{name} {str(root)!r} has class folders without images ({', '.join(IMAGE_EXTENSIONS)}) {empty}: "
                "a class without images is one the model can never learn (add images or remove those folders)"
            )
        if len(classes) < 2:
            raise ValueError(
                f"{name} {str(root)!r} has a single class folder {classes[0]!r}: a classifier needs at least 2 "
                "(one subfolder per class)"
            )
    return samples, classes


def split_samples(samples: list[tuple[Path, int]], val_fraction: float) -> dict[str, list[tuple[Path, int]]]:
    """Split each class at random into ``val_fraction`` for "val" and the rest for "train"; each
    class keeps at least one image in "train".

    The split is fixed (not drawn from a run's seed): weights trained with one seed and evaluated
    later are evaluated on the images held out from their training, not on some they learnt.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    generator = torch.Generator().manual_seed(0)
    out: dict[str, list[tuple[Path, int]]] = {"train": [], "val": []}
    by_label: dict[int, list[tuple[Path, int]]] = {}
    for sample in samples:
        by_label.setdefault(sample[1], []).append(sample)
    for _, members in sorted(by_label.items()):
        order = torch.randperm(len(members), generator=generator).tolist()
        # At least one image stays in train: a class seen only in val could never be learnt.
        n_val = min(round(len(members) * val_fraction), len(members) - 1)
        out["val"].extend(members[i] for i in sorted(order[:n_val]))
        out["train"].extend(members[i] for i in sorted(order[n_val:]))
    return out


class ImageFolder(Dataset):
    """Images listed as (path, label), decoded on read by :func:`~mobilenets.data.decode.decode_image`
    to a PIL image, "L" for ``in_chans`` 1 else "RGB".

    ``__getitem__`` returns ``(transform(image), label)``, or ``(zeros(blank_shape), UNREADABLE)``
    for a file that cannot be decoded or is refused as too large (a warning names it).
    """

    def __init__(
        self,
        samples: list[tuple[Path, int]],
        classes: list[str],
        *,
        in_chans: int,
        transform: Callable[[Image.Image], torch.Tensor],
        blank_shape: tuple[int, ...],
    ) -> None:
        self.samples = samples
        self.classes = classes
        self.mode = mode_for(in_chans)
        self.transform = transform
        self.blank_shape = blank_shape

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            image = decode_image(path, mode=self.mode)
        except (ValueError, OSError) as err:  # OSError: a file removed since the folder was scanned
            warnings.warn(f"skipping unreadable image: {err}", stacklevel=2)
            return torch.zeros(self.blank_shape), UNREADABLE
        return self.transform(image), label
