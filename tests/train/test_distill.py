import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F

from mobilenets import create_model, get_entry, load_model
from mobilenets.checkpoint import save_weights
from mobilenets.data import load_dataset
from mobilenets.train import TrainConfig, train
from mobilenets.train.distill import soft_target_loss
from mobilenets.train.loop import Trainer

from tiny_run import MODEL, spying, tiny

TEACHER = "mobilenet_v1_0.5_128"


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A confident α = 0.5 teacher whose choices have nothing to do with the labels (random
    weights, classifier scaled up), as a state dict: what a student learns from it, it learns from
    the soft targets alone."""
    model = create_model(TEACHER, num_classes=4, resolution=32)
    with torch.no_grad():
        model.classifier.weight.mul_(30)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pth"
    torch.save(model.state_dict(), path)
    return path


def one_epoch(data: Path, out: Path, **changes: object) -> TrainConfig:
    """The tests' tiny run, shortened to one epoch without warm-up."""
    return tiny(data, out, **{"epochs": 1, "warmup_epochs": 0.0, **changes})


def test_soft_target_loss_is_scaled_kl_divergence() -> None:
    student, teacher = torch.randn(5, 7, requires_grad=True), torch.randn(5, 7)
    loss = soft_target_loss(student, teacher, 3.0)
    expected = 9.0 * F.kl_div(F.log_softmax(student / 3, 1), F.log_softmax(teacher / 3, 1), reduction="none",
                              log_target=True).sum(1)  # fmt: skip
    assert loss.shape == (5,) and torch.allclose(loss, expected, atol=1e-6)
    assert torch.allclose(soft_target_loss(teacher, teacher, 3.0), torch.zeros(5), atol=1e-6)
    loss.sum().backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_alpha_zero_trains_exactly_as_without_a_teacher(tmp_path: Path, folder: Path, teacher: Path) -> None:
    train(one_epoch(folder, tmp_path / "plain"))
    train(one_epoch(folder, tmp_path / "distilled", teacher=str(teacher), teacher_model=TEACHER, distill_alpha=0.0))
    plain, distilled = (load_file(tmp_path / run / "last.safetensors") for run in ("plain", "distilled"))
    model_keys = [key for key in plain if key.startswith("model/")]
    assert model_keys and all(torch.equal(plain[key], distilled[key]) for key in model_keys)


