import json
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mobilenets import create_model
from mobilenets.checkpoint import read_saved_weights
from mobilenets.cli import main
from mobilenets.data import FASHION_MNIST_DIR
from mobilenets.data.synthetic import make_image_folder
from mobilenets.layers import fast_training_paths
from mobilenets.train import NonFiniteLoss, TrainingInterrupted, load_checkpoint, resume_config, train
from mobilenets.train.distributed import setup
from mobilenets.train.loop import Trainer

from tiny_run import MODEL, spying, tiny

HAS_FASHION_MNIST = (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file()


def signal_at_step(monkeypatch: pytest.MonkeyPatch, step: int, signum: int = signal.SIGTERM) -> None:
    """Make the run see ``signum`` right after its ``step``-th optimiser step, as its signal handler
    records it (real delivery is tested on the command line, below)."""
    original = Trainer._step
    calls = {"n": 0}

    def step_then_signal(self: Trainer, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = original(self, images, labels)
        calls["n"] += 1
        if calls["n"] == step:
            self.stop["signum"] = signum
        return out

    monkeypatch.setattr(Trainer, "_step", step_then_signal)


def test_short_run_on_real_data_learns(tmp_path: Path) -> None:
    # The quick run's settings (no augmentation or warm-up), on a subset.
    quick = {"augment": False, "warmup_epochs": 0.0}
    if HAS_FASHION_MNIST:
        config = tiny("fashion-mnist", tmp_path, epochs=3, batch_size=64, train_limit=1536, val_limit=500, **quick)
        chance = 0.1
    else:
        data = make_image_folder(tmp_path / "data", num_classes=4, per_class=96, val_per_class=16)
        config = tiny(data, tmp_path, epochs=4, batch_size=32, **quick)
        chance = 0.25
    result = train(config)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, config.epochs + 1))
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert result.evaluation.top1 > 2 * chance
    assert result.cost.mult_adds > 0 and result.images_per_s > 0
    for name in ("best.safetensors", "last.safetensors", "config.json", "metrics.csv", "curves.png", "confusion.png"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "report.json").read_text())["evaluation"]["top1"] == result.evaluation.top1
    assert "top-1" in result.format() and str(tmp_path) in result.format()
    # The run is named for what it trained: MODEL (…_128) at 32 px.
    assert result.model == "mobilenet_v1_0.25_32" and result.format().startswith("mobilenet_v1_0.25_32 on ")
    assert read_saved_weights(tmp_path / "best.safetensors")[1]["model"] == "mobilenet_v1_0.25_32"
    # The report's deploy command works as printed: the weights file brings the model's arguments.
    deploy = next(line for line in result.format().splitlines() if line.strip().startswith("deploy"))
    assert main([*shlex.split(deploy.split(maxsplit=1)[1])[1:], "--threads", "1"]) == 0
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "model-int8.onnx").is_file()


