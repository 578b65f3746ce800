import ctypes
import json
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from mobilenets import create_model, get_entry, list_models
from mobilenets.bench import torch_threads
from mobilenets.data import FASHION_MNIST, load_dataset
from mobilenets.data.synthetic import make_image_folder
from mobilenets.deploy import (
    FORMATS,
    VerificationError,
    dataset_batches,
    export_model,
    export_onnx,
    fold_batchnorm,
    prepare_for_inference,
)
from mobilenets.deploy import export as export_module
from mobilenets.deploy.runtimes import _SignalStack, kept_signal_stack
from mobilenets.registry import CLASSIFICATION

RES = 32  # the smallest input every model accepts: keeps exports fast
DEPLOY_FORMATS = [fmt for fmt in FORMATS if fmt != "executorch"]  # the deploy extra's; ExecuTorch: test_executorch.py

pytestmark = pytest.mark.usefixtures("one_thread")
Cli = Callable[..., tuple[int, str, str]]  # the conftest fixture: cli(*argv) -> (status, stdout, stderr)


def family_representatives() -> list[str]:
    """Per family, its thinnest registered model."""
    by_family: dict[str, list[str]] = {}
    for name in list_models(task=CLASSIFICATION):
        by_family.setdefault(get_entry(name).family, []).append(name)

    def width(name: str) -> tuple[float, str]:
        return get_entry(name).defaults.get("width_mult", 1.0), name

    return sorted(min(names, key=width) for names in by_family.values())


def randomise_batchnorm(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine terms, so folding has something to fold."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator) - 0.5)
    return model.eval()


@pytest.fixture(params=family_representatives(), ids=str)
def representative(request: pytest.FixtureRequest) -> str:
    return request.param


def test_fold_batchnorm_keeps_outputs(representative: str) -> None:
    model = randomise_batchnorm(create_model(representative, num_classes=7))
    folded = fold_batchnorm(model)
    x = torch.randn(2, 3, RES, RES)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), "the original must be left untouched"


