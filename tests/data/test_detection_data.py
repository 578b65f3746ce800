import gzip
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

pytest.importorskip("pycocotools", reason="detection data needs pycocotools (the 'detect' extra)")

from mobilenets.data import (
    DEFAULT_DETECTION_DATA,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    FASHION_MNIST_ENV,
    collate_detection,
    detection_transform,
    load_detection_dataset,
)
from mobilenets.data import detection as detection_module
from mobilenets.data.detection import (
    CLIPPED,
    CROWD,
    DIFFICULT,
    EMPTY_BOX,
    MISSING_IMAGE,
    MISSING_XML,
    UNLISTED_IMAGE,
    UNREADABLE_IMAGE,
    VOC_CLASSES,
)
from mobilenets.data.scenes import compose_scene

HAS_FASHION_MNIST = (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file()
RES = 64


def image_file(path: Path, width: int, height: int, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(path)


def coco_folder(
    root: Path, annotations: list[dict], *, split: str = "train", layout: str = "{split}", n_images: int = 2
) -> Path:
    """A COCO folder: ``n_images`` PNGs 40 × 30 (image i has id 10 + i, value 20 i) under ``layout``,
    categories 3 "cat" and 7 "dog" (labels 1 and 2)."""
    folder = root / layout.format(split=split)
    images = []
    for i in range(n_images):
        image_file(folder / f"img{i}.png", 40, 30, value=20 * i)
        images.append({"id": 10 + i, "file_name": f"img{i}.png", "width": 40, "height": 30})
    for n, ann in enumerate(annotations):
        ann.setdefault("id", n + 1)
    content = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
    }
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(content))
    return root


def load(source: Path | str, split: str = "train", **kwargs) -> detection_module.DetectionDataset:
    return load_detection_dataset(str(source), split, **{"train": False, "resolution": RES, **kwargs})


def boxes_of(target: dict) -> list[list[float]]:
    return target["boxes"].as_subclass(torch.Tensor).tolist()


