"""Object-detection data: COCO-format and Pascal VOC folders, and the built-in Fashion-MNIST scenes.

:func:`load_detection_dataset` gives one split as a :class:`DetectionDataset` of ``(image, target)``:
``image`` a float tensor (3, H, W) in 0..1, ``target`` ``{"boxes": BoundingBoxes (N, 4) XYXY pixels,
"labels": int64 (N,) in 1..K, "image_id": int}``, label 0 being the background. Its ``coco`` is the
split's ground truth for :func:`~mobilenets.train.detection_metrics.coco_evaluate` (category ids =
labels, image ids = ``image_id``). Images are decoded by :func:`~mobilenets.data.decode.decode_image`.

Nothing is lost silently: a missing or unreadable image, a box clipped to its image or dropped for
zero area, a crowd (COCO) or difficult (VOC) box left out of training are counted in ``skipped``;
a malformed annotation file or an unknown category is a ``ValueError`` naming it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import time
import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..errors import first_line
from ..models.base import check_resolution
from .arrays import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, FASHION_MNIST_ENV, fashion_mnist_dir, load_fashion_mnist
from .decode import check_image_size, decode_image
from .scenes import random_scene

if TYPE_CHECKING:
    from pycocotools.coco import COCO

DEFAULT_DETECTION_DATA = "fashion-mnist-scenes"
SPLITS = ("train", "val")
# The built-in set: scenes per split (generated in about 25 s and 3 s on one core of a busy machine,
# 72 and 9 MB of JPEG), and its cache folder's version, raised whenever the composition changes so
# that an old cache is not reused. A temporary folder older than STALE_AFTER_S is a killed generation's.
SCENE_COUNTS = {"train": 4000, "val": 500}
SCENES_VERSION = 1
STALE_AFTER_S = 3600
_SCENE_SEEDS = {"train": 0, "val": 1}
VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
# Where a COCO folder's images are, relative to its root (NAME: the annotation file's name after
# "instances_", e.g. "val" or "val2017"); ``file_name`` is relative to the first that exists.
COCO_IMAGE_DIRS = ("{name}", "images/{name}", "images")
# The zoomed-out canvas is filled with ImageNet's mean colour, as in torchvision's SSD recipe.
ZOOM_OUT_FILL = (124, 116, 104)
_WHAT_DATA_IS = (
    f"{DEFAULT_DETECTION_DATA!r} (the built-in set), a COCO-format folder "
    "(annotations/instances_<split>.json, images in <split>/, images/<split>/ or images/) or a Pascal VOC "
    "folder (Annotations/, JPEGImages/, ImageSets/Main/<split>.txt)"
)

# Reasons counted in DetectionDataset.skipped.
MISSING_IMAGE = "image file missing"
UNREADABLE_IMAGE = "unreadable image"
UNLISTED_IMAGE = "annotation of an image not listed"
MISSING_XML = "annotation file missing"
CLIPPED = "box clipped to its image"
EMPTY_BOX = "box of zero area dropped"
CROWD = "crowd box not trained on"
DIFFICULT = "difficult box not trained on"


@dataclass(frozen=True)
class _Image:
    """One image of a split with its training boxes (N, 4) xyxy pixels and labels (N,)."""

    image_id: int
    path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray


class DetectionDataset(Dataset):
    """Images and their boxes, augmented for training or left at their size for evaluation.

    ``classes``: the class names, ``classes[i]`` being label i + 1 (a detector's K outputs are these
    K-1 and the background, 0); ``coco``: the split's ground
    truth (crowd and difficult boxes included, for COCOeval to ignore); ``skipped``: counts by
    reason; ``source``, ``split``. An image that cannot be decoded when read (found readable when
    the split was loaded) is returned black without boxes, warned about and counted (in the process
    that read it: DataLoader workers keep their own counts).
    """

    def __init__(
        self,
        images: list[_Image],
        *,
        classes: list[str],
        coco: COCO,
        skipped: dict[str, int],
        source: str,
        split: str,
        transform: Callable[..., Any],
    ) -> None:
        self.images = images
        self.classes = classes
        self.coco = coco
        self.skipped = skipped
        self.source = source
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        record = self.images[index]
        boxes, labels = record.boxes, record.labels
        try:
            image = v2.functional.pil_to_tensor(decode_image(record.path))
        except (ValueError, OSError) as err:  # OSError: a file removed since the split was loaded
            warnings.warn(f"reading an unreadable image as black, without boxes: {err}", stacklevel=2)
            self.skipped[UNREADABLE_IMAGE] = self.skipped.get(UNREADABLE_IMAGE, 0) + 1
            image = torch.zeros(3, record.height, record.width, dtype=torch.uint8)
            boxes, labels = boxes[:0], labels[:0]
        target = {
            "boxes": tv_tensors.BoundingBoxes(
                torch.tensor(boxes), format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=image.shape[-2:]
            ),
            "labels": torch.tensor(labels),
            "image_id": record.image_id,
        }
        return self.transform(tv_tensors.Image(image), target)


def detection_transform(*, train: bool, resolution: int) -> v2.Compose:
    """The transform of ``(uint8 image (3, H, W), target)``: for training, photometric distortion,
    zoom-out (up to 4× the side, p 0.5), IoU crop, horizontal flip, resize to ``resolution`` ×
    ``resolution`` and removal of degenerate boxes (SSD's recipe, as in torchvision's references);
    otherwise none. Both end with the image as float in 0..1."""
    steps: list[Callable[..., Any]] = []
    if train:
        steps = [
            v2.RandomPhotometricDistort(p=0.5),
            v2.RandomZoomOut(fill={tv_tensors.Image: ZOOM_OUT_FILL, "others": 0}, side_range=(1.0, 4.0), p=0.5),
            v2.RandomIoUCrop(),
            v2.RandomHorizontalFlip(),
            v2.Resize((resolution, resolution), antialias=True),
            v2.SanitizeBoundingBoxes(),
        ]
    return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True)])


def collate_detection(batch: list[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[list[torch.Tensor], list[dict]]:
    """A batch as (images, targets) lists: detection images differ in size and in box count."""
    return [image for image, _ in batch], [target for _, target in batch]


def load_detection_dataset(
    source: str,
    split: str,
    *,
    train: bool,
    resolution: int,
    limit: int | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> DetectionDataset:
    """One split of a detection source.

    Args:
        source: :data:`DEFAULT_DETECTION_DATA` (Fashion-MNIST items composed into scenes, generated
            once into ``cache_dir``, else $MOBILENETS_CACHE, else ~/.cache/mobilenets); a COCO-format
            folder: ``annotations/instances_<split>.json`` (or ``instances_<split><year>.json``,
            e.g. val2017) with the images under ``<split>/``, ``images/<split>/`` or ``images/``
            (the first that exists), ``file_name`` relative to it; or a Pascal VOC folder:
            ``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/<list>.txt``.
        split: "train" or "val". VOC: "val" is ``test.txt`` when there is one (then "train" is
            ``trainval.txt`` when there is one), else ``val.txt``; "train" is otherwise ``train.txt``.
        train: augment and resize to ``resolution`` (:func:`detection_transform`); otherwise images
            keep their size.
        limit: at most this many images: the first scenes of the built-in set, a random (``seed``)
            subset of a folder's images.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    check_resolution(resolution)
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    skipped: Counter[str] = Counter()
    text = os.fspath(source)
    if text == DEFAULT_DETECTION_DATA:
        count = min(limit or SCENE_COUNTS[split], SCENE_COUNTS[split])
        images, annotations, classes = _read_coco(_scenes_folder(split, count, cache_dir), split, skipped)
    else:
        root = Path(text)
        if (root / "annotations").is_dir():
            images, annotations, classes = _read_coco(root, split, skipped)
        elif (root / "Annotations").is_dir():
            images, annotations, classes = _read_voc(root, split, skipped)
        else:
            what = "is not a folder" if not root.is_dir() else "has no annotations/ (COCO) nor Annotations/ (VOC)"
            raise ValueError(f"detection data {text!r} {what}: give {_WHAT_DATA_IS}")
        if limit is not None and limit < len(images):
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:limit]
            images = [images[i] for i in sorted(order.tolist())]
    records, coco = _check_images(images, annotations, classes, skipped)
    return DetectionDataset(
        records,
        classes=classes,
        coco=coco,
        skipped=dict(skipped),
        source=text,
        split=split,
        transform=detection_transform(train=train, resolution=resolution),
    )


