"""``deploy_run`` / ``mobilenets deploy``: a trained run exported to fp32 and int8, verified and timed."""

import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from mobilenets.bench import QUICK
from mobilenets.checkpoint import save_weights
from mobilenets.cli import main
from mobilenets.data.synthetic import make_image_folder
from mobilenets.deploy import VerificationError
from mobilenets.deploy.trained import deploy_run
from mobilenets.train import train

from tiny_run import tiny

# Enough images for the int8 check's minimum calibration (100): 4 classes × 26 train, × 6 val.
CALIB, EVAL = 104, 24


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deploy")
    data = make_image_folder(root / "data", num_classes=4, per_class=26, val_per_class=6)
    train(tiny(data, root / "run", epochs=1))
    return root / "run"


def test_deploy_run_reports_fp32_and_int8(run_dir: Path) -> None:
    report = deploy_run(run_dir, calib_samples=CALIB, min_eval_samples=EVAL, min_agreement=0.5, timing=QUICK)
    int8 = report.int8
    assert int8.passed and int8.samples == EVAL and int8.calibration_images == CALIB
    assert 0 <= int8.accuracy_fp32 <= 1 and 0 <= int8.accuracy_int8 <= 1
    assert [r.runtime for r in report.latency] == ["eager", "onnx", "onnx-int8"]
    assert all(r.p50_ms > 0 and r.repeats == QUICK.repeats for r in report.latency)
    assert (run_dir / "model.onnx").is_file() and (run_dir / "model-int8.onnx").is_file()
    text = report.format()
    assert f"int8 {100 * int8.accuracy_int8:.2f} %" in text
    assert "onnx-int8" in text and str(run_dir / "model-int8.onnx") in text
    assert text.startswith("trained    mobilenet_v1_0.25_32")  # the run's report.json


def test_deploy_run_fails_verification_on_too_few_images(run_dir: Path) -> None:
    with pytest.raises(VerificationError, match="fewer than min_eval_samples 1000"):
        deploy_run(run_dir, calib_samples=CALIB, min_eval_samples=1000, min_agreement=0.5, timing=QUICK)


def test_deploy_run_without_deploy_extra(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    report = deploy_run(run_dir, timing=QUICK)
    assert report.int8 is None and [r.runtime for r in report.latency] == ["eager"]
    assert "export     skipped: the deploy extra is not installed (onnxruntime)" in report.format()


def test_deploy_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], run_dir: Path) -> None:
    assert main(["deploy", str(tmp_path)]) == 2
    assert "mobilenets deploy: error:" in capsys.readouterr().err
    args = ["deploy", str(run_dir), "--calib-samples", str(CALIB), "--min-agreement", "0.5", "--repeats", "1"]
    assert main([*args, "--min-eval-samples", "1000"]) == 1
    assert "int8 verification FAILED" in capsys.readouterr().err


def test_deploy_run_openvino(run_dir: Path) -> None:
    report = deploy_run(
        run_dir, fmt="openvino", calib_samples=CALIB, min_eval_samples=EVAL, min_agreement=0.5, timing=QUICK
    )
    assert [r.runtime for r in report.latency] == ["eager", "openvino", "openvino-int8"]
    assert report.int8.files == [run_dir / "model-int8.xml", run_dir / "model-int8.bin"]
    with pytest.raises(ValueError, match="format must be one of"):
        deploy_run(run_dir, fmt="torchscript")


def test_deploy_run_without_mobile_extra(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "executorch", None)
    report = deploy_run(run_dir, fmt="executorch", timing=QUICK)
    assert report.int8 is None and [r.runtime for r in report.latency] == ["eager"]
    assert "export     skipped: the mobile extra is not installed (executorch): pip install 'mobilenets[mobile]'" in (
        report.format()
    )


@pytest.mark.parametrize("task", ["embedding", "multilabel"])  # a detection run is deployed in fp32
def test_a_run_of_another_task_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], task: str) -> None:
    save_weights(tmp_path / "best.safetensors", {"w": torch.zeros(1)}, {"task": task, "data": "fashion-mnist"})
    assert main(["deploy", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"({task})" in err and "mobilenets export --weights" in err, err
    code = main(["export", "--weights", str(tmp_path / "best.safetensors"), "--format", "onnx", "--int8",
                 "--calib", "fashion-mnist", "--out", str(tmp_path / "m.onnx")])  # fmt: skip
    assert code == 2 and "export in fp32" in capsys.readouterr().err and not (tmp_path / "m.onnx").exists()


def test_deploy_prints_a_noisy_timing_as_one_warning_line(monkeypatch: pytest.MonkeyPatch, cli: Any) -> None:
    from mobilenets.bench import BenchWarning
    from mobilenets.cli import deploy as deploy_cli

    def noisy_then_failed(*args: Any, **kwargs: Any) -> None:
        warnings.warn("onnx, batch 1: too noisy to trust", BenchWarning, stacklevel=1)
        raise VerificationError(SimpleNamespace(summary=lambda: "fabricated verification failure"))

    monkeypatch.setattr(deploy_cli, "deploy_run", noisy_then_failed)
    code, _, err = cli("deploy", "somewhere")
    assert code == 1 and "fabricated verification failure" in err
    lines = err.strip().splitlines()
    assert "mobilenets deploy: warning: onnx, batch 1: too noisy to trust" in lines
    assert not any("warnings.warn" in line or "BenchWarning:" in line for line in lines)


def test_checking_for_the_extras_imports_nothing() -> None:
    """torchao's import logs a warning of PyTorch's: deploy looks the packages up without importing them."""
    code = (
        "import sys; from mobilenets.deploy.trained import missing_packages; "
        "print(missing_packages('executorch'), 'torchao' in sys.modules, 'executorch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("]")[1].split() == ["False", "False"], out