@pytest.mark.parametrize("layout", ["{split}", "images/{split}", "images"])
def test_coco_folder_gives_exact_targets_and_ground_truth(tmp_path: Path, layout: str) -> None:
    anns = [
        {"image_id": 10, "category_id": 7, "bbox": [1.5, 2, 10, 20]},
        {"image_id": 10, "category_id": 3, "bbox": [20, 5, 4, 4]},
        {"image_id": 11, "category_id": 3, "bbox": [0, 0, 40, 30]},
    ]
    dataset = load(coco_folder(tmp_path, anns, layout=layout))
    assert dataset.classes == ["cat", "dog"]  # category ids sorted: 3 -> label 1, 7 -> label 2
    assert len(dataset) == 2 and dataset.skipped == {} and dataset.split == "train"
    image, target = dataset[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32 and float(image.max()) == 0.0
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes)
    assert target["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY
    assert tuple(target["boxes"].canvas_size) == (30, 40)
    assert boxes_of(target) == [[1.5, 2.0, 11.5, 22.0], [20.0, 5.0, 24.0, 9.0]]
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [2, 1]
    assert target["image_id"] == 10
    image, target = dataset[1]
    assert image[0, 0, 0].item() == pytest.approx(20 / 255)
    assert boxes_of(target) == [[0.0, 0.0, 40.0, 30.0]] and target["labels"].tolist() == [1]
    gt = dataset.coco
    assert sorted(gt.getCatIds()) == [1, 2] and [c["name"] for c in gt.loadCats([1, 2])] == ["cat", "dog"]
    assert sorted(gt.getImgIds()) == [10, 11]
    assert [a["bbox"] for a in gt.loadAnns(gt.getAnnIds(imgIds=[10]))] == [
        [1.5, 2.0, 10.0, 20.0],
        [20.0, 5.0, 4.0, 4.0],
    ]
    images, targets = collate_detection([dataset[0], dataset[1]])
    assert [tuple(i.shape) for i in images] == [(3, 30, 40)] * 2 and [t["image_id"] for t in targets] == [10, 11]


def test_coco_dated_annotation_file_and_its_image_folder(tmp_path: Path) -> None:
    coco_folder(tmp_path, [{"image_id": 10, "category_id": 3, "bbox": [1, 1, 5, 5]}], split="val2017")
    dataset = load(tmp_path, "val")
    assert len(dataset) == 2 and boxes_of(dataset[0][1]) == [[1.0, 1.0, 6.0, 6.0]]


def test_coco_limit_keeps_a_seeded_subset_and_its_ground_truth_only(tmp_path: Path) -> None:
    anns = [{"image_id": 10 + i, "category_id": 3, "bbox": [1, 1, 5, 5]} for i in range(6)]
    coco_folder(tmp_path, anns, n_images=6)
    first, again = load(tmp_path, limit=3, seed=1), load(tmp_path, limit=3, seed=1)
    ids = [first[i][1]["image_id"] for i in range(len(first))]
    assert len(ids) == 3 and ids == [again[i][1]["image_id"] for i in range(3)]
    assert sorted(first.coco.getImgIds()) == ids and len(first.coco.getAnnIds()) == 3


def test_coco_bad_boxes_missing_and_unreadable_images_and_crowds_are_counted(tmp_path: Path) -> None:
    anns = [
        {"image_id": 10, "category_id": 3, "bbox": [-5, 10, 20, 30]},  # clipped to [0, 10, 15, 30]
        {"image_id": 10, "category_id": 3, "bbox": [45, 0, 10, 10]},  # outside: nothing left
        {"image_id": 10, "category_id": 7, "bbox": [5, 5, 0, 8]},  # zero width
        {"image_id": 10, "category_id": 7, "bbox": [2, 2, 8, 8], "iscrowd": 1},
        {"image_id": 12, "category_id": 3, "bbox": [1, 1, 5, 5]},  # its file is missing
        {"image_id": 13, "category_id": 3, "bbox": [1, 1, 5, 5]},  # its file is not an image
        {"image_id": 99, "category_id": 3, "bbox": [1, 1, 5, 5]},  # no such image listed
    ]
    coco_folder(tmp_path, anns, n_images=4)  # image 11 has no annotation: a negative
    (tmp_path / "train" / "img2.png").unlink()
    (tmp_path / "train" / "img3.png").write_bytes(b"not a png")
    dataset = load(tmp_path)
    assert dataset.skipped == {
        CLIPPED: 1,
        EMPTY_BOX: 2,
        CROWD: 1,
        MISSING_IMAGE: 1,
        UNREADABLE_IMAGE: 1,
        UNLISTED_IMAGE: 1,
    }
    assert len(dataset) == 2
    _, target = dataset[0]
    assert boxes_of(target) == [[0.0, 10.0, 15.0, 30.0]] and target["labels"].tolist() == [1]
    _, negative = dataset[1]
    assert negative["image_id"] == 11 and boxes_of(negative) == [] and negative["labels"].dtype == torch.int64
    gt = dataset.coco
    assert sorted(gt.getImgIds()) == [10, 11]
    # The crowd box stays in the ground truth, for COCOeval to ignore.
    assert sorted((a["bbox"], a["iscrowd"]) for a in gt.loadAnns(gt.getAnnIds())) == [
        ([0.0, 10.0, 15.0, 20.0], 0),
        ([2.0, 2.0, 8.0, 8.0], 1),
    ]


def test_a_photo_turned_by_its_exif_orientation_is_clipped_to_its_upright_size(tmp_path: Path) -> None:
    coco_folder(tmp_path, [{"image_id": 10, "category_id": 3, "bbox": [2, 2, 36, 36]}], n_images=1)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40 × 30, shown turned a quarter: 30 × 40
    Image.new("RGB", (40, 30)).save(tmp_path / "train" / "img0.png", exif=exif)
    dataset = load(tmp_path)
    image, target = dataset[0]
    assert image.shape == (3, 40, 30) and dataset.coco.imgs[10]["width"] == 30
    assert boxes_of(target) == [[2.0, 2.0, 30.0, 38.0]] and dataset.skipped == {CLIPPED: 1}


def test_an_image_that_fails_when_read_is_black_without_boxes_and_counted(tmp_path: Path) -> None:
    coco_folder(tmp_path, [{"image_id": 10, "category_id": 3, "bbox": [1, 1, 5, 5]}], n_images=1)
    dataset = load(tmp_path)
    path = tmp_path / "train" / "img0.png"
    path.write_bytes(path.read_bytes()[:60])  # the header survives, the pixels do not
    with pytest.warns(UserWarning, match="img0.png"):
        image, target = dataset[0]
    assert image.shape == (3, 30, 40) and float(image.abs().sum()) == 0 and boxes_of(target) == []
    assert dataset.skipped == {UNREADABLE_IMAGE: 1}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", r"annotation file '.*instances_train\.json' is not valid JSON"),
        ('{"images": []}', "not a COCO file"),
        ('{"images": [{"id": "a"}], "categories": [{"id": 1, "name": "x"}]}', "image .* is not"),
    ],
)
def test_malformed_coco_file_is_one_line_error_naming_it(tmp_path: Path, content: str, message: str) -> None:
    coco_folder(tmp_path, [])
    (tmp_path / "annotations" / "instances_train.json").write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        load(tmp_path)
    assert "\n" not in str(info.value)


