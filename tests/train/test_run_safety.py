"""A run never overwrites another, never saves a bad epoch, resumes from a damaged folder, and
refuses bad values in one line."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO

import pytest
import torch
from torch import nn

from mobilenets import checkpoint
from mobilenets.cli import main
from mobilenets.data.synthetic import make_image_folder
from mobilenets.device import usable_cores
from mobilenets.train import NonFiniteLoss, TrainConfig, load_checkpoint, resume_config, train
from mobilenets.train.config import MAX_BATCH_SIZE, MAX_RESOLUTION, MAX_WIDTH_MULT
from mobilenets.train.evaluate import EvalResult
from mobilenets.train.loop import Trainer
from mobilenets.train.run_files import LOCK, lock_run_dir

from tiny_run import MODEL, tiny


def one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the command line; assert it failed with status 2 and one line; return that line."""
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_a_folder_in_use_is_refused(tmp_path: Path, folder: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()  # made by the user: kept when the lock ends
    with lock_run_dir(run):  # as another run holding the folder would
        with pytest.raises(ValueError, match="a run is in progress in"):
            train(tiny(folder, run, epochs=1))
        with pytest.raises(ValueError, match="a run is in progress in"), lock_run_dir(run):
            pass
    assert [p.name for p in run.iterdir()] == [LOCK]  # the refused run wrote nothing
    train(tiny(folder, run, epochs=1))  # free again once the holder is done


def test_a_folder_locked_by_another_process_is_refused(
    tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    holder = "import fcntl, sys, time\nf = open(sys.argv[1], 'w')\nfcntl.flock(f, fcntl.LOCK_EX)\n"
    holder += "print('locked', flush=True)\ntime.sleep(60)\n"
    proc = subprocess.Popen([sys.executable, "-c", holder, str(run / LOCK)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        argv = ["train", "--model", MODEL, "--data", str(folder), "--resolution", "32", "--out", str(run)]
        assert "a run is in progress in" in one_line_error([*argv, "--threads", "1"], capsys)
    finally:
        proc.kill()
        proc.wait()


def test_a_folder_with_a_run_before_its_first_checkpoint_is_refused(tmp_path: Path, folder: Path) -> None:
    tiny(folder, tmp_path).save(tmp_path / "config.json")  # as a run stopped before its first epoch ended
    with pytest.raises(ValueError, match=r"already holds a run \(config.json\)"):
        train(tiny(folder, tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK, "config.json"]


def snapshot(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}


@pytest.mark.parametrize("poison", ["bn_running_var", "val_loss"])
def test_a_non_finite_epoch_is_never_saved(
    tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch, poison: str
) -> None:
    saved: dict[str, bytes] = {}
    original_step, original_evaluate = Trainer._step, Trainer._evaluate
    calls = {"step": 0, "evaluate": 0}

    def step(self: Trainer, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = original_step(self, images, labels)
        calls["step"] += 1
        if calls["step"] == 5:  # first step of epoch 2: epoch 1's files are written
            saved.update(snapshot(tmp_path))
            if poison == "bn_running_var":  # training itself uses batch statistics: its loss stays finite
                bn = next(m for m in self.net.modules() if isinstance(m, nn.BatchNorm2d))
                bn.running_var[0] = float("inf")
        return out

    def evaluate(self: Trainer, model: nn.Module) -> EvalResult:
        result = original_evaluate(self, model)
        calls["evaluate"] += 1
        if poison == "val_loss" and calls["evaluate"] == 3:  # epoch 2, raw weights
            result.loss_sum = float("nan")
        return result

    monkeypatch.setattr(Trainer, "_step", step)
    monkeypatch.setattr(Trainer, "_evaluate", evaluate)
    what = "weights or BatchNorm statistics" if poison == "bn_running_var" else "validation loss"
    with pytest.raises(NonFiniteLoss, match=f"{what}.* became NaN or infinite at the end of epoch 2") as info:
        train(tiny(folder, tmp_path))
    assert "last.safetensors (epoch 1), is kept" in str(info.value)
    assert {"last.safetensors", "best.safetensors", "metrics.jsonl"} <= set(saved)
    assert snapshot(tmp_path) == saved  # nothing written after epoch 1
    assert load_checkpoint(tmp_path / "last.safetensors")["progress"]["epoch"] == 1


def test_resume_falls_back_to_the_previous_checkpoint(
    tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train(tiny(folder, tmp_path))
    last, previous = tmp_path / "last.safetensors", tmp_path / "previous.safetensors"
    assert load_checkpoint(previous)["progress"]["epoch"] == 1
    last.write_bytes(last.read_bytes()[:1000])  # as a crash of the disk mid-write would leave it
    with pytest.warns(UserWarning, match=r"cannot be read .* continuing from the checkpoint before it, .*epoch 1"):
        train(resume_config(tmp_path, epochs=3), resume=True)
    assert [json.loads(line)["epoch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    # The damaged file was replaced, not kept as the previous checkpoint.
    assert load_checkpoint(last)["progress"]["epoch"] == 3 and load_checkpoint(previous)["progress"]["epoch"] == 2

    last.write_bytes(b"")
    previous.write_bytes(b"")
    err = one_line_error(["train", "--resume", str(tmp_path), "--epochs", "4"], capsys)
    assert "resume: no readable checkpoint in" in err and str(last) in err and str(previous) in err


def test_a_full_disk_names_the_file_and_keeps_the_previous_ones(
    tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved: dict[str, bytes] = {}
    original, end_epoch = checkpoint._write_chunks, Trainer._end_epoch

    def write(f: BinaryIO, data: bytes) -> None:
        if saved:
            f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        original(f, data)

    def end_epoch_then_fill_the_disk(self: Trainer) -> None:
        if self.progress.epoch == 1:  # epoch 1's files are written
            saved.update(snapshot(tmp_path))
        return end_epoch(self)

    monkeypatch.setattr(checkpoint, "_write_chunks", write)
    monkeypatch.setattr(Trainer, "_end_epoch", end_epoch_then_fill_the_disk)
    with pytest.raises(OSError, match="No space left on device") as info:
        train(tiny(folder, tmp_path))
    assert info.value.errno == errno.ENOSPC and str(tmp_path) in str(info.value) and ".tmp" not in str(info.value)
    assert snapshot(tmp_path) == saved and "last.safetensors" in saved


def test_a_batch_larger_than_the_training_set_is_clipped(
    tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train(tiny(folder, tmp_path, epochs=1, batch_size=100))
    assert "batch_size: 100 is more than the 64 training images; batches of 64 instead" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "last.safetensors")["scheduler"]["last_epoch"] == 1  # one step of 64


def test_unreadable_validation_images_are_an_error(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", num_classes=2, per_class=8, val_per_class=2)
    for image in (data / "val").rglob("*.png"):
        image.write_bytes(b"not an image")
    unreadable = pytest.warns(UserWarning, match="skipping unreadable image")
    with unreadable, pytest.raises(ValueError, match="none of its 4 validation images could be read"):
        train(tiny(data, tmp_path / "run", epochs=1))
    assert not (tmp_path / "run" / "last.safetensors").exists()


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--out", ""], "out must be a folder path, not empty"),
        (["--out", "FILE"], "is a file; it must be a folder"),
        (["--out", "FILE/run"], "is below the file"),
        (["--resolution", "0"], f"resolution must be in [32, {MAX_RESOLUTION}], got 0"),
        (["--resolution", str(10 * MAX_RESOLUTION)], "resolution must be in [32,"),
        (["--width-mult", "inf"], f"width_mult must be a finite number in (0, {MAX_WIDTH_MULT:g}], got inf"),
        (["--width-mult", "nan"], "width_mult must be a finite number in (0,"),
        (["--width-mult", "1e6"], f"width_mult must be in (0, {MAX_WIDTH_MULT:g}], got 1000000.0"),
        (["--lr", "inf"], "lr must be a finite number > 0, got inf"),
        (["--batch-size", str(MAX_BATCH_SIZE + 1)], f"batch_size must be an integer in [1, {MAX_BATCH_SIZE}]"),
        (["--threads", str(usable_cores() + 1)], f"threads must be an integer in [1, {usable_cores()}] (the cores)"),
        (["--device", "meta"], "device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got 'meta'"),
        (["--device", "xla"], "device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got 'xla'"),
    ],
)
def test_bad_values_are_one_line_errors(
    tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str], options: list[str], fragment: str
) -> None:
    (tmp_path / "FILE").write_text("")
    options = [option.replace("FILE", str(tmp_path / "FILE")) for option in options]
    base = ["train", "--model", MODEL, "--data", str(folder), "--out", str(tmp_path / "run"), "--epochs", "1"]
    err = one_line_error([*base, "--workers", "0", *options], capsys)
    assert fragment in err
    assert not (tmp_path / "run").exists() and sorted(os.listdir(tmp_path)) == ["FILE"]


def test_resume_type_checks_the_saved_config(tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    values = tiny(folder, tmp_path).to_dict() | {"epochs": "ten"}
    (tmp_path / "config.json").write_text(json.dumps(values))
    err = one_line_error(["train", "--resume", str(tmp_path)], capsys)
    assert f"resume: {str(tmp_path / 'config.json')!r}: epochs must be an integer, got 'ten'" in err


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("lr", "0.1", "lr must be a number, got '0.1'"),
        ("epochs", 2.5, "epochs must be an integer, got 2.5"),
        ("augment", "yes", "augment must be true or false, got 'yes'"),
        ("seed", True, "seed must be an integer, got True"),
        ("crop_scale", "ab", "crop_scale must be 2 numbers, got 'ab'"),
        ("crop_scale", [0.5], "crop_scale must be 2 numbers, got [0.5]"),
        ("resolution", "32", "resolution must be an integer or None, got '32'"),
        ("device", 0, "device must be a string or None, got 0"),
    ],
)
def test_from_dict_checks_every_type(field: str, value: object, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        TrainConfig.from_dict({**TrainConfig().to_dict(), field: value})
    assert str(info.value) == fragment
    config = TrainConfig()
    setattr(config, field, value)  # the Python API is checked the same way
    with pytest.raises(ValueError) as info:
        config.validate()
    assert str(info.value) == fragment


def test_help_is_generated_from_the_config(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # no line breaks inside a default such as fashion-mnist
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for f in TrainConfig.__dataclass_fields__.values():
        assert f.metadata["help"], f.name
        assert f"--{f.name.replace('_', '-')}" in out
        default = " ".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        if default is not None:
            assert f"(default: {default})" in out, f.name
    assert "{exponential,cosine}" in out and "{auto,none,bf16,fp16}" in out and "--crop-scale LOW HIGH" in out


def test_a_run_that_fails_to_start_leaves_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "new" / "run"
    with pytest.raises(FileNotFoundError):
        train(tiny(tmp_path / "missing-data", out))
    assert not out.exists() and not out.parent.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(FileNotFoundError):
        train(tiny(tmp_path / "missing-data", kept))
    assert kept.is_dir()  # a folder the user made stays
