import gzip
import io
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mobilenets.data import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    FASHION_MNIST_ENV,
    UNREADABLE,
    inspect_source,
    load_dataset,
    read_idx,
)
from mobilenets.data.synthetic import make_image_folder

MEAN = STD = (0.5, 0.5, 0.5)
HAS_FASHION_MNIST = (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file()


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (the MNIST format) for a uint8 array."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_fashion_mnist(folder: Path, n: int = 12) -> np.ndarray:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    for prefix in ("train", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return images


def test_read_idx_round_trip_and_truncation(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), array)
    raw = gzip.decompress((tmp_path / "a.gz").read_bytes())
    (tmp_path / "short").write_bytes(raw[:-1])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short")
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")


def test_fashion_mnist_from_another_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = fake_fashion_mnist(tmp_path)
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path))
    train = load_dataset("fashion-mnist", "train", resolution=32, in_chans=1, mean=MEAN, std=STD)
    assert len(train) == len(images) and train.classes == list(FASHION_MNIST_CLASSES)
    x, y = train[3]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and y == 3
    # Evaluation keeps the whole 28×28 image: resized to 32, normalised to [-1, 1].
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(images[3]).float()[None, None], size=32, mode="bilinear", antialias=True
    )
    torch.testing.assert_close(x, (expected[0] / 255 - 0.5) / 0.5, atol=0.02, rtol=0)
    rgb, _ = load_dataset(
        "fashion-mnist", "val", resolution=40, in_chans=3, mean=MEAN, std=STD, fashion_mnist_dir=tmp_path
    )[0]
    assert rgb.shape == (3, 40, 40) and torch.equal(rgb[0], rgb[2])


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(
            "fashion-mnist", "train", resolution=32, in_chans=1, mean=MEAN, std=STD, fashion_mnist_dir=tmp_path
        )
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert FASHION_MNIST_ENV in message and "--data" in message


@pytest.mark.skipif(not HAS_FASHION_MNIST, reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist() -> None:
    train = load_dataset("fashion-mnist", "train", resolution=32, in_chans=1, mean=MEAN, std=STD, train=True)
    val = load_dataset("fashion-mnist", "val", resolution=32, in_chans=1, mean=MEAN, std=STD, limit=100)
    assert len(train) == 60_000 and len(val) == 100
    labels = torch.tensor([val[i][1] for i in range(len(val))])
    assert labels.min() >= 0 and labels.max() <= 9 and len(labels.unique()) > 5


def test_image_folder_with_train_and_val(tmp_path: Path) -> None:
    make_image_folder(tmp_path, num_classes=3, per_class=4, val_per_class=2, size=48)
    assert inspect_source(tmp_path).kind == "folders"
    train = load_dataset(tmp_path, "train", resolution=32, in_chans=3, mean=MEAN, std=STD, train=True)
    val = load_dataset(str(tmp_path), "val", resolution=32, in_chans=1, mean=MEAN, std=STD)
    assert (len(train), len(val)) == (12, 6)
    assert train.classes == val.classes == ["class_0", "class_1", "class_2"]
    assert train[0][0].shape == (3, 32, 32) and val[5][0].shape == (1, 32, 32)
    assert sorted(val[i][1] for i in range(6)) == [0, 0, 1, 1, 2, 2]


def test_one_folder_split_per_class(tmp_path: Path) -> None:
    make_image_folder(tmp_path, num_classes=2, per_class=10)
    assert inspect_source(tmp_path).kind == "folder"
    splits = {
        s: load_dataset(tmp_path, s, resolution=32, in_chans=3, mean=MEAN, std=STD, val_fraction=0.3, seed=1)
        for s in ("train", "val")
    }
    paths = {s: {p for p, _ in d.samples} for s, d in splits.items()}
    assert len(paths["val"]) == 6 and len(paths["train"]) == 14 and not paths["val"] & paths["train"]
    assert sorted(label for _, label in splits["val"].samples) == [0, 0, 0, 1, 1, 1]
    again = load_dataset(tmp_path, "val", resolution=32, in_chans=3, mean=MEAN, std=STD, val_fraction=0.3, seed=1)
    assert {p for p, _ in again.samples} == paths["val"]


def test_missing_or_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither 'fashion-mnist' nor an existing folder"):
        load_dataset(tmp_path / "nope", "train", resolution=32, in_chans=3, mean=MEAN, std=STD)
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="holds no images"):
        load_dataset(tmp_path, "train", resolution=32, in_chans=3, mean=MEAN, std=STD)


def test_unreadable_images_are_skipped_and_counted(tmp_path: Path) -> None:
    make_image_folder(tmp_path, num_classes=2, per_class=3)
    good = (tmp_path / "class_0" / "0000.png").read_bytes()
    (tmp_path / "class_0" / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "class_1" / "garbage.jpg").write_bytes(b"not a jpeg at all")
    dataset = load_dataset(tmp_path, "train", resolution=32, in_chans=3, mean=MEAN, std=STD, val_fraction=0.01)
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        labels = torch.cat([y for _, y in DataLoader(dataset, batch_size=4)])
    assert len(labels) == 8 and int((labels == UNREADABLE).sum()) == 2
    assert sorted(labels[labels != UNREADABLE].tolist()) == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "I;16", "1"])