@pytest.mark.parametrize(("stop_step", "workers"), [(4, 1), (2, 0)], ids=["end-of-epoch", "mid-epoch"])
def test_interrupted_and_resumed_equals_uninterrupted(
    tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch, stop_step: int, workers: int
) -> None:
    train(tiny(folder, tmp_path / "straight", workers=workers))
    signal_at_step(monkeypatch, stop_step)
    with pytest.raises(TrainingInterrupted, match="SIGTERM received") as info:
        train(tiny(folder, tmp_path / "resumed", workers=workers))
    assert info.value.signum == signal.SIGTERM
    progress = load_checkpoint(tmp_path / "resumed" / "last.safetensors")["progress"]
    assert (progress["epoch"], progress["step_in_epoch"]) == divmod(stop_step, 4)
    monkeypatch.undo()
    train(resume_config(tmp_path / "resumed"), resume=True)

    straight = load_file(tmp_path / "straight" / "last.safetensors")
    resumed = load_file(tmp_path / "resumed" / "last.safetensors")
    different = [k for k in straight if not k.startswith("rng/") and not torch.equal(straight[k], resumed[k])]
    assert set(straight) == set(resumed) and not different
    assert any(k.startswith("optimizer/state/") for k in straight) and any(k.startswith("ema/") for k in straight)
    metrics = [(tmp_path / run / "metrics.jsonl").read_text().splitlines() for run in ("straight", "resumed")]
    losses = [[json.loads(line)["train_loss"] for line in lines] for lines in metrics]
    assert losses[0] == losses[1] and len(losses[0]) == 2


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Trainer._step
    calls = {"n": 0}

    def step_then_poison(self: Trainer, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = original(self, images, labels)
        calls["n"] += 1
        if calls["n"] == 5:  # first step of epoch 2
            with torch.no_grad():
                next(self.net.parameters()).fill_(float("nan"))
        return out

    monkeypatch.setattr(Trainer, "_step", step_then_poison)
    with pytest.raises(NonFiniteLoss, match="NaN or infinite at epoch 2") as info:
        train(tiny(folder, tmp_path))
    assert "last.safetensors (epoch 1), is kept" in str(info.value)
    state = load_checkpoint(tmp_path / "last.safetensors")
    assert state["progress"]["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_unreadable_training_images_are_counted(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", num_classes=2, per_class=8, val_per_class=2)
    (data / "train" / "class_0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        result = train(tiny(data, tmp_path / "run", epochs=1, batch_size=17))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["skipped"] == 1 and result.skipped == 1
    assert "1 unreadable images" in result.format()


def test_cli_train_then_eval(tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--model", MODEL, "--data", str(folder), "--resolution", "32", "--epochs", "1", "--threads", "1"]
    code = main([*args, "--batch-size", "16", "--workers", "0", "--out", str(tmp_path / "run"), "--json"])
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{\n") :])
    assert code == 0 and report["evaluation"]["images"] == 16 and report["params"] > 0
    code = main(["eval", MODEL, "--weights", str(tmp_path / "run" / "best.safetensors"), "--json"])
    evaluation = json.loads(capsys.readouterr().out)
    assert code == 0 and evaluation["top1"] == report["evaluation"]["top1"]
    assert set(evaluation["per_class"]) == {f"class_{k}" for k in range(4)}
    assert Path(evaluation["confusion_png"]).is_file()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["train", "--data", "/nonexistent/images"], "neither 'fashion-mnist' nor an existing folder"),
        (["train", "--resume", "/nonexistent/run"], "resume: '/nonexistent/run/config.json' not found"),
        (["train", "--epochs", "0"], "epochs must be an integer >= 1"),
        (["train", "--eval-every", "0"], "eval_every must be an integer >= 1, got 0"),
        (["train", "--resize-from", "16"], "resize_from must be in [32, "),
        (["train", "--resize-from", "40", "--resolution", "40"], "resize_from must be below the"),
        (["train", "--amp", "fp16", "--device", "cpu"], "'fp16' needs CUDA"),
        (["eval", MODEL, "--weights", "/nonexistent.safetensors"], "does not exist"),
    ],
)
def test_cli_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str, folder: Path
) -> None:
    if argv[:2] == ["train", "--amp"] or "--resolution" in argv:
        argv = [*argv, "--data", str(folder), "--out", str(tmp_path)]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1


def test_cli_refuses_to_overwrite_or_change_a_run(
    tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train(tiny(folder, tmp_path, epochs=1))
    assert main(["train", "--data", str(folder), "--out", str(tmp_path)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path), "--lr", "0.5"]) == 2
    assert "only epochs, workers, threads, device may change" in capsys.readouterr().err


def test_sigterm_writes_a_checkpoint_then_exits(tmp_path: Path, folder: Path) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "mobilenets", "train", "--model", MODEL, "--data", str(folder)]
    command += ["--resolution", "32", "--epochs", "100", "--batch-size", "16", "--workers", "0", "--threads", "1"]
    command += ["--out", str(out)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "last.safetensors").is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM received: checkpoint written" in err and f"--resume {out}" in err
    assert 1 <= load_checkpoint(out / "last.safetensors")["progress"]["epoch"] < 100


