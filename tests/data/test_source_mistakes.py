"""Layout mistakes and damaged or hostile files: each one line naming the user's path, never a
silently wrong data set."""

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from test_data_sources import MEAN, STD, fake_fashion_mnist, write_cifar, write_idx

from mobilenets.data import load_dataset


def load(source: Path | str, split: str = "train", **kwargs):
    return load_dataset(source, split, 32, 3, MEAN, STD, **kwargs)


def one_line_error(error: type[Exception], call, *fragments: str) -> str:
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    return message


# --- CIFAR ------------------------------------------------------------------------------------


def rewrite_batch(folder: Path, **changes: object) -> None:
    """Replace keys of CIFAR-10's test batch (3 classes, 6 images)."""
    path = folder / "test_batch"
    batch = pickle.loads(path.read_bytes())
    batch.update({key.encode(): value for key, value in changes.items()})
    path.write_bytes(pickle.dumps(batch, protocol=2))


@pytest.mark.parametrize("bad", [3, -1, 255])
def test_cifar_labels_outside_the_classes(tmp_path: Path, bad: int) -> None:
    write_cifar(tmp_path, "cifar-10")
    rewrite_batch(tmp_path, labels=[0, 1, 2, bad, 0, 1])
    one_line_error(ValueError, lambda: load(tmp_path, "val"), str(tmp_path / "test_batch"), f"label {bad} (sample 3")


class _System:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_pickle_importing_os_system(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar-10")
    marker = tmp_path / "ran"
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": _System(marker), b"labels": []}, protocol=2))
    one_line_error(ValueError, lambda: load(tmp_path, "val"), str(tmp_path / "test_batch"), "refusing to load")
    assert not marker.exists()


def test_cifar_pickle_cut_in_half(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar-10")
    path = tmp_path / "data_batch_3"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    one_line_error(ValueError, lambda: load(tmp_path), str(path), "cannot be read")
    path.write_bytes(b"")
    one_line_error(ValueError, lambda: load(tmp_path), str(path), "cannot be read")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ([1, 2, 3], "not a dict with keys ['data', 'labels'], got list"),
        ({b"data": np.zeros((6, 3072), np.uint8)}, "not a dict with keys"),
        ({b"data": np.zeros((6, 100), np.uint8), b"labels": [0] * 6}, "uint8 array (N, 3072), got uint8 (6, 100)"),
        ({b"data": np.full((6, 3072), 300), b"labels": [0] * 6}, "uint8 array (N, 3072), got int64"),
        ({b"data": "pixels", b"labels": [0] * 6}, "got str"),
        ({b"data": np.zeros((6, 3072), np.uint8), b"labels": [0] * 5}, "labels must be 6 integers"),
        ({b"data": np.zeros((6, 3072), np.uint8), b"labels": ["cat"] * 6}, "labels must be 6 integers"),
    ],
)
def test_cifar_pickle_of_the_wrong_structure(tmp_path: Path, content: object, fragment: str) -> None:
    write_cifar(tmp_path, "cifar-10")
    (tmp_path / "test_batch").write_bytes(pickle.dumps(content, protocol=2))
    one_line_error(ValueError, lambda: load(tmp_path, "val"), str(tmp_path / "test_batch"), fragment)


def test_cifar_meta_without_class_names(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar-100")
    (tmp_path / "meta").write_bytes(pickle.dumps({b"fine_label_names": "cat dog emu"}, protocol=2))
    one_line_error(ValueError, lambda: load(tmp_path), str(tmp_path / "meta"), "list of class names")


# --- Fashion-MNIST ----------------------------------------------------------------------------


def test_fashion_mnist_labels_outside_the_classes(tmp_path: Path) -> None:
    fake_fashion_mnist(tmp_path, n=12)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    write_idx(labels, np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0]))
    call = lambda: load_dataset("fashion-mnist", "val", 32, 1, MEAN, STD, fashion_mnist_dir=tmp_path)  # noqa: E731
    one_line_error(ValueError, call, str(labels), "label 10 (sample 10", "10 classes 0..9")


@pytest.mark.parametrize("damage", ["cut", "not_gzip"])
def test_fashion_mnist_damaged_gzip(tmp_path: Path, damage: str) -> None:
    fake_fashion_mnist(tmp_path, n=12)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    raw = images.read_bytes()
    images.write_bytes(raw[: len(raw) // 2] if damage == "cut" else gzip.decompress(raw))
    call = lambda: load_dataset("fashion-mnist", "train", 32, 1, MEAN, STD, fashion_mnist_dir=tmp_path)  # noqa: E731
    one_line_error(ValueError, call, str(images), "not a complete gzip file")


def test_fashion_mnist_images_of_another_type(tmp_path: Path) -> None:
    fake_fashion_mnist(tmp_path, n=4)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    array = np.zeros((4, 28, 28), ">f4")
    header = bytes([0, 0, 0x0D, 3]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(images, "wb") as f:
        f.write(header + array.tobytes())
    call = lambda: load_dataset("fashion-mnist", "train", 32, 1, MEAN, STD, fashion_mnist_dir=tmp_path)  # noqa: E731
    one_line_error(ValueError, call, "uint8 images", "float32 (4, 28, 28)")
