"""Data sets held in memory as one uint8 array: Fashion-MNIST (IDX files) and CIFAR (python format).

Neither format is downloaded here: the files must already be on disk.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import zlib
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
        *,
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
        try:
            data = f.read()
        except (EOFError, gzip.BadGzipFile, zlib.error) as err:
            raise ValueError(f"{path} is not a complete gzip file: {err}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = header + math.prod(shape) * dtype.itemsize
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
    images_path, labels_path = _find_idx(folder, images_stem), _find_idx(folder, labels_stem)
    images, labels = read_idx(images_path), read_idx(labels_path)
    images_ok = images.dtype == np.uint8 and images.ndim == 3
    if not images_ok or labels.dtype.kind not in "iu" or labels.shape != images.shape[:1]:
        raise ValueError(
            f"{folder}: {images_stem} and {labels_stem} do not hold N×H×W uint8 images with N integer labels, "
            f"got {images.dtype} {images.shape} and {labels.dtype} {labels.shape}"
        )
    _check_labels(labels, len(FASHION_MNIST_CLASSES), labels_path)
    return ArrayImages(
        torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels), classes=list(FASHION_MNIST_CLASSES)
    )


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
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (CIFAR files hold numpy arrays only)")


def _check_labels(labels: np.ndarray, num_classes: int, path: Path) -> None:
    """Refuse a label outside 0..num_classes-1 (naming ``path``): it would be no class, or read as
    an unreadable image (-1), instead of stopping the run."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        raise ValueError(
            f"{path} has label {int(labels[bad[0]])} (sample {int(bad[0])}, one of {len(bad)} such) "
            f"outside the {num_classes} classes 0..{num_classes - 1}"
        )


def _read_cifar_file(path: Path, keys: tuple[bytes, ...]) -> dict:
    """The dict in a CIFAR pickle, holding ``keys``; a damaged or tampered file is a ValueError naming it."""
    with open(path, "rb") as f:
        try:
            content = _ArraysOnly(f, encoding="bytes").load()
        except Exception as err:  # the pickle module raises almost any error on a damaged file
            raise ValueError(f"CIFAR file {path} cannot be read: {err or type(err).__name__}") from None
    if not isinstance(content, dict) or not all(key in content for key in keys):
        wanted = [key.decode() for key in keys]
        raise ValueError(f"CIFAR file {path} is not a dict with keys {wanted}, got {type(content).__name__}")
    return content


def _cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The images (N, 3, 32, 32) and labels (N,) of one CIFAR batch file."""
    batch = _read_cifar_file(path, (b"data", label_key))
    data, labels = batch[b"data"], batch[label_key]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"CIFAR file {path}: data must be a uint8 array (N, 3072), got {got}")
    if isinstance(labels, list) and all(type(v) is int for v in labels):
        labels = np.array(labels, dtype=np.int64)
    if not (isinstance(labels, np.ndarray) and labels.dtype.kind in "iu" and labels.shape == data.shape[:1]):
        raise ValueError(f"CIFAR file {path}: {label_key.decode()} must be {len(data)} integers, one per image")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar(folder: str | os.PathLike, split: str) -> ArrayImages:
    """CIFAR-10 or CIFAR-100 (fine labels) from its python-format folder, without a transform."""
    folder = Path(folder)
    kind = cifar_kind(folder)
    if kind is None:
        raise FileNotFoundError(f"source {str(folder)!r} is not a CIFAR-10/100 python-format folder")
    label_key, names_key = _CIFAR_LABELS[kind]
    meta_path = folder / CIFAR_FILES[kind]["meta"]
    names = _read_cifar_file(meta_path, (names_key,))[names_key]
    if not (isinstance(names, list) and names and all(isinstance(n, (bytes, str)) for n in names)):
        raise ValueError(f"CIFAR file {meta_path}: {names_key.decode()} must be a list of class names")
    classes = [n.decode() if isinstance(n, bytes) else n for n in names]
    images, labels = [], []
    for name in CIFAR_FILES[kind][split]:
        batch_images, batch_labels = _cifar_batch(folder / name, label_key)
        _check_labels(batch_labels, len(classes), folder / name)
        images.append(batch_images)
        labels.append(batch_labels)
    return ArrayImages(
        torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)), classes=classes
    )
