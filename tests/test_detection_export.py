"""Detectors exported to ONNX and OpenVINO: the artifacts reproduce PyTorch's detections on real photos,
a broken one fails verification, `bench` times the network and end to end, int8 is refused."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mobilenets import create_model
from mobilenets.bench import END_TO_END, NETWORK, QUICK, benchmark, format_table
from mobilenets.checkpoint import save_weights
from mobilenets.deploy import detection
from mobilenets.deploy.detection import (
    SCALE,
    SELECT,
    Postprocessing,
    compare_detections,
    detection_metadata,
    export_detector,
    load_detector_pipeline,
    torch_pipeline,
)
from mobilenets.deploy.export import VerificationError, read_artifact_metadata

pytest.importorskip("onnxruntime", reason="detector export needs the [deploy] extra")
pytestmark = pytest.mark.usefixtures("one_thread")

RES = 64  # the smallest input these tests need: SSD's last maps are then 1×1
CLASSES = 3  # the background and two object classes
SSD, SSDLITE, FASTER_RCNN = (
    "ssd300_mobilenet_v1_0.25",
    "ssdlite320_mobilenet_v2_0.25",
    "fasterrcnn300_mobilenet_v1_0.25",
)


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """Real photos of different sizes, none of them RES²: (H, W, 3) uint8."""
    data = pytest.importorskip("skimage.data", reason="the test photos come with scikit-image (the [dev] extra)")
    return [data.astronaut(), data.chelsea()]


def detector(name: str) -> torch.nn.Module:
    model = create_model(name, num_classes=CLASSES, resolution=RES)
    if name == FASTER_RCNN:
        # At its initial weights the box head's features are zero and every box scores the same, so the
        # 100 kept are a draw among ties and the check compares none of them: spread the features and scores.
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.bias.normal_(0, 0.2, generator=generator)
                    module.weight.uniform_(0.5, 1.5, generator=generator)
            model.roi_heads.box_predictor.cls_score.weight.mul_(30)
    return model.eval()


def same_detections(want: dict, got: dict, model: torch.nn.Module) -> bool:
    """Whether the detections above the model's threshold match (at least ten of them)."""
    post = Postprocessing.of(model)
    found = compare_detections(want, got, post, threshold=post.score_thresh, min_iou=0.99, max_score_diff=1e-3)
    return found.compared >= 10 and found.unmatched == 0


@pytest.mark.parametrize(("name", "kind"), [(SSD, SELECT), (SSDLITE, SELECT), (FASTER_RCNN, SCALE)])
def test_onnx_reproduces_pytorch_detections(name: str, kind: str, photos: list[np.ndarray], tmp_path: Path) -> None:
    model = detector(name)
    report = export_detector(model, "onnx", tmp_path / "det.onnx", pictures=photos)
    assert report.passed and report.images == len(photos) and report.postprocess == kind
    assert report.compared > 0 and report.unmatched == 0 and report.worst_iou >= 0.99
    assert (report.max_box_diff is None) == (kind == SCALE)
    metadata = read_artifact_metadata(tmp_path / "det.onnx", "onnx")
    assert metadata["task"] == "detection" and metadata["resolution"] == str(RES) and metadata["model"] == name
    assert json.loads(metadata["postprocess"])["kind"] == kind and json.loads(metadata["mean"]) == list(model.meta.mean)
    # End to end on a photo of its own size: the artifact's NumPy steps give PyTorch's boxes in its pixels.
    photo = photos[1]
    got = load_detector_pipeline(tmp_path / "det.onnx", "onnx")(photo)
    want = torch_pipeline(model, device="cpu")(photo)
    assert same_detections(want, got, model)
    height, width = photo.shape[:2]
    assert got["boxes"][:, 2].max() > RES and (got["boxes"][:, 0::2] <= width).all()
    assert (got["boxes"][:, 1::2] <= height).all()


def test_openvino_reproduces_pytorch_detections(photos: list[np.ndarray], tmp_path: Path) -> None:
    pytest.importorskip("openvino", reason="the openvino format needs the [deploy] extra")
    model = detector(SSDLITE)
    report = export_detector(model, "openvino", tmp_path / "det.xml", pictures=photos[:1])
    assert report.passed and report.compared > 0 and report.files == [tmp_path / "det.xml", tmp_path / "det.bin"]
    assert read_artifact_metadata(tmp_path / "det.xml", "openvino") == detection_metadata(model, RES)
    got = load_detector_pipeline(tmp_path / "det.xml", "openvino")(photos[0])
    assert same_detections(torch_pipeline(model, device="cpu")(photos[0]), got, model)


