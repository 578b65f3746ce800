"""After detection training: `detect predict` with an exported detector, `deploy` of a detection run, and
torchvision's ssdlite320_mobilenet_v3_large as a registered peer."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenets import count_cost, create_model, get_entry
from mobilenets.bench import QUICK
from mobilenets.checkpoint import save_weights
from mobilenets.deploy.detection import Postprocessing, compare_detections, export_detector
from mobilenets.deploy.export import export_model
from mobilenets.deploy.trained import deploy_run
from mobilenets.detect import load_detector
from mobilenets.models.detection import init_backbone
from mobilenets.registry import DETECTION
from mobilenets.train.detect import DetectConfig, train_detector

import detect_fixtures
from detect_fixtures import CLASSES, MODEL, RESOLUTION, make_squares

pytest.importorskip("onnxruntime", reason="exported detectors need the [deploy] extra")
pytestmark = pytest.mark.usefixtures("one_thread")

PEER = "ssdlite320_mobilenet_v3_large"


@pytest.fixture(scope="module")
def squares(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_squares(tmp_path_factory.mktemp("squares"), train=8, val=4)


@pytest.fixture(scope="module")
def run(squares: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished detection run: 2 epochs of 2 steps on the squares."""
    out = tmp_path_factory.mktemp("run")
    config = DetectConfig(
        model=MODEL,
        data=str(squares),
        out=str(out),
        resolution=RESOLUTION,
        epochs=2,
        batch_size=4,
        lr=0.05,
        warmup_epochs=0.5,
        freeze_bn=True,  # BatchNorm statistics of 4 steps blow eval activations up: fp32 rounding then shows
        predictions=0,
        workers=0,
        threads=1,
    )
    train_detector(config)
    return out


def pictures(squares: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(path).convert("RGB")) for path in sorted((squares / "val").glob("*.png"))]


def as_arrays(result: dict[str, Any]) -> dict[str, np.ndarray]:
    """One image's entry of detections.json as the arrays compare_detections takes."""
    found = result["detections"]
    return {
        "boxes": np.array([d["box"] for d in found], dtype=np.float32).reshape(-1, 4),
        "scores": np.array([d["score"] for d in found], dtype=np.float32),
        "labels": np.array([d["label"] for d in found], dtype=np.int64),
    }


def test_predict_with_the_exported_detector_gives_the_weights_boxes(
    run: Path, squares: Path, tmp_path: Path, cli: Any
) -> None:
    weights = run / "best.safetensors"
    model, _ = load_detector(weights)
    export_detector(model, "onnx", tmp_path / "det.onnx", pictures=pictures(squares))
    images = squares / "val"
    threshold = 0.01
    outputs = {}
    for kind, path in (("torch", weights), ("onnx", tmp_path / "det.onnx")):
        out = tmp_path / kind
        code, _, err = cli(
            "detect", "predict", "--weights", str(path), str(images), "--out", str(out),
            "--score-threshold", str(threshold),
        )  # fmt: skip
        assert code == 0, err
        outputs[kind] = json.loads((out / "detections.json").read_text())
        assert all(Path(r["drawn"]).is_file() for r in outputs[kind])
    assert [r["image"] for r in outputs["torch"]] == [r["image"] for r in outputs["onnx"]]
    post = Postprocessing.of(model)
    compared = 0
    for want, got in zip(outputs["torch"], outputs["onnx"], strict=True):
        assert {d["name"] for d in got["detections"]} <= set(CLASSES)  # the names the export recorded
        found = compare_detections(
            as_arrays(want), as_arrays(got), post, threshold=threshold, min_iou=0.99, max_score_diff=1e-3
        )
        assert found.unmatched == 0
        compared += found.compared
    assert compared >= 10


def test_predict_commands_refuse_the_other_tasks_artifact(run: Path, squares: Path, tmp_path: Path, cli: Any) -> None:
    model, _ = load_detector(run / "best.safetensors")
    detector_file = tmp_path / "det.onnx"
    export_detector(model, "onnx", detector_file, pictures=pictures(squares)[:1])
    classifier_file = tmp_path / "classifier.onnx"
    export_model(create_model("mobilenet_v1_0.25_32", num_classes=3), "onnx", classifier_file, resolution=32)
    image = str(squares / "val" / "val_0.png")
    code, out, err = cli("predict", "--weights", str(detector_file), image)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert f"holds the detector {MODEL}: run it with `mobilenets detect predict --weights {detector_file}" in err
    code, out, err = cli("detect", "predict", "--weights", str(classifier_file), image, "--out", str(tmp_path / "o"))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "holds the classifier mobilenet_v1_0.25_32, not a detector: run it with `mobilenets predict" in err


