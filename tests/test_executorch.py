"""ExecuTorch export (.pte lowered to XNNPACK, fp32 and int8), its runner, and artifacts in predict and bench."""

import gc
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from torch import nn

from mobilenets import create_model
from mobilenets.data.synthetic import make_image_folder
from mobilenets.deploy import export_model
from mobilenets.deploy.export import read_artifact_metadata
from mobilenets.predict import Classifier
from test_export import RES, family_representatives, randomise_batchnorm

pytestmark = pytest.mark.usefixtures("one_thread")
Cli = Callable[..., tuple[int, str, str]]  # the conftest fixture: cli(*argv) -> (status, stdout, stderr)
MODEL = "mobilenet_v1_0.25_128"
LABELS = ("cat", "dog", "emu")


@pytest.fixture(scope="module")
def executorch() -> None:
    pytest.importorskip("executorch.runtime", reason="ExecuTorch is not installed (extra 'mobile')")


@pytest.fixture(scope="module")
def exported(executorch: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    """A 3-class model with its own normalisation and class names, and its fp32 program."""
    model = randomise_batchnorm(create_model(MODEL, num_classes=3, resolution=40))
    model.meta = replace(model.meta, mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3), labels=LABELS, resize=48)
    out = tmp_path_factory.mktemp("pte") / "m.pte"
    report = export_model(model, "executorch", out)
    assert report.files == [out, Path(f"{out}.json")]
    return model, out


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "cat.jpg"
    Image.fromarray(data.chelsea()).save(path)
    return path


@pytest.mark.parametrize("name", family_representatives())
def test_fp32_round_trip(executorch: None, name: str, tmp_path: Path) -> None:
    model = randomise_batchnorm(create_model(name, num_classes=7))
    report = export_model(model, "executorch", tmp_path / "m.pte", resolution=RES)
    assert report.passed and report.max_abs_diff <= 1e-4 and report.nonfinite == 0
    assert report.samples == 4 and report.batch == 1  # batches 1 and 3, fed one image per call
    assert "batch 1," in report.format_text() and "fed 1 image per call" in report.summary()


def test_metadata_is_read_back(exported: tuple[nn.Module, Path]) -> None:
    _, path = exported
    recorded = read_artifact_metadata(path, "executorch")
    assert recorded["model"] == MODEL and (recorded["resolution"], recorded["num_classes"]) == ("40", "3")
    assert json.loads(recorded["mean"]) == [0.5, 0.4, 0.3] and json.loads(recorded["classes"]) == list(LABELS)
    assert recorded["resize"] == "48"


def test_cli_int8_export_reports_its_verification(executorch: None, cli: Cli, tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "data", num_classes=2, per_class=4, val_per_class=2)
    out = tmp_path / "int8.pte"
    code, stdout, err = cli("export", MODEL, "--num-classes", "2", "--resolution", "32", "--format", "executorch",
                            "--out", str(out), "--int8", "--calib", str(folder), "--min-calibration", "8",
                            "--min-eval-samples", "4", "--min-agreement", "0.01", "--json")  # fmt: skip
    assert code == 0, err
    report = json.loads(stdout)
    assert report["passed"] and report["int8"] and report["format"] == "executorch" and report["batch"] == 1
    assert (report["calibration_images"], report["calibration_asked"], report["samples"]) == (8, 256, 4)
    assert report["agreement"] in (0.0, 0.25, 0.5, 0.75, 1.0)  # top-1 agreement on the 4 held-out images
    params = sum(p.numel() for p in create_model(MODEL, num_classes=2).parameters())
    assert out.stat().st_size < 2 * params, "int8 weights: about one byte per parameter, not fp32's four"


def test_predict_with_a_program_matches_pytorch(exported: tuple[nn.Module, Path], photo: Path, cli: Cli) -> None:
    model, path = exported
    code, stdout, err = cli("predict", "--weights", str(path), str(photo), "--json")
    assert code == 0 and err == ""
    got = json.loads(stdout)[0]["top"]
    want = Classifier(model, topk=3, device="cpu")(photo)
    assert [p["label"] for p in got] == [p.label for p in want] and {p["label"] for p in got} == set(LABELS)
    np.testing.assert_allclose([p["prob"] for p in got], [p.prob for p in want], atol=1e-5)


def test_predict_with_an_onnx_file(cli: Cli, photo: Path, tmp_path: Path) -> None:
    model = create_model(MODEL, num_classes=3, resolution=32)
    model.meta = replace(model.meta, labels=LABELS)
    export_model(model, "onnx", tmp_path / "m.onnx")
    code, stdout, _ = cli("predict", MODEL, "--weights", str(tmp_path / "m.onnx"), str(photo), "--json")
    want = Classifier(model, topk=3, device="cpu")(photo)
    got = json.loads(stdout)[0]["top"]
    assert code == 0 and [p["label"] for p in got] == [p.label for p in want]
    np.testing.assert_allclose([p["prob"] for p in got], [p.prob for p in want], atol=1e-5)


