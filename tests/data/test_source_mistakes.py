"""Layout mistakes and damaged or hostile files: each one line naming the user's path, never a
silently wrong data set."""

import gzip
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_data_sources import MEAN, STD, fake_fashion_mnist, write_cifar, write_idx

from mobilenets.cli import main
from mobilenets.data import inspect_source, load_dataset, read_idx
from mobilenets.data.sources import canonical_source
from mobilenets.data.synthetic import make_image_folder


def load(source: Path | str, split: str = "train", **kwargs):
    return load_dataset(source, split, resolution=32, in_chans=3, mean=MEAN, std=STD, **kwargs)


def one_line_error(error: type[Exception], call, *fragments: str) -> str:
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    return message


# --- folder layouts ---------------------------------------------------------------------------


@pytest.mark.parametrize("eval_name", ["val", "valid", "validation", "test", "Test"])
def test_train_beside_an_evaluation_folder(tmp_path: Path, eval_name: str) -> None:
    make_image_folder(tmp_path, num_classes=2, per_class=3, val_per_class=1)
    (tmp_path / "val").rename(tmp_path / eval_name)
    info = inspect_source(tmp_path)
    assert info.kind == "folders" and info.train_dir == tmp_path / "train" and info.val_dir == tmp_path / eval_name
    train, val = load(tmp_path), load(tmp_path, "val")
    assert train.classes == val.classes == ["class_0", "class_1"]
    assert (len(train), len(val)) == (6, 2)
    assert {path.parent.parent.name for path, _ in val.samples} == {eval_name}


def test_val_is_preferred_to_test(tmp_path: Path) -> None:
    make_image_folder(tmp_path, num_classes=2, per_class=2, val_per_class=1)
    shutil.copytree(tmp_path / "val", tmp_path / "test")
    assert inspect_source(tmp_path).val_dir == tmp_path / "val"


def test_train_alone_is_split_by_val_fraction(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "train", num_classes=2, per_class=5)
    info = inspect_source(tmp_path)
    assert info.kind == "folder" and info.train_dir == tmp_path / "train" and info.val_dir is None
    train, val = load(tmp_path, val_fraction=0.4), load(tmp_path, "val", val_fraction=0.4)
    assert train.classes == val.classes == ["class_0", "class_1"] and (len(train), len(val)) == (6, 4)


def test_a_class_may_be_called_train(tmp_path: Path) -> None:
    for name in ("bus", "car", "train"):
        make_image_folder(tmp_path / name, num_classes=1, per_class=1)
        for png in (tmp_path / name / "class_0").iterdir():
            png.rename(tmp_path / name / png.name)
        (tmp_path / name / "class_0").rmdir()
    assert inspect_source(tmp_path).kind == "folder"
    assert load(tmp_path, val_fraction=0.01).classes == ["bus", "car", "train"]


def test_split_folders_mixed_with_others_or_without_train(tmp_path: Path) -> None:
    make_image_folder(tmp_path, num_classes=2, per_class=1, val_per_class=1)
    (tmp_path / "annotations").mkdir()
    one_line_error(ValueError, lambda: inspect_source(tmp_path), "with other folders ['annotations']", "train/")
    (tmp_path / "annotations").rmdir()
    (tmp_path / "train").rename(tmp_path / "training")
    message = one_line_error(ValueError, lambda: inspect_source(tmp_path), str(tmp_path))
    assert "has split folders ['val'] with no train/ and other folders ['training']" in message


def test_val_linked_to_train_is_refused(tmp_path: Path) -> None:
    make_image_folder(tmp_path, num_classes=2, per_class=2)
    (tmp_path / "class_0").rename(tmp_path / "c0")
    (tmp_path / "class_1").rename(tmp_path / "c1")
    (tmp_path / "train").mkdir()
    for name in ("c0", "c1"):
        (tmp_path / name).rename(tmp_path / "train" / name)
    (tmp_path / "val").symlink_to(tmp_path / "train", target_is_directory=True)
    one_line_error(ValueError, lambda: inspect_source(tmp_path), "val/ is train/ (a link to it)", str(tmp_path))


def test_train_and_test_holding_images_directly_are_not_two_classes(tmp_path: Path) -> None:
    make_image_folder(tmp_path, num_classes=2, per_class=2)
    (tmp_path / "class_0").rename(tmp_path / "train")
    (tmp_path / "class_1").rename(tmp_path / "test")
    one_line_error(ValueError, lambda: load(tmp_path), "holds no images", str(tmp_path / "train"))


def test_empty_class_folders_are_named(tmp_path: Path) -> None:
    make_image_folder(tmp_path, num_classes=2, per_class=2)
    (tmp_path / "zebra").mkdir()
    (tmp_path / "__MACOSX").mkdir()
    (tmp_path / "__MACOSX" / "._0000.png").write_bytes(b"resource fork")
    one_line_error(ValueError, lambda: load(tmp_path), ".tiff, .ppm, .pgm, .pbm) ['__MACOSX', 'zebra']", str(tmp_path))


def test_empty_class_folder_in_train_of_a_split_layout(tmp_path: Path) -> None:
    make_image_folder(tmp_path, num_classes=2, per_class=2, val_per_class=1)
    (tmp_path / "train" / "class_2").mkdir()
    one_line_error(ValueError, lambda: load(tmp_path), "without images (.jpg,", str(tmp_path / "train"))