def test_non_rgb_images_are_converted(tmp_path: Path, mode: str) -> None:
    folder = tmp_path / "only"
    folder.mkdir()
    rgb = Image.new("RGB", (40, 30), (200, 40, 40))
    if mode == "I;16":
        image = Image.fromarray(np.full((30, 40), 40000, dtype=np.uint16))
    elif mode == "RGBA":
        image = rgb.convert("RGBA")
        image.putalpha(0)  # fully transparent: shown over white
    else:
        image = rgb.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG" if mode == "CMYK" else "TIFF" if mode == "I;16" else "PNG")
    (folder / f"img.{'jpg' if mode == 'CMYK' else 'tif' if mode == 'I;16' else 'png'}").write_bytes(buffer.getvalue())
    shutil.copytree(folder, tmp_path / "other")  # a data set needs at least 2 classes
    for in_chans in (1, 3):
        dataset = load_dataset(
            tmp_path, "train", resolution=32, in_chans=in_chans, mean=MEAN, std=STD, val_fraction=0.01
        )
        x, y = dataset[0]
        assert y == 0 and x.shape == (in_chans, 32, 32) and torch.isfinite(x).all()
    if mode == "RGBA":
        assert torch.allclose(x, torch.ones_like(x))
    if mode == "I;16":  # 40000 / 65535 of full scale, not clipped to white
        assert abs(float(x.mean()) - (2 * 40000 / 65535 - 1)) < 0.02


def write_cifar(folder: Path, kind: str, n: int = 6) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = {"cifar-10": ([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], "batches.meta")}
    names["cifar-100"] = (["train", "test"], "meta")
    batches, meta = names[kind]
    label_key = b"labels" if kind == "cifar-10" else b"fine_labels"
    for name in batches:
        batch = {label_key: [int(v) for v in rng.integers(0, 3, n)], b"data": rng.integers(0, 256, (n, 3072), np.uint8)}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    names_key = b"label_names" if kind == "cifar-10" else b"fine_label_names"
    (folder / meta).write_bytes(pickle.dumps({names_key: [b"cat", b"dog", b"emu"]}, protocol=2))


@pytest.mark.parametrize(
    ("kind", "subfolder", "train_size"), [("cifar-10", "cifar-10-batches-py", 30), ("cifar-100", "", 6)]
)
def test_cifar_python_format(tmp_path: Path, kind: str, subfolder: str, train_size: int) -> None:
    write_cifar(tmp_path / subfolder if subfolder else tmp_path, kind)
    assert inspect_source(tmp_path).kind == kind
    train = load_dataset(tmp_path, "train", resolution=32, in_chans=3, mean=MEAN, std=STD, train=True)
    val = load_dataset(tmp_path, "val", resolution=32, in_chans=1, mean=MEAN, std=STD)
    assert len(train) == train_size and len(val) == 6 and val.classes == ["cat", "dog", "emu"]
    assert train[0][0].shape == (3, 32, 32) and val[0][0].shape == (1, 32, 32)


class _Boom:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_cifar_files_cannot_run_code(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar-10")
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": _Boom()}, protocol=2))
    with pytest.raises(ValueError, match=r"refusing to load .*print"):
        load_dataset(tmp_path, "val", resolution=32, in_chans=3, mean=MEAN, std=STD)


def test_train_transform_is_random_eval_is_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_fashion_mnist(tmp_path)
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path))
    train = load_dataset(
        "fashion-mnist", "train", resolution=32, in_chans=1, mean=MEAN, std=STD, train=True, crop_scale=(0.2, 0.5)
    )
    val = load_dataset("fashion-mnist", "train", resolution=32, in_chans=1, mean=MEAN, std=STD)
    assert not torch.equal(train[0][0], train[0][0])
    assert torch.equal(val[0][0], val[0][0])


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"split": "test"}, "split must be one of"),
        ({"in_chans": 4}, "in_chans must be 1 (grey) or 3"),
        ({"crop_scale": (0.5, 0.2)}, "crop_scale must be"),
        ({"crop_pct": 1.5}, "crop_pct must be in (0, 1]"),
        ({"limit": 0}, "limit must be a positive integer"),
    ],
)
def test_bad_arguments_name_themselves(tmp_path: Path, kwargs: dict, fragment: str) -> None:
    make_image_folder(tmp_path, num_classes=2, per_class=2)
    args = {"split": "train", "in_chans": 3, **kwargs}
    with pytest.raises(ValueError) as info:
        load_dataset(
            tmp_path, args.pop("split"), resolution=32, in_chans=args.pop("in_chans"), mean=MEAN, std=STD, **args
        )
    assert fragment in str(info.value)
