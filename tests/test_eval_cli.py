"""``mobilenets eval``: the model's name from the weights file, and figures printed before any file is written."""

import json
from pathlib import Path

import pytest

from mobilenets.checkpoint import save_weights
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
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A path below a file cannot be created, whoever runs the test.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = main(["eval", "--weights", str(trained), "--json", "--confusion", str(blocker / "c.png")])
    out, err = capsys.readouterr()
    assert json.loads(out)["images"] == 9
    assert code == 1 and f"not written to {str(blocker / 'c.png')!r}" in err and len(err.strip().splitlines()) == 1


def test_empty_data_is_an_error_not_the_recorded_source(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["eval", "--weights", str(trained), "--data", ""])
    err = capsys.readouterr().err
    assert code == 2 and "data" in err and len(err.strip().splitlines()) == 1
