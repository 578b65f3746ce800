"""eval, predict and export take the model's name from the weights file; eval prints figures before files."""

import errno
import json
from pathlib import Path

import pytest
from PIL import Image

from mobilenets.checkpoint import save_weights
from mobilenets.cli import eval as eval_command
from mobilenets.cli import main
from mobilenets.data.synthetic import make_image_folder
from mobilenets.registry import create_model

MODEL = "mobilenet_v1_0.25_128"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights file as `train` writes it (model, arguments, classes, data) for a 3-class folder."""
    root = tmp_path_factory.mktemp("eval")
    data = make_image_folder(root / "data", num_classes=3, per_class=2, val_per_class=3)
    args = {"num_classes": 3, "in_chans": 3, "resolution": 32}
    info = {"model": MODEL, "model_args": args, "classes": ["class_0", "class_1", "class_2"], "data": str(data)}
    path = root / "weights" / "best.safetensors"
    path.parent.mkdir()
    save_weights(path, create_model(MODEL, **args).state_dict(), info)
    return path


def test_model_name_comes_from_the_weights_file(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["eval", "--weights", str(trained), "--json", "--confusion", str(trained.parent / "c.png")])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["model"] == MODEL and result["resolution"] == 32 and result["images"] == 9


def test_a_name_other_than_the_recorded_one_says_what_the_file_records(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["eval", "mobilenet_v2_1.0_224", "--weights", str(trained)])
    err = capsys.readouterr().err
    assert code == 2 and f"record model '{MODEL}', not 'mobilenet_v2_1.0_224'" in err
    assert len(err.strip().splitlines()) == 1


def test_unwritable_confusion_matrix_after_the_figures_any_user(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A path that cannot be written is refused before evaluating; a disk that fills up meanwhile is not.
    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "c.png"))

    monkeypatch.setattr(eval_command, "plot_confusion", full_disk)
    code = main(["eval", "--weights", str(trained), "--json", "--confusion", str(tmp_path / "c.png")])
    out, err = capsys.readouterr()
    assert json.loads(out)["images"] == 9
    assert code == 1 and f"not written to {str(tmp_path / 'c.png')!r}" in err and len(err.strip().splitlines()) == 1


def test_empty_data_is_an_error_not_the_recorded_source(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["eval", "--weights", str(trained), "--data", ""])
    err = capsys.readouterr().err
    assert code == 2 and "data" in err and len(err.strip().splitlines()) == 1


def test_predict_takes_the_model_from_the_weights_file(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = trained.parent.parent / "data" / "val" / "class_1"
    images = sorted(str(p) for p in data.iterdir())
    code = main(["predict", "--weights", str(trained), *images[:2], "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and [r["image"] for r in out] == images[:2]
    assert {p["label"] for r in out for p in r["top"]} == {"class_0", "class_1", "class_2"}
    code = main(["predict", MODEL, "--weights", str(trained), images[0], "--json"])  # the name may still be given
    assert code == 0 and len(json.loads(capsys.readouterr().out)) == 1


def test_predict_with_another_model_says_what_the_file_records(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = next((trained.parent.parent / "data" / "val" / "class_0").iterdir())
    code = main(["predict", "mobilenet_v2_1.0_224", str(image), "--weights", str(trained)])
    err = capsys.readouterr().err
    assert code == 2 and f"record model '{MODEL}', not 'mobilenet_v2_1.0_224'" in err


def test_predict_and_export_need_a_name_without_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "x.png"
    Image.new("RGB", (40, 40)).save(image)
    for argv in (["predict", str(image)], ["export", "--format", "onnx", "--out", str(tmp_path / "m.onnx")]):
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and "give a model name" in err and len(err.strip().splitlines()) == 1


def test_export_takes_the_model_from_the_weights_file(trained: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnx", reason="the deploy extra is not installed")
    out = tmp_path / "m.pt"
    code = main(["export", "--weights", str(trained), "--format", "torchscript", "--out", str(out), "--json"])
    assert code == 0 and out.is_file()
