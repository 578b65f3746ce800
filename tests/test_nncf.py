"""OpenVINO int8 through NNCF: the export's and the bench runtime's int8 IR."""

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mobilenets import create_model
from mobilenets.bench import prepare_artifact
from mobilenets.data.synthetic import make_image_folder
from mobilenets.deploy import export_model, export_onnx
from mobilenets.deploy.export import artifact_metadata, read_artifact_metadata
from mobilenets.deploy.quantize import quantize_openvino

ov = pytest.importorskip("openvino", reason="OpenVINO comes with the deploy extra")
pytest.importorskip("nncf", reason="NNCF, OpenVINO's quantizer, comes with the deploy extra")

RES = 32
pytestmark = pytest.mark.usefixtures("one_thread")
Cli = Callable[..., tuple[int, str, str]]


def tiny_model():
    return create_model("mobilenet_v1_0.25_128", num_classes=3, in_chans=1, resolution=RES)


def quantized_by_nncf(path: Path) -> bool:
    """Whether the IR at ``path`` was written by NNCF (which records its settings in ``rt_info``)."""
    return ov.Core().read_model(str(path)).has_rt_info(["nncf", "quantization"])


def test_openvino_int8_export_is_quantized_by_nncf_verified_and_records_its_metadata(tmp_path: Path) -> None:
    model = tiny_model()
    calibration = [np.random.default_rng(0).standard_normal((8, 1, RES, RES), dtype=np.float32) for _ in range(2)]
    out = tmp_path / "m.xml"
    report = export_model(model, "openvino", out, calibration=calibration, resolution=RES, min_agreement=0.01,
                          min_calibration=16, min_eval_samples=16)  # fmt: skip
    assert report.passed and report.int8 and report.samples == 16 and report.calibration_images == 16
    assert quantized_by_nncf(out)
    ops = {op.get_type_name() for op in ov.Core().read_model(str(out)).get_ops()}
    assert "FakeQuantize" in ops
    assert read_artifact_metadata(out, "openvino") == artifact_metadata(model, RES)
    assert "openvino int8 NNCF" in report.format_text()


def test_bench_openvino_int8_runs_the_nncf_model(tmp_path: Path) -> None:
    artifact = prepare_artifact(tiny_model(), "openvino-int8", workdir=tmp_path, resolution=RES)
    assert artifact == tmp_path / "int8.xml" and quantized_by_nncf(artifact)


def test_quantize_openvino_needs_calibration_images(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="calibration data must hold at least one batch of images"):
        quantize_openvino(tmp_path / "absent.onnx", [])


def test_cli_openvino_int8_json_is_the_only_output(cli: Cli, tmp_path: Path) -> None:
    """NNCF's progress bars go to stderr: stdout stays the JSON report."""
    data = make_image_folder(tmp_path / "data", num_classes=2, per_class=4, val_per_class=2)
    code, out, _ = cli("export", "mobilenet_v1_0.25_128", "--num-classes", "2", "--resolution", "32", "--format",
                       "openvino", "--out", str(tmp_path / "m.xml"), "--int8", "--calib", str(data), "--json",
                       "--min-calibration", "8", "--min-eval-samples", "4", "--min-agreement", "0.01")  # fmt: skip
    assert code == 0 and json.loads(out)["calibration_images"] == 8


def test_nncf_progress_and_log_lines_go_to_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import nncf

    def talkative_quantize(model, dataset, **settings):
        print("a progress bar")
        logging.getLogger("nncf").warning("a warning")
        return model

    monkeypatch.setattr(nncf, "quantize", talkative_quantize)
    fp32 = export_onnx(tiny_model(), tmp_path / "m.onnx", RES)
    capsys.readouterr()
    quantize_openvino(fp32, [np.zeros((1, 1, RES, RES), np.float32)])
    out, err = capsys.readouterr()
    assert out == "" and "a progress bar" in err and "a warning" in err