def test_deploy_a_detection_run(run: Path, cli: Any) -> None:
    report = deploy_run(run, threads=1, timing=QUICK)
    assert report.fp32 is not None and report.fp32.passed and report.fp32.images == 4
    assert report.fp32.files == [run / "model.onnx"]
    rows = [(r.runtime, r.stage) for r in report.latency]
    assert rows == [("eager", "network"), ("onnx", "network"), ("eager", "end to end"), ("onnx", "end to end")]
    assert all(r.p50_ms > 0 for r in report.latency)
    text = report.format()
    assert text.startswith(f"trained    {MODEL} on ") and "mAP@[.5:.95]" in text  # the run's report.json
    assert "detection verification passed" in text and "int8       not made: int8 export is for classifiers" in text
    assert f"files      {run / 'model.onnx'}" in text
    code, out, err = cli("deploy", str(run), "--repeats", "1", "--threads", "1", "--json")
    assert code == 0, err
    printed = json.loads(out)
    assert printed["fp32"]["passed"] and printed["int8"] is None and len(printed["latency"]) == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--calib-samples", "100"], "--calib-samples: int8 export is for classifiers; a detector exports in fp32"),
        (["--format", "executorch"], "format must be onnx or openvino for a detection run, got 'executorch'"),
    ],
)
def test_deploy_refuses_int8_and_executorch_for_a_detection_run(
    run: Path, cli: Any, argv: list[str], message: str
) -> None:
    code, out, err = cli("deploy", str(run), *argv)
    assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1


def test_deploy_a_detection_run_whose_weights_record_no_model(tmp_path: Path, cli: Any) -> None:
    save_weights(tmp_path / "best.safetensors", {"w": torch.zeros(1)}, {"task": "detection", "data": "unused"})
    code, out, err = cli("deploy", str(tmp_path))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "are a detector's but record no model or model_args or classes" in err


def test_torchvision_ssdlite_is_a_registered_detector() -> None:
    entry = get_entry(PEER)
    assert (entry.task, entry.family, entry.resolution, entry.mean, entry.std) == (
        DETECTION,
        "ssdlite",
        320,
        (0.5,) * 3,
        (0.5,) * 3,
    )
    model = create_model(PEER, num_classes=len(CLASSES) + 1, resolution=RESOLUTION)
    assert model.transform.fixed_size == (RESOLUTION, RESOLUTION) and model.meta.num_classes == len(CLASSES) + 1
    images = [torch.rand(3, RESOLUTION, RESOLUTION) for _ in range(2)]
    boxes = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 34.0]]), "labels": torch.tensor([1])}] * 2
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = model.train()(images, boxes)
    loss = sum(losses.values())
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and set(losses) == {"bbox_regression", "classification"}
    with torch.no_grad():
        found = model.eval()([torch.rand(3, 50, 90)])[0]
    assert (found["boxes"][:, 0::2] <= 90).all() and (found["boxes"][:, 1::2] <= 50).all()
    with pytest.raises(ValueError, match="num_classes must be >= 2 for a detector"):
        create_model(PEER, num_classes=1)
    with pytest.raises(ValueError, match=f"{PEER} is not a detector on one of this project's backbones"):
        init_backbone(model, "pretrained")


def test_torchvision_ssdlite_counts_as_torchvision_documents() -> None:
    """torchvision documents 3,440,060 params (every trainable tensor) and 0.58 GFLOPS (its FLOPS are
    multiply-accumulates) at 320 px with 91 classes."""
    report = count_cost(create_model(PEER))
    assert report.trainable_params == 3_440_060
    assert round(report.mult_adds / 1e9, 2) == 0.58
    assert round(report.params / 1e6, 2) == 3.40  # our convention leaves BatchNorm out


def test_detect_train_trains_the_peer(squares: Path, tmp_path: Path) -> None:
    config = DetectConfig(
        model=PEER,
        data=str(squares),
        out=str(tmp_path / "run"),
        resolution=detect_fixtures.RESOLUTION,
        epochs=1,
        batch_size=4,
        predictions=0,
        workers=0,
        threads=1,
    )
    result = train_detector(config)
    assert result.model == PEER and np.isfinite(result.metrics.map)
    model, classes = load_detector(tmp_path / "run" / "best.safetensors")
    assert model.meta.name == PEER and classes == CLASSES