def test_unknown_category_id_is_an_error_naming_it(tmp_path: Path) -> None:
    coco_folder(tmp_path, [{"image_id": 10, "category_id": 5, "bbox": [1, 1, 5, 5]}])
    with pytest.raises(ValueError, match=r"category_id 5, not among \[3, 7\]"):
        load(tmp_path)


def test_unknown_source_and_bad_arguments_name_what_is_accepted(tmp_path: Path) -> None:
    for source in ("no-such-data", str(tmp_path)):
        with pytest.raises(ValueError, match=r"fashion-mnist-scenes.*COCO-format folder.*Pascal VOC"):
            load(source)
    coco_folder(tmp_path, [])
    with pytest.raises(ValueError, match="split must be one of"):
        load(tmp_path, "test")
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        load(tmp_path, limit=0)
    with pytest.raises(FileNotFoundError, match=r"instances_val\.json"):
        load(tmp_path, "val")


def voc_xml(filename: str, objects: list[tuple[str, tuple[int, int, int, int], int]]) -> str:
    parts = [f"<annotation><filename>{filename}</filename><size><width>40</width><height>30</height></size>"]
    for name, (x0, y0, x1, y1), difficult in objects:
        parts.append(
            f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x0}</xmin>"
            f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        )
    return "".join(parts) + "</annotation>"


def voc_folder(root: Path, lists: dict[str, list[str]], objects: dict[str, list]) -> Path:
    for name, objs in objects.items():
        image_file(root / "JPEGImages" / f"{name}.png", 40, 30)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{name}.xml").write_text(voc_xml(f"{name}.png", objs))
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for split, names in lists.items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(n + "\n" for n in names))
    return root


def test_voc_folder_gives_zero_based_boxes_and_ignores_difficult_objects(tmp_path: Path) -> None:
    objects = {"a": [("dog", (1, 1, 10, 20), 0), ("person", (5, 6, 7, 8), 1)], "b": [("cat", (11, 2, 40, 30), 0)]}
    voc_folder(tmp_path, {"train": ["a"], "val": ["b", "gone"]}, objects)
    train = load(tmp_path)
    assert train.classes == list(VOC_CLASSES) and train.skipped == {DIFFICULT: 1}
    _, target = train[0]
    # VOC's 1-based inclusive pixels 1..10 are the 0-based span [0, 10).
    assert boxes_of(target) == [[0.0, 0.0, 10.0, 20.0]]
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog") + 1]
    crowd = [a for a in train.coco.loadAnns(train.coco.getAnnIds()) if a["iscrowd"]]
    assert [a["bbox"] for a in crowd] == [[4.0, 5.0, 3.0, 3.0]]
    val = load(tmp_path, "val")
    assert len(val) == 1 and val.skipped == {MISSING_XML: 1}
    assert boxes_of(val[0][1]) == [[10.0, 1.0, 40.0, 30.0]]


def test_voc_val_is_test_when_there_is_one_and_other_class_names_are_read_from_every_file(tmp_path: Path) -> None:
    objects = {"a": [("zebra", (1, 1, 10, 10), 0)], "b": [("ant", (1, 1, 10, 10), 0)], "c": [("cat", (1, 1, 5, 5), 0)]}
    voc_folder(tmp_path, {"train": ["a"], "trainval": ["a", "b"], "val": ["b"], "test": ["c"]}, objects)
    train, val = load(tmp_path), load(tmp_path, "val")
    assert len(train) == 2 and [val[0][1]["image_id"]] == val.coco.getImgIds()
    assert train.classes == val.classes == ["ant", "cat", "zebra"]
    assert val[0][1]["labels"].tolist() == [2]