# A split as read from its files, before the images are checked: images {"id", "path"}, COCO
# annotations {"image_id", "category_id" (= label), "bbox" [x, y, w, h], "iscrowd", "area"?,
# "ignored_as"? (the reason counted when a crowd box is left out of training)} and class names.
_Split = tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]


def _check_images(
    images: list[dict[str, Any]], annotations: list[dict[str, Any]], classes: list[str], skipped: Counter[str]
) -> tuple[list[_Image], COCO]:
    """The readable images with their boxes clipped to them, and the ground truth of those images."""
    by_image: dict[int, list[dict[str, Any]]] = {image["id"]: [] for image in images}
    for ann in annotations:
        if ann["image_id"] in by_image:
            by_image[ann["image_id"]].append(ann)
    records, gt_images, gt_annotations = [], [], []
    for image in images:
        try:
            width, height = _image_size(image["path"])
        except FileNotFoundError:
            skipped[MISSING_IMAGE] += 1
            continue
        except ValueError:
            skipped[UNREADABLE_IMAGE] += 1
            continue
        boxes, labels = [], []
        for ann in by_image[image["id"]]:
            x, y, w, h = (float(v) for v in ann["bbox"])
            box = [x, y, x + w, y + h]
            clipped = [min(max(v, 0.0), limit) for v, limit in zip(box, (width, height) * 2, strict=True)]
            x0, y0, x1, y1 = clipped
            if x1 <= x0 or y1 <= y0:
                skipped[EMPTY_BOX] += 1
                continue
            if clipped != box:
                skipped[CLIPPED] += 1
            crowd = int(bool(ann.get("iscrowd", 0)))
            gt_annotations.append(
                {
                    "id": len(gt_annotations) + 1,
                    "image_id": image["id"],
                    "category_id": ann["category_id"],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": float(ann.get("area") or (x1 - x0) * (y1 - y0)),
                    "iscrowd": crowd,
                }
            )
            if crowd:
                skipped[ann.get("ignored_as", CROWD)] += 1
                continue
            boxes.append(clipped)
            labels.append(ann["category_id"])
        gt_images.append({"id": image["id"], "width": width, "height": height, "file_name": str(image["path"])})
        records.append(
            _Image(
                image_id=image["id"],
                path=image["path"],
                width=width,
                height=height,
                boxes=np.array(boxes, np.float32).reshape(-1, 4),
                labels=np.array(labels, np.int64),
            )
        )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(classes)]
    return records, coco_from_dict({"images": gt_images, "annotations": gt_annotations, "categories": categories})