def test_a_broken_artifact_fails_verification(
    photos: list[np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = detector(SSDLITE)
    exporter = detection.export_detector_onnx

    def broken(model: torch.nn.Module, path: Path, resolution: int) -> Path:
        damaged = create_model(SSDLITE, num_classes=CLASSES, resolution=RES)
        damaged.load_state_dict(model.state_dict())
        with torch.no_grad():  # class 1 favoured on the first map
            damaged.head.classification_head.module_list[0].pw.bias[1::CLASSES] += 1.0
        damaged.meta = model.meta
        return exporter(damaged, path, resolution)

    monkeypatch.setattr(detection, "export_detector_onnx", broken)
    with pytest.raises(VerificationError, match="detection verification FAILED") as caught:
        export_detector(model, "onnx", tmp_path / "det.onnx", pictures=photos)
    report = caught.value.report
    assert not report.passed and report.unmatched > 0 and report.max_prob_diff > report.tolerance
    assert (tmp_path / "det.onnx").is_file()  # kept for inspection


@pytest.mark.filterwarnings("ignore::mobilenets.bench.BenchWarning")  # a busy machine's noise is not under test
def test_bench_times_the_network_and_end_to_end(private_cache: Path) -> None:
    model = detector(SSDLITE)
    results = benchmark(model, ["eager", "onnx"], threads=1, device="cpu", timing=QUICK)
    assert [(r.stage, r.runtime) for r in results] == [
        (NETWORK, "eager"),
        (NETWORK, "onnx"),
        (END_TO_END, "eager"),
        (END_TO_END, "onnx"),
    ]
    assert all(r.batch == 1 and r.resolution == RES and r.p50_ms > 0 for r in results)
    network = {r.runtime: r.p50_ms for r in results if r.stage == NETWORK}
    assert all(r.p50_ms > 0.5 * network[r.runtime] for r in results if r.stage == END_TO_END)
    table = format_table(results)
    assert "eager, network" in table and "onnx, end to end" in table
    with pytest.raises(ValueError, match="runtime onnx-int8 is for classifiers"):
        benchmark(model, ["onnx-int8"], threads=1, device="cpu", timing=QUICK)
    with pytest.raises(ValueError, match="timed at batch 1"):
        benchmark(model, ["eager"], batches=[2], threads=1, device="cpu", timing=QUICK)


def test_bench_command_refuses_a_detectors_other_runtimes_before_measuring(cli, private_cache: Path) -> None:
    for options, message in (
        (["--runtime", "eager,onnx-int8"], "runtime onnx-int8 is for classifiers; a detector runs in eager, onnx"),
        (["--batch", "1,4"], "a detector is timed at batch 1"),
    ):
        code, out, err = cli("bench", SSDLITE, "mobilenet_v1_0.25_32", "--resolution", str(RES), *options)
        assert code == 2 and message in err and out == ""
    assert not (private_cache / "gemm_peak.json").exists()  # nothing was measured


def test_export_command_writes_a_detector_and_refuses_int8(
    cli, photos: list[np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(detection, "verification_pictures", lambda: photos[:1])
    out = tmp_path / "det.onnx"
    base = [SSDLITE, "--resolution", str(RES), "--num-classes", str(CLASSES), "--format", "onnx", "--out", str(out)]
    code, stdout, err = cli("export", *base)
    assert code == 0 and "detection verification passed" in stdout and out.is_file(), err
    for extra, message in (
        (["--int8", "--calib", "fashion-mnist"], "--int8 is for classifiers; detection models export in fp32"),
        (["--int8"], "--int8 is for classifiers"),
    ):
        code, _, err = cli("export", *base, *extra)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("export", *base[:-4], "--format", "torchscript", "--out", str(tmp_path / "det.pt"))
    assert code == 2 and "format must be onnx or openvino for a detector" in err


def test_resolution_must_be_the_detectors_own(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="differs from the 64 that"):
        export_detector(detector(SSD), "onnx", tmp_path / "det.onnx", resolution=128, pictures=[])


def test_export_command_reads_a_detectors_weights_file(
    cli, photos: list[np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(detection, "verification_pictures", lambda: photos[:1])
    model = detector(SSDLITE)
    weights = tmp_path / "det.safetensors"
    info = {"task": "detection", "model": SSDLITE, "model_args": {"num_classes": CLASSES, "resolution": RES}}
    save_weights(weights, model.state_dict(), info | {"classes": ["shirt", "bag"]})
    out = tmp_path / "det.onnx"
    code, _, err = cli("export", "--weights", str(weights), "--format", "onnx", "--out", str(out))
    assert code == 0, err
    metadata = read_artifact_metadata(out, "onnx")
    assert json.loads(metadata["classes"]) == ["shirt", "bag"] and metadata["resolution"] == str(RES)
    code, _, err = cli("export", "--weights", str(weights), "--resolution", "96", "--format", "onnx", "--out", str(out))
    assert code == 2 and "--resolution: a detector's weights file records its arguments" in err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("tolerance", 0.0, "tolerance must be a finite number > 0"),
        ("min_iou", 1.5, r"min_iou must be in \(0, 1\]"),
        ("max_score_diff", -0.1, r"max_score_diff must be in \[0, 1\)"),
        ("score_threshold", 1.0, r"score_threshold must be in \[0, 1\)"),
    ],
)
def test_verification_limits_are_checked(option: str, value: float, message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        export_detector(detector(SSD), "onnx", tmp_path / "det.onnx", pictures=[], **{option: value})
    assert not (tmp_path / "det.onnx").exists()