def test_init_starts_from_trained_weights(tmp_path: Path, folder: Path) -> None:
    train(tiny(folder, tmp_path / "a", epochs=1))
    state, _ = read_saved_weights(tmp_path / "a" / "best.safetensors")
    trainer = Trainer(tiny(folder, tmp_path / "b", init=str(tmp_path / "a" / "best.safetensors")), False, setup("cpu"))
    assert all(torch.equal(trainer.net.state_dict()[key].cpu(), value) for key, value in state.items())
    assert trainer.notes == [f"init: weights from {tmp_path / 'a' / 'best.safetensors'} and its classifier"]


def test_init_with_other_classes_keeps_a_fresh_classifier(tmp_path: Path, folder: Path) -> None:
    source = create_model(MODEL, num_classes=7, resolution=32)
    torch.save(source.state_dict(), tmp_path / "seven.pth")
    trainer = Trainer(tiny(folder, tmp_path / "run", init=str(tmp_path / "seven.pth")), False, setup("cpu"))
    ours, theirs = trainer.net.state_dict(), source.state_dict()
    assert all(torch.equal(ours[key].cpu(), value) for key, value in theirs.items() if not key.startswith("classifier"))
    assert ours["classifier.weight"].shape == (4, theirs["classifier.weight"].shape[1])
    assert trainer.notes == [f"init: weights from {tmp_path / 'seven.pth'} (a fresh 4-class classifier)"]
    grey = Trainer(tiny(folder, tmp_path / "grey", init=str(tmp_path / "seven.pth"), in_chans=1), False, setup("cpu"))
    summed = theirs["features.conv0.conv.weight"].sum(1, keepdim=True)  # RGB filters summed for one channel
    assert torch.equal(grey.net.state_dict()["features.conv0.conv.weight"].cpu(), summed)


def test_freeze_features_trains_the_classifier_only(tmp_path: Path, folder: Path) -> None:
    train(tiny(folder, tmp_path / "a", epochs=1))
    start, _ = read_saved_weights(tmp_path / "a" / "best.safetensors")
    train(tiny(folder, tmp_path / "probe", init=str(tmp_path / "a" / "best.safetensors"), freeze_features=True))
    end = load_checkpoint(tmp_path / "probe" / "last.safetensors")["model"]
    features = [key for key in start if key.startswith("features.")]
    assert any(key.endswith("running_mean") for key in features)  # BatchNorm statistics are checked too
    assert all(torch.equal(start[key], end[key]) for key in features)
    assert not torch.equal(start["classifier.weight"], end["classifier.weight"])


def test_one_folder_run_is_evaluated_on_its_own_held_out_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A flat folder of class subfolders, given as a relative path, split with a non-default share.
    flat = make_image_folder(tmp_path / "work" / "flat", num_classes=2, per_class=8)
    monkeypatch.chdir(tmp_path / "work")
    result = train(tiny("flat", tmp_path / "run", epochs=1, batch_size=8, val_fraction=0.25))
    assert result.evaluation.count == 4  # 2 of each class's 8
    info = json.loads((tmp_path / "run" / "config.json").read_text())
    assert info["data"] == str(flat)
    monkeypatch.chdir(tmp_path)  # elsewhere: the recorded path and split still hold
    capsys.readouterr()
    code = main(["eval", "--weights", str(tmp_path / "run" / "best.safetensors"), "--json"])
    evaluation = json.loads(capsys.readouterr().out)
    assert code == 0 and evaluation["images"] == 4 and evaluation["top1"] == result.evaluation.top1