def test_prepare_for_inference_is_channels_last() -> None:
    model = randomise_batchnorm(create_model("mobilenet_v1_0.25_128", num_classes=7))
    prepared = prepare_for_inference(model, "cpu")
    convs = [m for m in prepared.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert not any(p.requires_grad for p in prepared.parameters())
    x = torch.randn(2, 3, RES, RES)
    with torch.no_grad():
        torch.testing.assert_close(prepared(x.contiguous(memory_format=torch.channels_last)), model(x))


@pytest.mark.parametrize("fmt", DEPLOY_FORMATS)
def test_round_trip(representative: str, fmt: str, tmp_path: Path) -> None:
    model = randomise_batchnorm(create_model(representative, num_classes=7))
    report = export_model(model, fmt, tmp_path / f"model{FORMATS[fmt]}", resolution=RES)
    assert report.passed and report.max_abs_diff <= 1e-4
    assert report.samples == 4  # batch 1 then batch 3: the batch dimension is dynamic
    assert all(path.is_file() and path.stat().st_size > 0 for path in report.files)


def test_channel_shuffle_exports_as_standard_onnx_ops(tmp_path: Path) -> None:
    model = create_model("shufflenet_g3_0.25", num_classes=7).eval()
    graph = onnx.load(str(export_onnx(model, tmp_path / "shuffle.onnx", RES))).graph
    assert {node.domain for node in graph.node} <= {"", "ai.onnx"}
    assert "Transpose" in {node.op_type for node in graph.node}
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch


def with_output(monkeypatch: pytest.MonkeyPatch, change: Callable[[np.ndarray], np.ndarray]) -> None:
    """Make every runner that verification loads return ``change(its true output)``."""
    real = export_module.load_runner

    def changed(*args, **kwargs):
        runner = real(*args, **kwargs)
        return lambda x: change(runner(x))

    monkeypatch.setattr(export_module, "load_runner", changed)


def test_failed_verification_is_an_error(cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with_output(monkeypatch, lambda out: out + 1e-2)
    with pytest.raises(VerificationError) as info:
        export_model(create_model("mobilenet_v1_0.25_128"), "onnx", tmp_path / "m.onnx", resolution=RES)
    assert not info.value.report.passed and info.value.report.max_abs_diff > 9e-3
    code, _, err = cli("export", "mobilenet_v1_0.25_128", "--format", "onnx", "--resolution", "32",
                         "--out", str(tmp_path / "cli.onnx"))  # fmt: skip
    assert code == 1 and "verification FAILED" in err and len(err.strip().splitlines()) == 1


def test_nan_output_fails_fp32_verification(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with_output(monkeypatch, lambda out: np.full_like(out, np.nan))
    with pytest.raises(VerificationError) as info:
        export_model(create_model("mobilenet_v1_0.25_128"), "onnx", tmp_path / "m.onnx", resolution=RES)
    report = info.value.report
    assert not report.passed and report.nonfinite == 4 * 1000
    assert "4000 output values are NaN or infinite" in report.summary()


def minus_inf_in_last_class(out: np.ndarray) -> np.ndarray:
    """The top-1 class unchanged (unless it is the last), but an output that is not finite."""
    out = out.copy()
    out[:, -1] = -np.inf
    return out


def test_infinite_output_fails_int8_verification(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with_output(monkeypatch, minus_inf_in_last_class)
    calibration = [np.random.default_rng(0).standard_normal((8, 3, RES, RES), dtype=np.float32)]
    with pytest.raises(VerificationError) as info:
        export_model(create_model("mobilenet_v1_0.25_128", num_classes=3), "onnx", tmp_path / "m.onnx",
                     resolution=RES, calibration=calibration, min_agreement=0.01,
                     min_calibration=8, min_eval_samples=8)  # fmt: skip
    assert info.value.report.nonfinite == 8 and not info.value.report.passed


def test_int8_metadata_and_image_counts_are_reported(tmp_path: Path) -> None:
    model = create_model("mobilenet_v1_0.25_128", num_classes=3, in_chans=1, resolution=RES)
    calibration = [np.random.default_rng(0).standard_normal((8, 1, RES, RES), dtype=np.float32)]
    with pytest.raises(ValueError, match="got 8 images \\(256 asked\\), fewer than min_calibration 100"):
        export_model(model, "onnx", tmp_path / "m.onnx", calibration=calibration, calibration_asked=256)
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(VerificationError, match="on 8 verification images \\(fewer than min_eval_samples 100\\)"):
        export_model(model, "onnx", tmp_path / "m.onnx", calibration=calibration, min_calibration=8)
    report = export_model(model, "openvino", tmp_path / "m.xml", calibration=calibration, calibration_asked=256,
                          resolution=RES, min_agreement=0.01, min_calibration=8, min_eval_samples=8)  # fmt: skip
    assert (report.calibration_images, report.calibration_asked, report.samples) == (8, 256, 8)
    assert "on 8 verification images, calibrated on 8 images (256 asked)" in report.summary()


def test_cli_int8_refuses_too_few_calibration_images(cli: Cli, tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", num_classes=2, per_class=3, val_per_class=2)
    argv = ["export", "mobilenet_v1_0.25_128", "--num-classes", "2", "--resolution", "32", "--format", "onnx",
            "--out", str(tmp_path / "m.onnx"), "--int8", "--calib", str(data)]  # fmt: skip
    code, out, err = cli(*argv)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "got 6 images (256 asked), fewer than min_calibration 100" in err
    code, out, _ = cli(*argv, "--min-calibration", "6", "--min-eval-samples", "4", "--min-agreement", "0.01", "--json")
    report = json.loads(out)
    assert code == 0 and (report["calibration_images"], report["calibration_asked"], report["samples"]) == (6, 256, 4)


@pytest.mark.parametrize("fmt", DEPLOY_FORMATS)
def test_artifacts_record_what_feeding_them_needs(fmt: str, tmp_path: Path) -> None:
    model = create_model("mobilenet_v1_0.25_128", num_classes=3, in_chans=1)
    model.meta = replace(model.meta, mean=(0.5,), std=(0.25,), labels=("cat", "dog", "emu"))
    out = tmp_path / f"m{FORMATS[fmt]}"
    export_model(model, fmt, out, resolution=40)
    if fmt == "onnx":
        recorded = {prop.key: prop.value for prop in onnx.load(str(out)).metadata_props}
    elif fmt == "openvino":
        ov = pytest.importorskip("openvino")
        info = ov.Core().read_model(str(out)).get_rt_info()["mobilenets"]
        recorded = {key: value.astype(str) for key, value in info.items()}
    else:
        extra = {"mobilenets.json": ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
            torch.jit.load(str(out), _extra_files=extra)
        recorded = json.loads(extra["mobilenets.json"])
    assert recorded["model"] == "mobilenet_v1_0.25_128"
    assert (recorded["in_chans"], recorded["resolution"], recorded["num_classes"]) == ("1", "40", "3")
    assert json.loads(recorded["mean"]) == [0.5] and json.loads(recorded["std"]) == [0.25]
    assert json.loads(recorded["classes"]) == ["cat", "dog", "emu"]


def test_cli_export_json(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "model.xml"
    code, stdout, _ = cli("export", "mobilenet_v1_0.25_128", "--format", "openvino", "--resolution", "32",
                          "--num-classes", "5", "--in-chans", "1", "--out", str(out), "--json")  # fmt: skip
    report = json.loads(stdout)
    assert code == 0 and report["passed"] and report["max_abs_diff"] <= 1e-4
    assert report["files"] == [str(out), str(out.with_suffix(".bin"))] and out.with_suffix(".bin").is_file()


# --- weights --------------------------------------------------------------------------------------


def test_cli_exports_the_weights_it_is_given(cli: Cli, tmp_path: Path) -> None:
    source = randomise_batchnorm(create_model("mobilenet_v1_0.25_128", num_classes=5, in_chans=1))
    torch.save(source.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "m.onnx"
    code, stdout, _ = cli("export", "mobilenet_v1_0.25_128", "--weights", str(tmp_path / "w.pt"),
                          "--num-classes", "5", "--in-chans", "1", "--resolution", "32", "--format", "onnx",
                          "--out", str(out))  # fmt: skip
    assert code == 0 and "verification passed" in stdout
    x = torch.randn(2, 1, RES, RES)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], source(x).numpy(), atol=1e-4)


# --- int8 on real images --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion_model() -> tuple[nn.Module, list, list]:
    """A thin MobileNet trained for one short epoch on Fashion-MNIST (far above chance), with calibration
    batches from its training images and 64 held-out test images."""
    torch.manual_seed(0)
    model = create_model("mobilenet_v1_0.25_128", num_classes=10, in_chans=1, resolution=RES, dropout=0.0)
    meta = model.meta
    try:
        train = load_dataset(
            FASHION_MNIST, "train", resolution=RES, in_chans=1, mean=meta.mean, std=meta.std, limit=4096
        )
        held_out = load_dataset(
            FASHION_MNIST, "val", resolution=RES, in_chans=1, mean=meta.mean, std=meta.std, limit=64
        )
    except FileNotFoundError as err:
        pytest.skip(f"Fashion-MNIST files are not installed: {err}")
    batches = list(dataset_batches(train, batch_size=64))
    optimiser = torch.optim.Adam(model.parameters())
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, 1e-2, total_steps=len(batches))
    with torch_threads(1):
        model.train()
        for images, labels in batches:
            loss = nn.functional.cross_entropy(model(torch.from_numpy(images)), torch.from_numpy(labels))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        # Too few steps for BatchNorm's running averages to settle: recompute them as plain averages.
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None
        with torch.no_grad():
            for images, _ in batches[:8]:
                model(torch.from_numpy(images))
    return model.eval(), [images for images, _ in batches[:4]], list(dataset_batches(held_out))


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_int8_agrees_with_fp32_on_fashion_mnist(fashion_model: tuple, fmt: str, tmp_path: Path) -> None:
    model, calibration, held_out = fashion_model
    out = tmp_path / f"int8{FORMATS[fmt]}"
    report = export_model(
        model, fmt, out, calibration=calibration, evaluation=held_out, min_agreement=0.9, min_eval_samples=64
    )
    assert report.int8 and report.samples == 64 and report.calibration_images == 256 and report.agreement >= 0.9
    assert report.accuracy_fp32 > 0.4, (
        "the model must have learnt something (chance: 0.1) for agreement to mean anything"
    )
    assert abs(report.accuracy_int8 - report.accuracy_fp32) <= 0.1
    if fmt == "onnx":
        ops = {node.op_type for node in onnx.load(str(out)).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops


# --- bad input: one clear line each ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--int8"], "--int8 needs --calib DATA"),
        (["--calib", "fashion-mnist"], "--calib is only used with --int8"),
        (
            ["--format", "torchscript", "--int8", "--calib", "fashion-mnist"],
            "int8 export needs format onnx, openvino or executorch",
        ),
        (["--out", "{tmp}/model.pt"], "out must end with .onnx"),
        (["--out", "{tmp}/afile/model.onnx"], "'{tmp}/afile' is a file, not a folder"),
        (["--out", "{tmp}/missing/model.onnx"], "folder '{tmp}/missing' does not exist"),
        (["--out", "{tmp}/folder.onnx"], "out '{tmp}/folder.onnx' is a folder"),
        (["--format", "openvino", "--out", "{tmp}/m.xml"], "out '{tmp}/m.bin' is a folder"),
        (["--calib-samples", "0", "--int8", "--calib", "fashion-mnist"], "calib_samples must be an integer >= 1"),
        (["--weights", "{tmp}/missing.pt"], "does not exist"),
        (["--resolution", "8"], "resolution must be an integer >= 32"),
    ],
)
def test_export_errors_are_one_line(cli: Cli, tmp_path: Path, extra: list[str], fragment: str) -> None:
    (tmp_path / "afile").write_text("a file, not a folder")
    (tmp_path / "folder.onnx").mkdir()
    (tmp_path / "m.bin").mkdir()
    argv = ["export", "mobilenet_v1_0.25_128", "--format", "onnx", "--out", str(tmp_path / "m.onnx")]
    argv += [arg.format(tmp=tmp_path) for arg in extra]
    code, out, err = cli(*argv)
    assert code == 2 and out == ""
    assert fragment.format(tmp=tmp_path) in err and len(err.strip().splitlines()) == 1


def test_unknown_model_and_wrong_weights_via_cli(cli: Cli, tmp_path: Path) -> None:
    code, _, err = cli("export", "nope", "--format", "onnx", "--out", str(tmp_path / "m.onnx"))
    assert code == 2 and "model name 'nope' is unknown" in err
    weights = tmp_path / "w.pt"
    torch.save(create_model("mobilenet_v1_0.5_128").state_dict(), weights)  # another width
    code, _, err = cli("export", "mobilenet_v1_0.25_128", "--format", "onnx", "--weights", str(weights),
                       "--out", str(tmp_path / "m.onnx"))  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "features.conv0.conv.weight (16, 3, 3, 3) for features.conv0.conv.weight (8, 3, 3, 3)" in err
    assert not (tmp_path / "m.onnx").exists()


SIGNAL_AFTER_OPENVINO = """
import os, signal
from mobilenets import create_model
from mobilenets.bench import QUICK, benchmark

model = create_model("mobilenet_v1_0.25_128")
benchmark(
    model, ["openvino", "openvino-int8"], batches=[1], threads=1, device="cpu", timing=QUICK, resolution=32, peak=1.0
)
got = []
signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
os.kill(os.getpid(), signal.SIGTERM)
print("handled", got)
"""


def test_python_signal_handlers_survive_openvino_models() -> None:
    """Two OpenVINO models compiled in a process used to leave it an invalid alternate signal stack,
    and the next signal handled by Python crashed it (segmentation fault)."""
    pytest.importorskip("openvino")
    proc = subprocess.run([sys.executable, "-c", SIGNAL_AFTER_OPENVINO], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and f"handled [{signal.SIGTERM.value}]" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sigaltstack through ctypes: Linux only")
def test_kept_signal_stack_restores_the_threads_alternate_stack() -> None:
    libc = ctypes.CDLL(None, use_errno=True)

    def current() -> tuple[int | None, int, int]:
        stack = _SignalStack()
        libc.sigaltstack(None, ctypes.byref(stack))
        return stack.ss_sp, stack.ss_flags, stack.ss_size

    before = current()
    memory = ctypes.create_string_buffer(65536)
    with kept_signal_stack():
        assert libc.sigaltstack(ctypes.byref(_SignalStack(ctypes.addressof(memory), 0, 65536)), None) == 0
        assert current()[0] == ctypes.addressof(memory)
    assert current() == before
