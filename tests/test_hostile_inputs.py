"""Hostile values for every command's options and positionals: each is refused before any work starts,
as one line on stderr naming the option (exit status 2), never a traceback nor a silent default."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mobilenets.bench import benchmark
from mobilenets.cli import main
from mobilenets.data.synthetic import make_image_folder
from mobilenets.deploy import export_model
from mobilenets.registry import create_model

MODEL = "mobilenet_v1_0.25_128"
BENCH = ["bench", MODEL, "--device", "cpu", "--threads", "1", "--runtime", "eager"]
EXPORT = ["export", MODEL, "--format", "onnx", "--out", "{tmp}/m.onnx"]
SELECT = ["select", "--models", MODEL]
PREDICT = ["predict", MODEL, "{tmp}/afile.txt"]
EVAL = ["eval", MODEL, "--weights", "{tmp}/missing.safetensors", "--data", "{tmp}/afolder"]
EVAL_READ = ["eval", MODEL, "--weights", "{shared}/w.safetensors", "--data", "{shared}/data"]  # both readable
# A data folder that does not exist: a check that is missing fails on it, not by training.
TRAIN = ["train", "--out", "{tmp}/run", "--data", "{tmp}/missing", "--workers", "0", "--threads", "1"]

pytestmark = pytest.mark.usefixtures("one_thread", "private_cache")


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-class image folder ``data`` and weights for it, ``w.safetensors``: for checks made once they are read."""
    root = tmp_path_factory.mktemp("hostile")
    make_image_folder(root / "data", num_classes=2, per_class=2, val_per_class=1)
    save_file(create_model(MODEL, num_classes=2).state_dict(), str(root / "w.safetensors"))
    return root