@pytest.mark.parametrize("layout", ["flat", "train_only", "split"])
def test_a_single_class_is_refused(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "train" if layout == "train_only" else tmp_path
    make_image_folder(root, num_classes=1, per_class=3, val_per_class=1 if layout == "split" else 0)
    one_line_error(ValueError, lambda: load(tmp_path), "single class folder 'class_0'", "at least 2")


def test_val_classes_unknown_to_train_are_refused(tmp_path: Path) -> None:
    make_image_folder(tmp_path, num_classes=2, per_class=1, val_per_class=1)
    (tmp_path / "val" / "class_1").rename(tmp_path / "val" / "Class_1")
    one_line_error(ValueError, lambda: load(tmp_path, "val"), "['Class_1']", str(tmp_path / "val"))


def test_every_class_keeps_a_training_image(tmp_path: Path) -> None:
    make_image_folder(tmp_path, num_classes=2, per_class=4)
    for png in sorted((tmp_path / "class_0").iterdir())[1:]:
        png.unlink()  # class_0 has one image: round(1 × 0.9) would put it in val
    train = load(tmp_path, val_fraction=0.9)
    val = load(tmp_path, "val", val_fraction=0.9)
    assert sorted(label for _, label in train.samples) == [0, 1]
    assert sorted(label for _, label in val.samples) == [1, 1, 1]


def test_the_split_does_not_follow_the_run_seed(tmp_path: Path) -> None:
    """Weights trained with --seed 5 and evaluated later (seed 0) must meet only held-out images."""
    make_image_folder(tmp_path, num_classes=2, per_class=20)
    trained_on = {path for path, _ in load(tmp_path, seed=5).samples}
    evaluated_on = {path for path, _ in load(tmp_path, "val", seed=0).samples}
    assert len(evaluated_on) == 4 and not trained_on & evaluated_on
    assert len(trained_on | evaluated_on) == 40


def test_a_val_fraction_that_leaves_val_empty_is_refused(tmp_path: Path) -> None:
    make_image_folder(tmp_path, num_classes=2, per_class=3)
    assert len(load(tmp_path, val_fraction=0.1)) == 6  # train alone is fine
    one_line_error(ValueError, lambda: load(tmp_path, "val", val_fraction=0.1), "val_fraction 0.1", "no image")


# --- the source's name or path ----------------------------------------------------------------


@pytest.mark.parametrize("source", ["", "  ", "\t"])
def test_blank_data_is_refused(source: str) -> None:
    for call in (lambda: inspect_source(source), lambda: canonical_source(source)):
        one_line_error(ValueError, call, "data must be 'fashion-mnist', an image folder", "CIFAR")


def test_a_file_or_a_missing_path_is_named(tmp_path: Path) -> None:
    (tmp_path / "photos.zip").write_bytes(b"PK")
    one_line_error(ValueError, lambda: inspect_source(tmp_path / "photos.zip"), "is a file, not a folder", "photos.zip")
    missing = str(tmp_path / "nope")
    one_line_error(FileNotFoundError, lambda: inspect_source(missing), repr(missing), "nor an existing folder")


def test_blank_data_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--data", "", "--out", str(tmp_path / "run"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "data must be 'fashion-mnist'" in err and len(err.strip().splitlines()) == 1


def test_canonical_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_image_folder(tmp_path / "photos", num_classes=2, per_class=1)
    monkeypatch.chdir(tmp_path)
    assert canonical_source("fashion-mnist") == "fashion-mnist"
    stored = canonical_source("photos")
    assert stored == str(tmp_path / "photos") and canonical_source(Path("photos")) == stored
    assert canonical_source(f"../{tmp_path.name}/photos/") == stored
    monkeypatch.chdir(tmp_path.parent)
    assert inspect_source(stored).train_dir == tmp_path / "photos"


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
    call = lambda: load_dataset(  # noqa: E731
        "fashion-mnist", "val", resolution=32, in_chans=1, mean=MEAN, std=STD, fashion_mnist_dir=tmp_path
    )
    one_line_error(ValueError, call, str(labels), "label 10 (sample 10", "10 classes 0..9")


@pytest.mark.parametrize("damage", ["cut", "not_gzip"])
def test_fashion_mnist_damaged_gzip(tmp_path: Path, damage: str) -> None:
    fake_fashion_mnist(tmp_path, n=12)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    raw = images.read_bytes()
    images.write_bytes(raw[: len(raw) // 2] if damage == "cut" else gzip.decompress(raw))
    call = lambda: load_dataset(  # noqa: E731
        "fashion-mnist", "train", resolution=32, in_chans=1, mean=MEAN, std=STD, fashion_mnist_dir=tmp_path
    )
    one_line_error(ValueError, call, str(images), "not a complete gzip file")


def test_idx_header_whose_size_overflows_64_bits(tmp_path: Path) -> None:
    path = tmp_path / "huge-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + b"".join(d.to_bytes(4, "big") for d in (2**31, 2**31, 4)))
    one_line_error(ValueError, lambda: read_idx(path), str(path), "truncated or padded")


def test_fashion_mnist_images_of_another_type(tmp_path: Path) -> None:
    fake_fashion_mnist(tmp_path, n=4)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    array = np.zeros((4, 28, 28), ">f4")
    header = bytes([0, 0, 0x0D, 3]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(images, "wb") as f:
        f.write(header + array.tobytes())
    call = lambda: load_dataset(  # noqa: E731
        "fashion-mnist", "train", resolution=32, in_chans=1, mean=MEAN, std=STD, fashion_mnist_dir=tmp_path
    )
    one_line_error(ValueError, call, "uint8 images", "float32 (4, 28, 28)")