def test_malformed_voc_file_is_an_error_naming_it(tmp_path: Path) -> None:
    voc_folder(tmp_path, {"train": ["a"]}, {"a": [("dog", (1, 1, 10, 20), 0)]})
    (tmp_path / "Annotations" / "a.xml").write_text("<annotation><object>")
    with pytest.raises(ValueError, match=r"a\.xml' is not valid XML"):
        load(tmp_path)


def test_augmentation_keeps_each_box_on_its_object() -> None:
    """A white square on black: after each augmentation (photometric, zoom-out, IoU crop, flip,
    resize) the box still bounds the square's pixels within a pixel or two."""
    image = torch.zeros(3, 90, 120, dtype=torch.uint8)
    image[:, 20:50, 30:70] = 255
    transform = detection_transform(train=True, resolution=RES)
    kept = 0
    for seed in range(40):
        torch.manual_seed(seed)
        boxes = tv_tensors.BoundingBoxes([[30, 20, 70, 50]], format="XYXY", canvas_size=(90, 120))
        out_image, out = transform(tv_tensors.Image(image), {"boxes": boxes, "labels": torch.tensor([1])})
        assert out_image.shape == (3, RES, RES) and out_image.dtype == torch.float32
        if len(out["boxes"]) == 0:  # a crop may leave the square out
            continue
        kept += 1
        # The square stays grey and bright (photometric changes keep grey grey); the background
        # stays dark, and the zoom-out's fill is a colour (mean RGB, red above blue).
        grey = out_image.amax(0) - out_image.amin(0) < 10 / 255
        ys, xs = torch.nonzero(grey & (out_image.mean(0) > 70 / 255), as_tuple=True)
        expected = [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
        (box,) = out["boxes"].tolist()
        assert box == pytest.approx(expected, abs=2), f"seed {seed}"
        assert min(box) >= 0 and max(box) <= RES
    assert kept >= 30


def test_training_items_are_resized_augmented_and_reproducible(tmp_path: Path) -> None:
    coco_folder(tmp_path, [{"image_id": 10, "category_id": 3, "bbox": [5, 5, 20, 15]}], n_images=1)
    dataset = load(tmp_path, train=True)
    samples = []
    for _ in range(2):
        torch.manual_seed(3)
        samples.append([dataset[0] for _ in range(5)])
    for (image, target), (again, target_again) in zip(*samples, strict=True):
        assert image.shape == (3, RES, RES)
        assert torch.equal(image, again) and torch.equal(target["boxes"], target_again["boxes"])
        assert all(0 <= v <= RES for box in boxes_of(target) for v in box)
    assert len({tuple(map(tuple, boxes_of(t))) for _, t in samples[0]}) > 1  # augmented: not all alike


def test_compose_scene_boxes_bound_exactly_the_painted_pixels() -> None:
    yy, xx = np.mgrid[0:28, 0:28]
    disc = np.where((yy - 14) ** 2 + (xx - 10) ** 2 < 60, 200, 0).astype(np.uint8)
    background = np.zeros((200, 200, 3), np.uint8)
    scene = compose_scene(background, [disc] * 4, [1, 2, 3, 4], rng=np.random.default_rng(0), sizes=(24, 60))
    assert len(scene.boxes) == len(scene.labels) >= 2
    painted = scene.image.any(axis=2)
    for x0, y0, x1, y1 in scene.boxes.astype(int):
        inside = painted[y0:y1, x0:x1]
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
    covered = np.zeros_like(painted)
    for x0, y0, x1, y1 in scene.boxes.astype(int):
        assert not covered[y0:y1, x0:x1].any()  # items do not overlap
        covered[y0:y1, x0:x1] = True
    assert not (painted & ~covered).any()  # nothing painted outside the boxes


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fashion-MNIST files whose training items are all class 3 squares, test items class 7 discs."""
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    square = np.zeros((28, 28), np.uint8)
    square[6:22, 4:24] = 220
    yy, xx = np.mgrid[0:28, 0:28]
    disc = np.where((yy - 14) ** 2 + (xx - 14) ** 2 < 80, 220, 0).astype(np.uint8)
    for prefix, item, label in (("train", square, 3), ("t10k", disc, 7)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", np.stack([item] * 5))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.full(5, label))
    monkeypatch.setenv(FASHION_MNIST_ENV, str(folder))
    return folder


def test_built_in_scenes_are_generated_once_from_their_own_split(tmp_path: Path, fake_fashion_mnist: Path) -> None:
    cache = tmp_path / "cache"
    train = load(DEFAULT_DETECTION_DATA, "train", limit=6, cache_dir=cache)
    val = load(DEFAULT_DETECTION_DATA, "val", limit=3, cache_dir=cache)
    assert train.classes == list(FASHION_MNIST_CLASSES) and len(train) == 6 and len(val) == 3
    # Fashion-MNIST's label 3 is detection label 4 (0 is the background); test items are 7 -> 8.
    assert {label for i in range(6) for label in train[i][1]["labels"].tolist()} == {4}
    assert {label for i in range(3) for label in val[i][1]["labels"].tolist()} == {8}
    image, target = train[0]
    assert image.shape == (3, 320, 320) and len(target["boxes"]) >= 1
    folder = cache / f"{DEFAULT_DETECTION_DATA}-v{detection_module.SCENES_VERSION}"
    assert sorted(p.name for p in folder.iterdir()) == ["train-6", "val-3"]  # no temporary folder left
    written = (folder / "train-6" / "annotations" / "instances_train.json").stat().st_mtime_ns
    load(DEFAULT_DETECTION_DATA, "train", limit=6, cache_dir=cache)
    assert (folder / "train-6" / "annotations" / "instances_train.json").stat().st_mtime_ns == written  # reused


def test_built_in_scenes_are_the_same_at_every_generation(tmp_path: Path, fake_fashion_mnist: Path) -> None:
    folders = []
    for name in ("one", "two"):
        load(DEFAULT_DETECTION_DATA, "train", limit=4, cache_dir=tmp_path / name)
        folders.append(tmp_path / name / f"{DEFAULT_DETECTION_DATA}-v{detection_module.SCENES_VERSION}" / "train-4")
    files = sorted(p.relative_to(folders[0]) for p in folders[0].rglob("*") if p.is_file())
    assert len(files) == 5
    for name in files:
        assert (folders[0] / name).read_bytes() == (folders[1] / name).read_bytes()
    # The first scenes of a longer set are the same scenes.
    longer = load(DEFAULT_DETECTION_DATA, "train", limit=5, cache_dir=tmp_path / "one")
    assert longer.coco.loadAnns(longer.coco.getAnnIds(imgIds=[1, 2, 3, 4])) == load(
        DEFAULT_DETECTION_DATA, "train", limit=4, cache_dir=tmp_path / "one"
    ).coco.loadAnns(longer.coco.getAnnIds(imgIds=[1, 2, 3, 4]))


def test_interrupted_generation_leaves_nothing_to_read_and_is_redone(
    tmp_path: Path, fake_fashion_mnist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_scenes = detection_module._write_scenes

    def interrupted(folder: Path, *args: object) -> None:
        write_scenes(folder, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(detection_module, "_write_scenes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load(DEFAULT_DETECTION_DATA, "val", limit=2, cache_dir=tmp_path)
    folder = tmp_path / f"{DEFAULT_DETECTION_DATA}-v{detection_module.SCENES_VERSION}"
    assert list(folder.iterdir()) == []
    monkeypatch.setattr(detection_module, "_write_scenes", write_scenes)
    killed = folder / ".val-2-killed"  # what a killed generation leaves, two hours ago
    killed.mkdir()
    os.utime(killed, (time.time() - 7200,) * 2)
    assert len(load(DEFAULT_DETECTION_DATA, "val", limit=2, cache_dir=tmp_path)) == 2
    assert [p.name for p in folder.iterdir()] == ["val-2"]


def test_built_in_scenes_without_fashion_mnist_say_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as info:
        load(DEFAULT_DETECTION_DATA, limit=2, cache_dir=tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not HAS_FASHION_MNIST, reason=f"Fashion-MNIST is not installed in {FASHION_MNIST_DIR}")
def test_built_in_scenes_from_real_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FASHION_MNIST_ENV, raising=False)
    dataset = load(DEFAULT_DETECTION_DATA, "val", limit=8, cache_dir=tmp_path)
    labels = [label for i in range(8) for label in dataset[i][1]["labels"].tolist()]
    assert 8 <= len(labels) <= 32 and all(1 <= label <= 10 for label in labels)
    sides = [b[2] - b[0] for i in range(8) for b in boxes_of(dataset[i][1])]
    assert max(sides) - min(sides) > 40  # items at varied sizes
    image = dataset[0][0]
    assert not torch.equal(image[0], image[1])  # in colour