def test_eval_every_evaluates_the_chosen_epochs_and_the_last(
    tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluated: list[int] = []
    evaluate = Trainer._evaluate

    def counting(self: Trainer, model: torch.nn.Module) -> object:
        evaluated.append(self.progress.epoch + 1)
        return evaluate(self, model)

    monkeypatch.setattr(Trainer, "_evaluate", counting)
    result = train(tiny(folder, tmp_path / "run", epochs=5, eval_every=2, ema_decay=0.0))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["epoch"] for r in records if "val_top1" in r] == [2, 4, 5]
    assert all("train_loss" in r and "images_per_s" in r for r in records)
    assert evaluated == [2, 4, 5, 6]  # the last evaluation is _finish's, of the best weights
    assert result.best["epoch"] in (2, 4, 5)
    assert (tmp_path / "run" / "curves.png").is_file()
    with pytest.raises(ValueError, match="eval_every must be an integer >= 1, got 0"):
        tiny(folder, tmp_path / "bad", eval_every=0).validate()


def test_resize_from_grows_the_training_images_over_the_first_half(tmp_path: Path, folder: Path) -> None:
    spy = spying(Trainer)
    result = train(tiny(folder, tmp_path / "run", resolution=40, epochs=4, resize_from=32), trainer=spy)
    sizes = [h for h, w, _ in spy.seen["student"] if h == w]
    assert len(sizes) == len(spy.seen["student"]) == 4 * 4  # 4 epochs of 4 steps
    assert sizes == [32] * 4 + [36] * 4 + [40] * 8  # 32 + 8 × epoch / 2 for epochs 0 and 1, then 40
    assert result.evaluation.count > 0 and result.config.resolution == 40  # evaluated at 40 (recorded below)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["resize_from"] == 32
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_resolution"] for r in records] == [32, 36, 40, 40]
    with pytest.raises(ValueError, match="resize_from must be below the resolution 40 it grows to, got 40"):
        train(tiny(folder, tmp_path / "bad", resolution=40, resize_from=40))


SPEED_RUN = {"epochs": 4, "batch_size": 64, "train_limit": 4096, "val_limit": 1000, "resolution": 40,
             "augment": False, "warmup_epochs": 0.0}  # fmt: skip


@pytest.fixture(scope="module")
def plain_top1(tmp_path_factory: pytest.TempPathFactory) -> float:
    """Top-1 of the short Fashion-MNIST run that each speed option is compared with."""
    if not HAS_FASHION_MNIST:
        pytest.skip("the packaged Fashion-MNIST files are absent")
    return train(tiny("fashion-mnist", tmp_path_factory.mktemp("plain"), **SPEED_RUN)).evaluation.top1


@pytest.mark.parametrize(
    "option",
    [
        {"resize_from": 32},
        {"channels_last": False},
        pytest.param(
            {"compile": True},
            marks=pytest.mark.skipif(
                not (shutil.which("c++") or shutil.which("g++")), reason="torch.compile on the CPU needs a C++ compiler"
            ),
        ),
    ],
    ids=lambda option: next(iter(option)),
)
def test_each_speed_option_learns_as_well_as_without_it(
    tmp_path: Path, plain_top1: float, option: dict[str, object]
) -> None:
    top1 = train(tiny("fashion-mnist", tmp_path, **SPEED_RUN, **option)).evaluation.top1
    assert plain_top1 > 0.5 and abs(top1 - plain_top1) < 0.06, (plain_top1, top1)


def test_the_modules_learn_as_the_fast_paths_do(
    tmp_path: Path, plain_top1: float, capsys: pytest.CaptureFixture[str]
) -> None:
    """The short run (ConvBNAct's fast paths, freed memory kept) against the same run through the modules."""
    with fast_training_paths(False):
        top1 = train(tiny("fashion-mnist", tmp_path, **SPEED_RUN)).evaluation.top1
    assert "freed memory kept for reuse" in capsys.readouterr().out
    assert plain_top1 > 0.5 and abs(top1 - plain_top1) < 0.06, (plain_top1, top1)