CASES = [
    # list, profile
    (["list", ""], "pattern"),
    (["profile", MODEL, "--resolution", "0"], "--resolution"),
    (["profile", MODEL, "--resolution", "abc"], "--resolution"),
    (["profile", MODEL, "--resolution", "1000000000000"], "--resolution"),
    (["profile", MODEL, "--width-mult", "nan"], "--width-mult"),
    (["profile", MODEL, "--width-mult=-inf"], "--width-mult"),
    (["profile", MODEL, "--width-mult", "1e9"], "--width-mult"),
    (["profile", MODEL, "--width-mult", ""], "--width-mult"),
    (["profile", "--grid", "--resolution", "160"], "--resolution"),
    # export
    ([*EXPORT[:-1], ""], "out"),
    ([*EXPORT[:-1], "{tmp}/afolder"], "out"),
    ([*EXPORT[:-1], "{tmp}/afile.txt/m.onnx"], "out"),
    ([*EXPORT[:-1], "{tmp}/missing/m.onnx"], "out"),
    ([*EXPORT, "--resolution", "0"], "--resolution"),
    ([*EXPORT, "--num-classes", "-1"], "--num-classes"),
    ([*EXPORT, "--in-chans", "1000000"], "--in-chans"),
    ([*EXPORT, "--tolerance", "nan"], "--tolerance"),
    ([*EXPORT, "--tolerance", "inf"], "--tolerance"),
    ([*EXPORT, "--weights", ""], "--weights"),
    ([*EXPORT, "--weights", "{tmp}/afolder"], "--weights"),
    ([*EXPORT, "--calib-samples", "0"], "--calib-samples"),
    ([*EXPORT, "--eval-samples", "-1"], "--eval-samples"),
    ([*EXPORT, "--min-calibration", "5"], "--min-calibration"),
    ([*EXPORT, "--min-agreement", "2"], "--min-agreement"),
    ([*EXPORT, "--calib", ""], "--calib"),
    ([*EXPORT, "--int8", "--calib", "fashion-mnist", "--tolerance", "0.1"], "--tolerance"),
    ([*EXPORT, "--int8", "--calib", "fashion-mnist", "--calib-samples", "0"], "--calib-samples"),
    # bench
    (["bench", ""], "model"),
    ([*BENCH, "--quick", "--resolution", "0"], "--resolution"),
    ([*BENCH, "--resolution", "1000000000000"], "--resolution"),
    ([*BENCH, "--batch", "0"], "--batch"),
    ([*BENCH, "--batch", ","], "--batch"),
    ([*BENCH, "--batch", "1000000"], "--batch"),
    ([*BENCH, "--batch", "1,abc"], "--batch"),
    (["bench", MODEL, "--threads", "1000000"], "--threads"),
    (["bench", MODEL, "--device", ""], "--device"),
    ([*BENCH, "--repeats", "0"], "--repeats"),
    ([*BENCH, "--warmup", "-1"], "--warmup"),
    ([*BENCH, "--quick", "--repeats", "3"], "--repeats"),
    ([*BENCH, "--quick", "--warmup", "3"], "--warmup"),
    (["bench", MODEL, "--runtime", ""], "--runtime"),
    # select
    ([*SELECT, "--mult-adds", "0", "--no-measure"], "--mult-adds"),
    ([*SELECT, "--mult-adds", "inf", "--no-measure"], "--mult-adds"),
    ([*SELECT, "--params", "nan", "--no-measure"], "--params"),
    ([*SELECT, "--latency-ms", "inf", "--device", "cpu", "--threads", "1", "--quick"], "--latency-ms"),
    ([*SELECT, "--mult-adds", "100", "--params", "5"], "--params"),
    ([*SELECT, "--mult-adds", "100", "--no-measure", "--threads", "0"], "--threads"),
    ([*SELECT, "--mult-adds", "100", "--no-measure", "--device", ""], "--device"),
    ([*SELECT, "--mult-adds", "100", "--no-measure", "--runtime", "onnx"], "--runtime"),
    ([*SELECT, "--mult-adds", "100", "--no-measure", "--cache", "{tmp}/afolder"], "--cache"),
    ([*SELECT, "--mult-adds", "100", "--no-measure", "--refresh"], "--refresh"),
    ([*SELECT, "--mult-adds", "100", "--quick", "--repeats", "5", "--device", "cpu"], "--repeats"),
    ([*SELECT, "--mult-adds", "100", "--no-measure", "--plot", " "], "plot"),
    ([*SELECT, "--mult-adds", "100", "--no-measure", "--plot", "{tmp}/afile.txt"], "plot"),
    ([*SELECT, "--mult-adds", "100", "--no-measure", "--families", ""], "families"),
    # predict
    (["predict", MODEL, " "], "image path"),
    (["predict", MODEL, ""], "image path"),
    ([*PREDICT, "--weights", ""], "--weights"),
    ([*PREDICT, "--weights", "{tmp}/afolder"], "--weights"),
    ([*PREDICT, "--topk", "0"], "--topk"),
    ([*PREDICT, "--topk", "1000000000000"], "--topk"),
    ([*PREDICT, "--device", "tpu"], "--device"),
    # eval
    ([*EVAL, "--confusion", ""], "--confusion"),
    ([*EVAL, "--confusion", "{tmp}/afolder"], "--confusion"),
    ([*EVAL, "--confusion", "{tmp}/afile.txt/c.png"], "--confusion"),
    ([*EVAL, "--confusion", "{tmp}/results.json"], "--confusion"),
    ([*EVAL, "--batch-size", "0"], "--batch-size"),
    ([*EVAL, "--batch-size", "1000000000000"], "--batch-size"),
    ([*EVAL, "--workers", "1000000"], "--workers"),
    ([*EVAL, "--workers", "-1"], "--workers"),
    ([*EVAL, "--split", "test"], "--split"),
    ([*EVAL, "--in-chans", "0"], "--in-chans"),
    ([*EVAL_READ, "--crop-pct", "1e-300"], "crop_pct"),
    (["eval", MODEL, "--weights", ""], "--weights"),
    # train
    ([*TRAIN, "--out", ""], "--out"),
    ([*TRAIN, "--out", "{tmp}/afile.txt/run"], "--out"),
    ([*TRAIN, "--resolution", "0"], "--resolution"),
    ([*TRAIN, "--epochs", "0"], "--epochs"),
    ([*TRAIN, "--batch-size", "1000000000000"], "--batch-size"),
    ([*TRAIN, "--lr", "inf"], "--lr"),
    ([*TRAIN, "--lr", "1e300"], "--lr"),
    ([*TRAIN, "--weight-decay", "1e39"], "--weight-decay"),
    ([*TRAIN[:4], "{shared}/data", "--resolution", "32", "--crop-pct", "1e-300"], "crop_pct"),
    ([*TRAIN, "--crop-scale", "0.1"], "--crop-scale"),
    ([*TRAIN, "--workers", "1000000"], "--workers"),
    ([*TRAIN, "--seed", "-1"], "--seed"),
    ([*TRAIN, "--seed", "1000000000000000000000"], "--seed"),
    ([*TRAIN, "--init", ""], "--init"),
    ([*TRAIN, "--teacher", " "], "--teacher"),
    ([*TRAIN, "--teacher-model", "nope"], "--teacher-model"),
    ([*TRAIN, "--distill-alpha", "0.3"], "--distill-alpha"),
    ([*TRAIN, "--distill-temperature", "2"], "--distill-temperature"),
    ([*TRAIN, "--freeze-features"], "--freeze-features"),
    (["train", "--resume", "", "--data", "{tmp}/missing"], "resume"),
    ([*TRAIN, "--device", ""], "--device"),
]


def names_option(line: str, option: str) -> bool:
    """Whether ``line`` names ``option`` as given (``--batch-size``) or as the API's parameter (``batch_size``)."""
    return option in line or option.lstrip("-").replace("-", "_") in line


@pytest.mark.parametrize(("argv", "option"), CASES, ids=[" ".join(argv[:1] + argv[-2:]) for argv, _ in CASES])
def test_bad_value_is_one_line_naming_the_option(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, shared: Path, argv: list[str], option: str
) -> None:
    (tmp_path / "afile.txt").write_text("not an image, not weights")
    (tmp_path / "afolder").mkdir()
    try:
        code = main([word.format(tmp=tmp_path, shared=shared) for word in argv])
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"mobilenets {argv[0]}: error: ") and names_option(err, option), err


def test_out_of_memory_is_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from mobilenets.cli import models

    def exhausted(_args: object) -> int:
        raise MemoryError("Unable to allocate 179. TiB for an array")

    monkeypatch.setattr(models, "run", exhausted)
    assert main(["list"]) == 2
    assert capsys.readouterr().err == "mobilenets list: error: Unable to allocate 179. TiB for an array\n"


@pytest.mark.parametrize("run", ["benchmark", "export"])
def test_resolution_zero_is_not_the_default(run: str, tmp_path: Path) -> None:
    model = create_model(MODEL)
    with pytest.raises(ValueError, match="resolution must be an integer >= 32"):
        if run == "benchmark":
            benchmark(model, device=torch.device("cpu"), threads=1, resolution=0)
        else:
            export_model(model, "onnx", tmp_path / "m.onnx", resolution=0)