class DataDependent(nn.Module):
    """Branches on a value of its input: torch.export cannot capture it in one graph."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).mean((2, 3))
        return y if y.sum() > 0 else -y


def test_a_model_executorch_cannot_export_is_one_line(executorch: None, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^ExecuTorch cannot export DataDependent: ") as info:
        export_model(DataDependent(), "executorch", tmp_path / "m.pte", resolution=RES)
    assert "\n" not in str(info.value) and not (tmp_path / "m.pte").exists()


def test_bad_programs_are_one_line_through_the_cli(exported: tuple[nn.Module, Path], photo: Path, cli: Cli,
                                                    tmp_path: Path) -> None:  # fmt: skip
    _, path = exported
    alone = tmp_path / "alone.pte"
    alone.write_bytes(path.read_bytes())
    broken = tmp_path / "broken.pte"
    broken.write_bytes(b"not a program")
    Path(f"{broken}.json").write_text(Path(f"{path}.json").read_text())
    cases = [
        (["--weights", str(alone)], f"'{alone}' has no metadata file '{alone}.json' beside it"),
        (["mobilenet_v2_1.0_224", "--weights", str(path)], f"'{path}' holds {MODEL}, not mobilenet_v2_1.0_224"),
        (["--weights", str(broken)], f"'{broken}' cannot be loaded as an ExecuTorch program"),
    ]
    for argv, fragment in cases:
        code, out, err = cli("predict", *argv, str(photo))
        assert code == 2 and out == "" and fragment in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["export", MODEL, "--format", "executorch", "--out", "{tmp}/m.pt"], "out must end with .pte"),
        (["export", MODEL, "--format", "executorch", "--out", "{tmp}/m.pte", "--int8"], "--int8 needs --calib"),
        (["export", MODEL, "--format", "executorch", "--out", "{tmp}/m.pte", "--int8", "--calib", "{tmp}/none"],
         "{tmp}/none"),
    ],
)  # fmt: skip
def test_bad_options_are_one_line(cli: Cli, tmp_path: Path, argv: list[str], fragment: str) -> None:
    code, out, err = cli(*[arg.format(tmp=tmp_path) for arg in argv])
    assert code == 2 and out == "" and fragment.format(tmp=tmp_path) in err and len(err.strip().splitlines()) == 1


def test_thread_pool_is_not_resized_under_a_loaded_program(exported: tuple[nn.Module, Path]) -> None:
    from mobilenets.deploy.executorch import executorch_runner

    _, path = exported
    x = np.zeros((2, 3, 40, 40), dtype=np.float32)
    first = executorch_runner(path, threads=1)
    with pytest.raises(ValueError, match="thread pool, shared by the process, has 1 threads"):
        executorch_runner(path, threads=2)
    expected = first(x)
    del first
    gc.collect()
    second = executorch_runner(path, threads=2)  # no program holds the old pool any more
    np.testing.assert_allclose(second(x), expected, atol=1e-6)
    assert second(x).shape == (2, 3)


def test_bench_times_a_program_at_each_batch_size(executorch: None, cli: Cli, private_cache: Path) -> None:
    code, out, _ = cli("bench", MODEL, "--runtime", "executorch,executorch-int8", "--batch", "1,3",
                       "--resolution", "32", "--threads", "1", "--quick", "--json")  # fmt: skip
    results = json.loads(out)["results"]
    assert code == 0
    assert [(r["runtime"], r["batch"]) for r in results] == [
        ("executorch", 1), ("executorch", 3), ("executorch-int8", 1), ("executorch-int8", 3)
    ]  # fmt: skip
    assert all(r["p50_ms"] > 0 for r in results)


def test_a_program_for_several_images_runs_them_in_one_call(exported: tuple[nn.Module, Path], tmp_path: Path) -> None:
    from mobilenets.deploy.executorch import executorch_runner, write_program

    model, _ = exported
    path = write_program(model, tmp_path / "three.pte", 40, batch=3)
    x = np.random.default_rng(0).standard_normal((3, 3, 40, 40), dtype=np.float32)
    runner = executorch_runner(path, threads=1)
    with torch.inference_mode():
        expected = model.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(runner(x), expected, atol=1e-4)


def test_a_missing_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from mobilenets.deploy.executorch import executorch_runner

    monkeypatch.setitem(sys.modules, "executorch.runtime", None)  # importing it now fails
    (tmp_path / "m.pte").write_bytes(b"a program")
    with pytest.raises(ValueError, match=r"needs the 'executorch.runtime' package: pip install 'mobilenets\[mobile\]'"):
        executorch_runner(tmp_path / "m.pte")
