import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pycocotools", reason="COCO metrics need pycocotools (the 'detect' extra)")
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mobilenets.train.detection_metrics import coco_evaluate, plot_precision_recall

CLASSES = ["cat", "dog", "bird"]  # "bird" has no ground truth


def ground_truth(annotations: list[tuple[int, int, list[float]]], *, crowd: tuple[int, ...] = ()) -> COCO:
    """A COCO of 3 images 200 × 100 with (image_id, category_id, [x, y, w, h]) annotations."""
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i, "width": 200, "height": 100, "file_name": f"{i}.png"} for i in (1, 2, 3)],
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(CLASSES)],
        "annotations": [
            {
                "id": n + 1,
                "image_id": image_id,
                "category_id": category,
                "bbox": box,
                "area": box[2] * box[3],
                "iscrowd": int(n in crowd),
            }
            for n, (image_id, category, box) in enumerate(annotations)
        ],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


GT_BOXES = [
    (1, 1, [10.0, 10.0, 50.0, 40.0]),
    (1, 2, [100.0, 20.0, 20.0, 20.0]),
    (2, 1, [5.0, 5.0, 150.0, 90.0]),
    (2, 2, [60.0, 30.0, 8.0, 12.0]),
    (3, 2, [120.0, 40.0, 70.0, 50.0]),
]


def detections_of(boxes: list[tuple[int, int, list[float]]], shift: float = 0.0) -> list[dict]:
    """``boxes`` as detections (xyxy, one dict per image), each shifted right by ``shift`` pixels,
    scores falling with the order."""
    detections = []
    for image_id in sorted({b[0] for b in boxes}):
        mine = [(n, b) for n, b in enumerate(boxes) if b[0] == image_id]
        xyxy = [[x + shift, y, x + w + shift, y + h] for _, (_, _, (x, y, w, h)) in mine]
        detections.append(
            {
                "image_id": image_id,
                "boxes": torch.tensor(xyxy),
                "scores": torch.tensor([1 - n / 10 for n, _ in mine]),
                "labels": torch.tensor([b[1] for _, b in mine]),
            }
        )
    return detections


def test_ground_truth_as_detections_scores_one(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = coco_evaluate(ground_truth(GT_BOXES), detections_of(GT_BOXES), CLASSES)
    figures = [metrics.map, metrics.map50, metrics.map75, metrics.per_class["cat"], metrics.per_class["dog"]]
    assert figures == pytest.approx([1.0] * 5, abs=1e-12)
    assert math.isnan(metrics.per_class["bird"])  # no ground truth: undefined, not 0 or 1
    assert capsys.readouterr().out == ""  # COCOeval's printing is silenced


def test_jittered_boxes_score_what_cocoeval_computes() -> None:
    gt = ground_truth(GT_BOXES, crowd=(4,))
    detections = detections_of(GT_BOXES, shift=4.0)
    metrics = coco_evaluate(gt, detections, CLASSES)
    # The same detections through pycocotools' own loader ([x, y, w, h] rows), evaluated directly.
    rows = [
        {"image_id": d["image_id"], "category_id": int(label), "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(s)}
        for d in detections
        for (x0, y0, x1, y1), s, label in zip(d["boxes"].tolist(), d["scores"], d["labels"], strict=True)
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        reference = COCOeval(gt, gt.loadRes(rows), iouType="bbox")
        reference.evaluate()
        reference.accumulate()
        reference.summarize()
    got = [metrics.map, metrics.map50, metrics.map75, metrics.map_small, metrics.map_medium, metrics.map_large]
    expected = [v if v > -1 else math.nan for v in reference.stats[:6]]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert 0 < metrics.map < 1  # the shift costs some matches at high IoU thresholds


def test_a_box_at_iou_0_62_is_matched_at_three_of_the_ten_thresholds() -> None:
    gt = ground_truth([(1, 1, [0.0, 0.0, 10.0, 10.0])])
    detection = {"image_id": 1, "boxes": torch.tensor([[0.0, 0.0, 10.0, 6.2]]), "scores": torch.tensor([0.9])}
    detection["labels"] = torch.tensor([1])
    metrics = coco_evaluate(gt, [detection], CLASSES)
    # IoU 62/100 passes the thresholds .50, .55 and .60 only: AP 1 there, 0 at the other seven.
    assert metrics.map50 == pytest.approx(1.0, abs=1e-12)
    assert metrics.map75 == 0.0
    assert metrics.map == pytest.approx(0.3, abs=1e-12)


def test_no_detections_score_zero() -> None:
    metrics = coco_evaluate(ground_truth(GT_BOXES), [], CLASSES)
    assert metrics.map == metrics.map50 == metrics.per_class["cat"] == 0.0
    empty = [{"image_id": 1, "boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)}]
    assert coco_evaluate(ground_truth(GT_BOXES), empty, CLASSES).map == 0.0


def test_detections_naming_an_unknown_image_or_class_are_refused() -> None:
    gt = ground_truth(GT_BOXES)
    (one,) = detections_of(GT_BOXES[:1])
    with pytest.raises(ValueError, match="image_id 9"):
        coco_evaluate(gt, [{**one, "image_id": 9}], CLASSES)
    with pytest.raises(ValueError, match=r"labels \[4\], outside the classes 1\.\.3"):
        coco_evaluate(gt, [{**one, "labels": torch.tensor([4])}], CLASSES)
    with pytest.raises(ValueError, match=r"not the labels 1\.\.2"):
        coco_evaluate(gt, [one], CLASSES[:2])


def test_report_table_json_and_precision_recall_png(tmp_path: Path) -> None:
    metrics = coco_evaluate(ground_truth(GT_BOXES), detections_of(GT_BOXES, shift=4.0), CLASSES)
    table = metrics.format()
    assert "mAP@[.5:.95]" in table and f"{100 * metrics.map:.1f}" in table
    assert "AP bird" in table and "AP dog" in table
    figures = json.loads(json.dumps(metrics.to_dict(), allow_nan=False))
    assert figures["per_class"]["bird"] is None and figures["map50"] == metrics.map50
    assert len(metrics.recall) == len(metrics.precision["cat"]) == 101
    plot_precision_recall(metrics, tmp_path / "pr.png")
    assert (tmp_path / "pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
