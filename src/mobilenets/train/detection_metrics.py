"""COCO detection metrics (pycocotools' COCOeval) and the precision-recall plot.

:func:`coco_evaluate` scores detections against a split's ground truth (a ``COCO`` whose category
ids are the labels 1..K and image ids the targets' ``image_id``, as
:class:`~mobilenets.data.detection.DetectionDataset` gives): mean average precision over IoU
thresholds .50:.05:.95 (COCO's main figure), at .50 and .75, by object size, and per class. A value
that is undefined (no ground-truth box of that class or size) is NaN.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..data.detection import coco_from_dict
from .records import _save

if TYPE_CHECKING:
    from pycocotools.coco import COCO

# Indices into COCOeval.stats (maxDets 100, all sizes unless named).
# Classes beyond this many are drawn unlabelled, in grey: a legend of 80 names would hide the plot.
MAX_LEGEND_CLASSES = 20
_STATS = {"map": 0, "map50": 1, "map75": 2, "map_small": 3, "map_medium": 4, "map_large": 5}


@dataclass(frozen=True, kw_only=True)
class DetectionMetrics:
    """COCO average precisions in 0..1 (NaN where undefined).

    ``per_class``: AP@[.5:.95] by class name; ``recall``: COCOeval's 101 recall thresholds;
    ``precision``: the interpolated precision at each of them, at IoU .5, by class name.
    """

    map: float
    map50: float
    map75: float
    map_small: float
    map_medium: float
    map_large: float
    per_class: dict[str, float]
    recall: list[float]
    precision: dict[str, list[float]]

    def to_dict(self) -> dict[str, Any]:
        """The figures (not the curves), NaN as None so that the dict is valid JSON."""
        figures: dict[str, Any] = {name: _or_none(getattr(self, name)) for name in _STATS}
        figures["per_class"] = {name: _or_none(value) for name, value in self.per_class.items()}
        return figures

    def format(self) -> str:
        """A table of the figures, in %."""
        labels = {
            "map": "mAP@[.5:.95]",
            "map50": "mAP@.5",
            "map75": "mAP@.75",
            "map_small": "mAP small",
            "map_medium": "mAP medium",
            "map_large": "mAP large",
        }
        rows = [(labels[name], getattr(self, name)) for name in _STATS]
        rows += [(f"AP {name}", value) for name, value in self.per_class.items()]
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label:<{width}}  {_percent(value):>6}" for label, value in rows)


def _or_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}"


def _mean_defined(values: np.ndarray) -> float:
    """The mean of COCOeval's values, -1 marking an undefined one; NaN when all are."""
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else math.nan


def _detections_coco(gt: COCO, detections: list[dict], num_classes: int) -> COCO:
    """``detections`` as a results ``COCO`` over ``gt``'s images (``COCO.loadRes`` refuses an empty list)."""
    known = set(gt.getImgIds())
    annotations = []
    for detection in detections:
        image_id = int(detection["image_id"])
        if image_id not in known:
            raise ValueError(f"detections for image_id {image_id}, which is not in the ground truth")
        boxes = torch.as_tensor(detection["boxes"]).detach().float().cpu().reshape(-1, 4)
        scores = torch.as_tensor(detection["scores"]).detach().float().cpu().reshape(-1)
        labels = torch.as_tensor(detection["labels"]).detach().cpu().reshape(-1)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(
                f"detections for image_id {image_id}: {len(boxes)} boxes, {len(scores)} scores and "
                f"{len(labels)} labels, not one of each per object"
            )
        if len(labels) and (int(labels.min()) < 1 or int(labels.max()) > num_classes):
            raise ValueError(
                f"detections for image_id {image_id} have labels {sorted(set(labels.tolist()))}, "
                f"outside the classes 1..{num_classes}"
            )
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
        for box, score, label in zip(xywh.tolist(), scores.tolist(), labels.tolist(), strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": box,
                    "score": score,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    return coco_from_dict({**gt.dataset, "annotations": annotations})


def coco_evaluate(gt: COCO, detections: list[dict], classes: list[str]) -> DetectionMetrics:
    """Score ``detections`` against the ground truth ``gt`` with COCOeval (bounding boxes, up to 100
    detections an image, the highest scored).

    Args:
        gt: ground truth, category ids 1..len(classes).
        detections: one dict per image, ``{"image_id": int, "boxes": (N, 4) xyxy pixels,
            "scores": (N,), "labels": (N,) in 1..len(classes)}`` (tensors on any device). An image
            without a dict has no detections; no detections at all score 0.
        classes: the class names, ``classes[i]`` being label i + 1.
    """
    cat_ids = sorted(gt.getCatIds())
    if cat_ids != list(range(1, len(classes) + 1)):
        raise ValueError(f"ground truth has category ids {cat_ids}, not the labels 1..{len(classes)} of {classes}")
    from pycocotools.cocoeval import COCOeval  # gt is a COCO: pycocotools is installed

    evaluator = COCOeval(gt, _detections_coco(gt, detections, len(classes)), iouType="bbox")
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress and summary
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # precision: (IoU thresholds, recall thresholds, classes, areas, max detections), -1 if undefined.
    precision = evaluator.eval["precision"]
    all_areas, most_detections = 0, -1
    per_class = {name: _mean_defined(precision[:, :, k, all_areas, most_detections]) for k, name in enumerate(classes)}
    at_50 = precision[0, :, :, all_areas, most_detections]
    return DetectionMetrics(
        **{name: _mean_defined(evaluator.stats[i : i + 1]) for name, i in _STATS.items()},
        per_class=per_class,
        recall=evaluator.params.recThrs.tolist(),
        precision={name: at_50[:, k].tolist() for k, name in enumerate(classes)},
    )


def plot_precision_recall(metrics: DetectionMetrics, path: str | Path, title: str = "") -> None:
    """A PNG of precision against recall at IoU .5: one curve per class with ground truth (named in the
    legend with its AP@.5, up to :data:`MAX_LEGEND_CLASSES`), and their mean."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5.5), layout="constrained")
    ax = fig.subplots()
    defined = {name: curve for name, curve in metrics.precision.items() if min(curve) > -1}
    for name, curve in defined.items():
        if len(defined) <= MAX_LEGEND_CLASSES:
            ax.plot(metrics.recall, curve, linewidth=1, alpha=0.8, label=f"{name} ({_percent(float(np.mean(curve)))})")
        else:  # too many to tell apart: the spread of the classes, in grey
            ax.plot(metrics.recall, curve, linewidth=0.6, color="grey", alpha=0.4)
    if defined:
        mean = np.mean(list(defined.values()), axis=0)
        ax.plot(metrics.recall, mean, color="black", linewidth=2.5, label=f"mean ({_percent(float(mean.mean()))})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title or "precision-recall at IoU 0.5 (AP@.5 in %)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    _save(fig, path)
