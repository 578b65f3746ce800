"""PLACEHOLDER for the COCO metric module (the real module replaces this file)."""

from __future__ import annotations

import contextlib
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


@dataclass(kw_only=True)
class DetectionMetrics:
    map: float
    map50: float
    map75: float
    map_small: float
    map_medium: float
    map_large: float
    per_class: dict[str, float]
    precision: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "precision"}

    def format(self) -> str:
        lines = [f"  {name:<20} {100 * ap:6.2f}" for name, ap in self.per_class.items()]
        return "\n".join([*lines, f"mAP@[.5:.95] {100 * self.map:.2f}, @.5 {100 * self.map50:.2f}"])


def coco_evaluate(gt: COCO, detections: list[dict[str, Any]], classes: list[str]) -> DetectionMetrics:
    results = [
        {"image_id": d["image_id"], "category_id": int(c), "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(s)}
        for d in detections
        for (x0, y0, x1, y1), s, c in zip(d["boxes"].tolist(), d["scores"].tolist(), d["labels"].tolist(), strict=True)
    ]
    if not results:
        zero = np.zeros((10, 101, len(classes), 4, 3))
        return DetectionMetrics(
            map=0.0,
            map50=0.0,
            map75=0.0,
            map_small=0.0,
            map_medium=0.0,
            map_large=0.0,
            per_class=dict.fromkeys(classes, 0.0),
            precision=zero,
        )
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    s = [max(float(v), 0.0) for v in evaluator.stats]
    precision = evaluator.eval["precision"]
    per_class = {}
    for k, name in enumerate(classes):
        p = precision[:, :, k, 0, 2]
        per_class[name] = float(p[p > -1].mean()) if (p > -1).any() else 0.0
    return DetectionMetrics(
        map=s[0],
        map50=s[1],
        map75=s[2],
        map_small=s[3],
        map_medium=s[4],
        map_large=s[5],
        per_class=per_class,
        precision=precision,
    )


def plot_precision_recall(metrics: DetectionMetrics, path: str | Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    recall = np.linspace(0, 1, 101)
    for k, name in enumerate(metrics.per_class):
        ax.plot(recall, np.clip(metrics.precision[0, :, k, 0, 2], 0, 1), label=name)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.legend(fontsize=7)
    fig.savefig(path)