def test_distillation_pulls_the_student_towards_the_teacher(
    tmp_path: Path, folder: Path, teacher: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    distil = {"teacher": str(teacher), "teacher_model": TEACHER, "distill_temperature": 1.0, "ema_decay": 0.0}
    train(one_epoch(folder, tmp_path / "distilled", distill_alpha=1.0, epochs=3, **distil))
    assert f"distill: teacher {TEACHER} from {teacher}" in capsys.readouterr().out
    train(one_epoch(folder, tmp_path / "plain", distill_alpha=0.0, epochs=3, **distil))
    entry = get_entry(MODEL)
    images = torch.stack(
        [x for x, _ in load_dataset(folder, "train", resolution=32, in_chans=3, mean=entry.mean, std=entry.std)]
    )
    with torch.no_grad():
        target = load_model(teacher, TEACHER, num_classes=4).eval()(images)

        def divergence(run: str) -> float:
            student = load_model(tmp_path / run / "last.safetensors", MODEL).eval()(images)
            return soft_target_loss(student, target, 1.0).mean().item()

        assert divergence("distilled") < 0.8 * divergence("plain")


def test_teacher_for_other_classes_is_refused(tmp_path: Path, folder: Path) -> None:
    seven = create_model(MODEL, num_classes=7).state_dict()
    save_weights(tmp_path / "seven.safetensors", seven, {"model": MODEL, "model_args": {"num_classes": 7}})
    with pytest.raises(ValueError, match="classifies 7 classes from 3-channel input; the data has 4 classes"):
        train(one_epoch(folder, tmp_path / "run", teacher=str(tmp_path / "seven.safetensors")))
    torch.save(seven, tmp_path / "seven.pth")  # records nothing: its classifier tells its 7 classes
    with pytest.raises(ValueError, match="classifies 7 classes from 3-channel input; the data has 4 classes"):
        train(one_epoch(folder, tmp_path / "run2", teacher=str(tmp_path / "seven.pth"), teacher_model=MODEL))


def _recording(path: Path, resolution: int | None) -> Path:
    """A 4-class teacher's weights, recording that it was trained at ``resolution`` (None: a bare state dict)."""
    model = create_model(TEACHER, num_classes=4, resolution=resolution or 32)
    if resolution is None:
        torch.save(model.state_dict(), path)
    else:
        info = {"model": TEACHER, "model_args": {"num_classes": 4, "resolution": resolution}}
        save_weights(path, model.state_dict(), info)
    return path


def _cifar(folder: Path) -> Path:
    """A CIFAR-10 folder of 40 training and 16 test images of 4 classes (an in-memory array set: batched)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, count in [*((f"data_batch_{i}", 8) for i in range(1, 6)), ("test_batch", 16)]:
        data = rng.integers(0, 256, (count, 3 * 32 * 32), dtype=np.uint8)
        (folder / name).write_bytes(pickle.dumps({b"labels": [i % 4 for i in range(count)], b"data": data}))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a", b"b", b"c", b"d"]}))
    return folder


MADE = "training batches made at {} px, resized to 32 px for the {}"


@pytest.mark.parametrize(
    ("batched", "student", "recorded", "option", "teacher_size", "why"),
    [
        (False, 32, 48, None, 48, "(the size its weights record it was trained at); " + MADE.format(48, "student")),
        (True, 32, 48, 40, 40, "(--teacher-resolution); " + MADE.format(40, "student")),
        (False, 48, 48, 32, 32, "(--teacher-resolution); " + MADE.format(48, "teacher")),
        (False, 32, None, None, 32, "(the student's: its weights record no training size)"),
    ],
    ids=["recorded", "option-batched", "teacher-smaller", "not-recorded"],
)
def test_the_teacher_sees_its_own_resolution(
    tmp_path: Path,
    folder: Path,
    capsys: pytest.CaptureFixture[str],
    batched: bool,
    student: int,
    recorded: int | None,
    option: int | None,
    teacher_size: int,
    why: str,
) -> None:
    data = _cifar(tmp_path / "cifar") if batched else folder
    teacher = _recording(tmp_path / ("teacher.safetensors" if recorded else "teacher.pth"), recorded)
    spy = spying(Trainer)
    config = one_epoch(data, tmp_path / "run", resolution=student, teacher=str(teacher), teacher_model=TEACHER,
                       teacher_resolution=option)  # fmt: skip
    train(config, trainer=spy)
    assert f"fed {teacher_size}×{teacher_size} images {why}" in capsys.readouterr().out
    seen = spy.seen
    assert {(h, w) for h, w, _ in seen["student"]} == {(student, student)}
    assert {(h, w) for h, w, _ in seen["teacher"]} == {(teacher_size, teacher_size)}
    assert len(seen["teacher"]) == len(seen["student"]) > 0
    # Where the two sizes agree, the teacher takes the student's batch itself: nothing is resized.
    same = [s[2] == t[2] for s, t in zip(seen["student"], seen["teacher"], strict=True)]
    assert all(same) if teacher_size == student else not any(same)


def test_a_teacher_resolution_out_of_range_is_one_line(tmp_path: Path, folder: Path, cli) -> None:
    with pytest.raises(ValueError, match=r"teacher_resolution must be in \[32, \d+\], got 8"):
        one_epoch(folder, tmp_path / "run", teacher="t.safetensors", teacher_resolution=8).validate()
    with pytest.raises(ValueError, match="teacher_resolution is only used with teacher"):
        one_epoch(folder, tmp_path / "run", teacher_resolution=64).validate()
    code, _, stderr = cli("train", "--data", str(folder), "--out", str(tmp_path / "run"), "--teacher", "t.safetensors",
                          "--teacher-resolution", "8")  # fmt: skip
    assert code == 2 and stderr.count("\n") == 1 and "teacher_resolution must be in [32," in stderr