def coco_from_dict(dataset: dict[str, Any]) -> COCO:
    """A pycocotools ``COCO`` over ``dataset`` (its "images", "annotations" and "categories"), indexed
    without printing; a ValueError saying how to install pycocotools when it is missing."""
    try:
        from pycocotools.coco import COCO
    except ImportError:
        raise ValueError("object detection needs pycocotools: pip install 'mobilenets[detect]'") from None
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints its progress
        coco.createIndex()
    return coco


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of the image file ``path`` as :func:`decode_image` gives it (EXIF
    orientation applied), from its header. FileNotFoundError when missing, ValueError when not
    an image or too large."""
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # check_image_size refuses instead
            image = Image.open(path)
        with image:
            width, height = image.size
            check_image_size(width, height)
            # Orientations 5 to 8 turn the image by a quarter.
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                width, height = height, width
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        raise ValueError(f"image {str(path)!r}: {first_line(err)}") from None
    return width, height


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"annotation file {str(path)!r} is not valid JSON: {first_line(err)}") from None


def _coco_annotation_file(root: Path, split: str) -> Path:
    exact = root / "annotations" / f"instances_{split}.json"
    if exact.is_file():
        return exact
    dated = sorted((root / "annotations").glob(f"instances_{split}[0-9][0-9][0-9][0-9].json"))
    if len(dated) == 1:
        return dated[0]
    raise FileNotFoundError(
        f"detection data {str(root)!r} has no {exact.relative_to(root)} (nor a single "
        f"instances_{split}<year>.json) for split {split!r}"
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_box(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value)
    )


def _read_coco(root: Path, split: str, skipped: Counter[str]) -> _Split:
    path = _coco_annotation_file(root, split)
    name = path.stem.removeprefix("instances_")
    candidates = [root / pattern.format(name=name) for pattern in COCO_IMAGE_DIRS]
    image_dir = next((folder for folder in candidates if folder.is_dir()), None)
    if image_dir is None:
        raise FileNotFoundError(
            f"detection data {str(root)!r} has no image folder for {path.name}: "
            f"looked for {', '.join(str(c.relative_to(root)) + '/' for c in candidates)}"
        )
    content = _load_json(path)

    def bad(what: str) -> ValueError:
        return ValueError(f"annotation file {str(path)!r}: {what}")

    if not isinstance(content, dict) or not all(isinstance(content.get(k), list) for k in ("images", "categories")):
        raise bad("not a COCO file (an object with lists 'images', 'categories' and 'annotations')")
    categories = content["categories"]
    for cat in categories:
        if not (isinstance(cat, dict) and _is_int(cat.get("id")) and isinstance(cat.get("name"), str)):
            raise bad(f"category {cat!r} is not {{'id': int, 'name': str}}")
    ids = sorted(cat["id"] for cat in categories)
    if not ids or len(set(ids)) != len(ids):
        raise bad(f"categories need distinct ids, at least one, got {ids}")
    label_of = {cat_id: i + 1 for i, cat_id in enumerate(ids)}
    name_of = {cat["id"]: cat["name"] for cat in categories}
    classes = [name_of[cat_id] for cat_id in ids]
    images = []
    for image in content["images"]:
        if not (isinstance(image, dict) and _is_int(image.get("id")) and isinstance(image.get("file_name"), str)):
            raise bad(f"image {image!r} is not {{'id': int, 'file_name': str, ...}}")
        images.append({"id": image["id"], "path": image_dir / image["file_name"]})
    if len({image["id"] for image in images}) != len(images):
        raise bad("image ids are not distinct")
    listed = {image["id"] for image in images}
    annotations = []
    for ann in content.get("annotations", []):
        if not (isinstance(ann, dict) and _is_int(ann.get("image_id")) and _is_box(ann.get("bbox"))):
            raise bad(f"annotation {ann!r} is not {{'image_id': int, 'bbox': [x, y, width, height], ...}}")
        if ann.get("category_id") not in label_of:
            raise bad(f"annotation {ann.get('id')!r} has category_id {ann.get('category_id')!r}, not among {ids}")
        if ann["image_id"] not in listed:
            skipped[UNLISTED_IMAGE] += 1
            continue
        annotations.append({**ann, "category_id": label_of[ann["category_id"]]})
    return images, annotations, classes


def _voc_list(root: Path, split: str) -> Path:
    main = root / "ImageSets" / "Main"
    test = (main / "test.txt").is_file()
    if split == "val":
        names = ["test.txt"] if test else ["val.txt"]
    else:
        names = ["trainval.txt", "train.txt"] if test else ["train.txt"]
    for name in names:
        if (main / name).is_file():
            return main / name
    raise FileNotFoundError(f"VOC data {str(root)!r} has no ImageSets/Main/{names[-1]} for split {split!r}")


def _parse_voc_xml(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"annotation file {str(path)!r} is not valid XML: {first_line(err)}") from None


def _voc_objects(path: Path, root: ET.Element) -> list[tuple[str, list[float], bool]]:
    """(class name, [x, y, w, h] in 0-based pixels, difficult) of each object in a VOC file."""
    objects = []
    for obj in root.iter("object"):
        name, box = (obj.findtext("name") or "").strip(), obj.find("bndbox")
        try:
            xmin, ymin, xmax, ymax = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            raise ValueError(
                f"annotation file {str(path)!r}: object {name!r} has no numeric bndbox xmin, ymin, xmax, ymax"
            ) from None
        # VOC counts pixels from 1, both ends included: the box's top-left corner is (xmin - 1, ymin - 1).
        objects.append((name, [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1], obj.findtext("difficult") == "1"))
    return objects


def _read_voc(root: Path, split: str, skipped: Counter[str]) -> _Split:
    list_file = _voc_list(root, split)
    ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
    # Every file is read, whichever the split, so that all splits find the same classes: VOC's 20
    # when no object is of another class, else the names found, sorted.
    files = {xml.stem: (xml, _parse_voc_xml(xml)) for xml in sorted((root / "Annotations").glob("*.xml"))}
    objects_of = {stem: _voc_objects(xml, tree) for stem, (xml, tree) in files.items()}
    names = {obj[0] for objects in objects_of.values() for obj in objects}
    classes = list(VOC_CLASSES) if names <= set(VOC_CLASSES) else sorted(names)
    parsed = []
    for i, name in enumerate(ids, start=1):
        if name not in files:
            skipped[MISSING_XML] += 1
            continue
        filename = (files[name][1].findtext("filename") or "").strip() or f"{name}.jpg"
        parsed.append((i, root / "JPEGImages" / filename, objects_of[name]))
    label_of = {name: i + 1 for i, name in enumerate(classes)}
    images, annotations = [], []
    for image_id, path, objects in parsed:
        images.append({"id": image_id, "path": path})
        for name, bbox, difficult in objects:
            annotation = {"image_id": image_id, "category_id": label_of[name], "bbox": bbox, "iscrowd": difficult}
            # COCOeval ignores crowd regions as VOC's evaluation ignores difficult objects.
            annotations.append({**annotation, "ignored_as": DIFFICULT} if difficult else annotation)
    return images, annotations, classes


def _scenes_folder(split: str, count: int, cache_dir: str | os.PathLike | None) -> Path:
    """The COCO folder of the built-in set's first ``count`` scenes of ``split``, generated when absent."""
    from ..bench import cache_dir as default_cache_dir

    parent = Path(cache_dir or default_cache_dir()) / f"{DEFAULT_DETECTION_DATA}-v{SCENES_VERSION}"
    folder = parent / f"{split}-{count}"
    if folder.is_dir():
        return folder
    try:
        items = load_fashion_mnist(split)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"detection data {DEFAULT_DETECTION_DATA!r} is composed from Fashion-MNIST, not found in "
            f"{fashion_mnist_dir()}: install it with `sudo apt-get install dataset-fashion-mnist` (into "
            f"{FASHION_MNIST_DIR}) or set {FASHION_MNIST_ENV} to a folder holding its four .gz files, "
            "or give a COCO or VOC folder"
        ) from None
    parent.mkdir(parents=True, exist_ok=True)
    # Written in a temporary folder renamed when complete: an interrupted generation leaves no
    # folder that could be read half-written, and is redone. A killed one leaves its temporary
    # folder, removed here once it is older than any generation takes.
    for stale in parent.glob(f".{split}-{count}-*"):
        if time.time() - stale.stat().st_mtime > STALE_AFTER_S:
            shutil.rmtree(stale, ignore_errors=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{split}-{count}-", dir=parent))
    try:
        _write_scenes(temp, split, count, items.images[:, 0].numpy(), items.labels.numpy())
        try:
            temp.rename(folder)
        except OSError:
            if not folder.is_dir():  # else another process has just generated the same scenes
                raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return folder


def _write_scenes(folder: Path, split: str, count: int, items: np.ndarray, item_labels: np.ndarray) -> None:
    """Scenes 0..count-1 of ``split`` as a COCO folder: ``<split>/NNNNNN.jpg`` and annotations."""
    (folder / split).mkdir()
    (folder / "annotations").mkdir()
    images, annotations = [], []
    for index in range(count):
        drawn = random_scene(items, item_labels, np.random.default_rng([_SCENE_SEEDS[split], index]))
        file_name = f"{index:06d}.jpg"
        Image.fromarray(drawn.image).save(folder / split / file_name, quality=92)
        height, width = drawn.image.shape[:2]
        images.append({"id": index + 1, "file_name": file_name, "width": width, "height": height})
        for (x0, y0, x1, y1), label in zip(drawn.boxes.tolist(), drawn.labels.tolist(), strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": label + 1,  # Fashion-MNIST's labels count from 0, detection's from 1
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(FASHION_MNIST_CLASSES)]
    content = {"images": images, "annotations": annotations, "categories": categories}
    (folder / "annotations" / f"instances_{split}.json").write_text(json.dumps(content))
