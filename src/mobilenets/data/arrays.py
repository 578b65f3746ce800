"""Data sets held in memory as one uint8 array: Fashion-MNIST (IDX files) and CIFAR (python format).

Neither format is downloaded here: the files must already be on disk.
"""

from __future__ import annotations

import gzip
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_ENV = "MOBILENETS_FASHION_MNIST"
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# IDX type codes (third byte of the magic number) -> numpy dtype, big-endian as stored.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

CIFAR_FILES = {
    "cifar-10": {"train": [f"data_batch_{i}" for i in range(1, 6)], "val": ["test_batch"], "meta": "batches.meta"},
    "cifar-100": {"train": ["train"], "val": ["test"], "meta": "meta"},
}
_CIFAR_LABELS = {"cifar-10": (b"labels", b"label_names"), "cifar-100": (b"fine_labels", b"fine_label_names")}


class ArrayImages(Dataset):
    """Images held as one uint8 tensor (N, C, H, W) with int labels (N,) and class names.

    ``__getitem__`` returns ``(transform(image), label)``; the raw image without a transform.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        classes: list[str],
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if images.ndim != 4 or images.dtype != torch.uint8 or len(images) != len(labels):
            raise ValueError(f"images must be uint8 (N, C, H, W) matching {len(labels)} labels, got {images.shape}")
        self.images = images
        self.labels = labels.long()
        self.classes = list(classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        return (self.transform(image) if self.transform else image), int(self.labels[index])


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not, into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{path} is truncated or padded: {len(data)} bytes, expected {expected} for shape {shape}")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def fashion_mnist_dir(root: str | os.PathLike | None = None) -> Path:
    """The Fashion-MNIST folder: ``root``, else $MOBILENETS_FASHION_MNIST, else Debian's location."""
    return Path(root or os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DIR)


def _find_idx(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    wanted = ", ".join(f"{images}.gz, {labels}.gz" for images, labels in _FASHION_FILES.values())
    raise FileNotFoundError(
        f"source 'fashion-mnist': {folder / (stem + '.gz')} not found (the folder needs {wanted}). "
        f"Install them with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu, into {FASHION_MNIST_DIR}), "
        f"or set {FASHION_MNIST_ENV} to a folder holding those four files, "
        "or give a folder of images instead (--data PATH, with train/ and val/ class subfolders)"
    )


def load_fashion_mnist(split: str, root: str | os.PathLike | None = None) -> ArrayImages:
    """Fashion-MNIST without a transform: "train" the 60 000 training images, "val" the 10 000 test ones."""
    folder = fashion_mnist_dir(root)
    images_stem, labels_stem = _FASHION_FILES[split]
    images = read_idx(_find_idx(folder, images_stem))
    labels = read_idx(_find_idx(folder, labels_stem))
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ValueError(f"{folder}: {images_stem} and {labels_stem} do not hold N×H×W images with N labels")
    return ArrayImages(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels), list(FASHION_MNIST_CLASSES))


def cifar_kind(folder: Path) -> str | None:
    """ "cifar-10" or "cifar-100" when ``folder`` holds that data set's python-format files, else None."""
    for kind, files in CIFAR_FILES.items():
        if all((folder / name).is_file() for name in [*files["train"], *files["val"], files["meta"]]):
            return kind
    return None


class _ArraysOnly(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: the CIFAR files need nothing else, and
    refusing every other class means a tampered file cannot run code."""

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # how Python 3 pickles bytes with protocol 2
        }
    )

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR file")


def _read_cifar_file(path: Path) -> dict:
    with open(path, "rb") as f:
        return _ArraysOnly(f, encoding="bytes").load()


def load_cifar(folder: str | os.PathLike, split: str) -> ArrayImages:
    """CIFAR-10 or CIFAR-100 (fine labels) from its python-format folder, without a transform."""
    folder = Path(folder)
    kind = cifar_kind(folder)
    if kind is None:
        raise FileNotFoundError(f"source {str(folder)!r} is not a CIFAR-10/100 python-format folder")
    label_key, names_key = _CIFAR_LABELS[kind]
    images, labels = [], []
    for name in CIFAR_FILES[kind][split]:
        batch = _read_cifar_file(folder / name)
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch[label_key])
    meta = _read_cifar_file(folder / CIFAR_FILES[kind]["meta"])
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[names_key]]
    return ArrayImages(torch.from_numpy(np.concatenate(images)), torch.tensor(labels), classes)
