"""Embedding models: losses, the teacher's projection, training by distillation, `embed` and its errors."""

import json
import math
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenets.checkpoint import load_checkpoint, read_saved_weights, save_weights
from mobilenets.embed import embed_files, load_embedder, read_embeddings
from mobilenets.models.embedding import create_embedding_model
from mobilenets.registry import create_model
from mobilenets.train.embedding import (
    EmbedConfig,
    EmbeddingTrainer,
    distillation_loss,
    evaluate_embedding_weights,
    orthogonal_projection,
    resume_embedding_config,
    semi_hard_triplet_loss,
    train_embedding,
)
from mobilenets.train.loop import train
from mobilenets.train.records import curves_figure

from tiny_run import spying

MODEL = "mobilenet_v1_0.25_32"


def _on_circle(degrees: list[float]) -> torch.Tensor:
    radians = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([radians.cos(), radians.sin()], dim=1)


def _squared(degrees: float) -> float:
    """Squared distance of two unit vectors ``degrees`` apart."""
    return 2 - 2 * math.cos(math.radians(degrees))


def test_semi_hard_triplet_loss_on_a_hand_made_batch() -> None:
    # a0 at 0°, a1 at 30° (class 0), b at 40° (class 1, no positive of its own).
    # (a0, a1): b is 40° from a0, farther than a1: the semi-hard negative.
    # (a1, a0): b is 10° from a1, nearer than a0, and the only negative: taken as the farthest.
    embeddings = _on_circle([0, 30, 40])
    loss = semi_hard_triplet_loss(embeddings, torch.tensor([0, 0, 1]), margin=0.5)
    expected = (max(0, _squared(30) - _squared(40) + 0.5) + max(0, _squared(30) - _squared(10) + 0.5)) / 2
    assert loss.item() == pytest.approx(expected)


def test_triplet_loss_is_zero_for_classes_farther_apart_than_the_margin() -> None:
    embeddings = _on_circle([0, 2, 90, 92])
    assert semi_hard_triplet_loss(embeddings, torch.tensor([0, 0, 1, 1]), margin=0.2).item() == 0


def test_distillation_loss_is_two_minus_two_cosines() -> None:
    student, teacher = torch.randn(5, 8), torch.randn(5, 8)
    cosine = torch.nn.functional.cosine_similarity(student, teacher)
    assert torch.allclose(distillation_loss(3 * student, teacher), 2 - 2 * cosine, atol=1e-6)


@pytest.mark.parametrize(("teacher_dim", "dim"), [(256, 16), (8, 16)])
def test_teacher_projection_is_orthogonal_and_seeded(teacher_dim: int, dim: int) -> None:
    p = orthogonal_projection(teacher_dim, dim, seed=3)
    assert p.shape == (dim, teacher_dim)
    small = min(dim, teacher_dim)
    gram = p @ p.T if dim <= teacher_dim else p.T @ p
    assert torch.allclose(gram, torch.eye(small), atol=1e-5)
    assert torch.equal(p, orthogonal_projection(teacher_dim, dim, seed=3))
    assert not torch.equal(p, orthogonal_projection(teacher_dim, dim, seed=4))


def _config(folder: Path, out: Path, **changes) -> EmbedConfig:
    values = {
        "model": "mobilenet_v1_0.25_128",
        "data": str(folder),
        "out": str(out),
        "held_out": 2,
        "dim": 16,
        "resolution": 32,
        "epochs": 1,
        "batch_size": 16,
        "workers": 0,
        "threads": 1,
        "warmup_epochs": 0.0,
        "augment": False,
    }
    return EmbedConfig(**{**values, **changes})


def _classifier_weights(path: Path, **args) -> Path:
    """A classifier's weights file (random initialisation) that records its model, as `train` writes."""
    args = {"num_classes": 4, "in_chans": 3, "resolution": 32, **args}
    save_weights(path, create_model(MODEL, **args).state_dict(), {"model": MODEL, "model_args": args})
    return path


def test_distillation_lowers_its_loss_and_saves_the_projection(folder: Path, tmp_path: Path, one_thread) -> None:
    teacher = _classifier_weights(tmp_path / "teacher.safetensors")  # 256 pooled features, projected to 16
    result = train_embedding(_config(folder, tmp_path / "run", teacher=str(teacher), epochs=4, lr=3e-3))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["train_loss"] < 0.8 * records[0]["train_loss"]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["verification"]["genuine_pairs"] == 2 * 6  # 2 held-out classes of 4 val images
    for name in ("roc.png", "curves.png"):
        assert (tmp_path / "run" / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and name in report["files"]
    assert report["files"] == result.files
    # The curves: training loss, the held-out figures of each epoch, the learning rate.
    loss_ax, held_out_ax, lr_ax = curves_figure(records).axes
    assert [list(line.get_ydata()) for line in loss_ax.lines] == [[r["train_loss"] for r in records]]
    assert [line.get_label() for line in held_out_ax.lines] == ["TAR @ FAR 1e-3", "recall@1"]
    assert list(held_out_ax.lines[1].get_ydata()) == [100 * r["val_recall_at_1"] for r in records]
    assert list(lr_ax.lines[0].get_ydata()) == [r["lr"] for r in records]
    assert result.verification.images == 8
    projection = load_checkpoint(tmp_path / "run" / "last.safetensors")["teacher_projection"]
    assert torch.equal(projection, orthogonal_projection(256, 16, seed=0))


def test_distilling_from_its_own_frozen_copy_leaves_the_student_in_place(
    folder: Path, tmp_path: Path, one_thread
) -> None:
    train_embedding(_config(folder, tmp_path / "first"))
    first = tmp_path / "first" / "best.safetensors"
    again = _config(folder, tmp_path / "again", init=str(first), teacher=str(first), lr=1e-4, freeze_bn=True)
    train_embedding(again)
    images = sorted((folder / "val").rglob("*.png"))
    before = embed_files(load_embedder(first), images, device="cpu")
    after = embed_files(load_embedder(tmp_path / "again" / "best.safetensors"), images, device="cpu")
    assert (before * after).sum(1).min() > 0.999
    # The control: the same run from a random start moves the student away from the teacher.
    fresh = embed_files(create_embedding_model(MODEL, dim=16, in_chans=3), images, device="cpu")
    assert (before * fresh).sum(1).min() < 0.99


def test_embed_images_writes_a_file_that_reads_back(folder: Path, tmp_path: Path, cli, one_thread) -> None:
    train_embedding(_config(folder, tmp_path / "run"))
    weights = tmp_path / "run" / "best.safetensors"
    out = tmp_path / "vectors" / "embeddings.safetensors"
    code, stdout, stderr = cli("embed", "images", str(folder / "val" / "class_0"), "--weights", str(weights),
                               "--out", str(out), "--device", "cpu")  # fmt: skip
    assert code == 0, stderr
    paths, embeddings, info = read_embeddings(out)
    expected = sorted((folder / "val" / "class_0").glob("*.png"))
    assert paths == [str(p) for p in expected] and embeddings.shape == (4, 16)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(embeddings, embed_files(load_embedder(weights), expected, device="cpu"), atol=1e-5)
    assert info["model"] == MODEL
    code, stdout, _ = cli("embed", "eval", "--weights", str(weights), "--device", "cpu", "--json")
    assert code == 0 and json.loads(stdout)["held_out_classes"] == ["class_2", "class_3"]


def test_non_finite_teacher_outputs_are_an_error(folder: Path, tmp_path: Path, one_thread) -> None:
    teacher = _classifier_weights(tmp_path / "teacher.safetensors")
    state, info = read_saved_weights(teacher)
    first_conv = next(key for key, value in state.items() if value.ndim == 4)
    first_bn = next(key for key in state if key.endswith("bn.weight"))
    # Finite weights whose outputs are not: the convolution overflows to ±inf, which BatchNorm's scale 0 turns to NaN.
    state[first_conv] = torch.full_like(state[first_conv], 3e38)
    state[first_bn] = torch.zeros_like(state[first_bn])
    save_weights(teacher, state, info)
    with pytest.raises(ValueError, match=r"teacher .* gave NaN or infinite outputs at epoch 1, step 1"):
        train_embedding(_config(folder, tmp_path / "run", teacher=str(teacher)))


def test_a_teacher_of_other_input_channels_is_one_line(folder: Path, tmp_path: Path, cli) -> None:
    teacher = _classifier_weights(tmp_path / "grey.safetensors", in_chans=1)
    code, _, stderr = cli("embed", "train", "--data", str(folder), "--out", str(tmp_path / "run"),
                          "--teacher", str(teacher), "--resolution", "32", "--held-out", "2")  # fmt: skip
    assert code == 2
    assert stderr.count("\n") == 1 and "takes 1-channel input" in stderr and "3 channels" in stderr


def test_missing_files_are_one_line(folder: Path, tmp_path: Path, cli) -> None:
    teacher = tmp_path / "absent.safetensors"
    code, _, stderr = cli("embed", "train", "--data", str(folder), "--out", str(tmp_path / "run"),
                          "--teacher", str(teacher), "--held-out", "2")  # fmt: skip
    assert code == 2 and stderr.count("\n") == 1 and str(teacher) in stderr
    Image.new("RGB", (32, 32)).save(tmp_path / "there.png")
    code, _, stderr = cli("embed", "images", str(tmp_path / "there.png"), "--weights", "pretrained",
                          "--out", str(tmp_path / "e.safetensors"))  # fmt: skip
    assert code == 2 and stderr.count("\n") == 1 and "--weights pretrained needs --model NAME" in stderr


def test_held_out_must_leave_classes_to_train_on(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="held_out must leave at least 2 of the 4 classes"):
        train_embedding(_config(folder, tmp_path / "run", held_out=3))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"distill_alpha": 0.5}, "distill_alpha must be given only with --teacher"),
        ({"teacher_model": MODEL}, "teacher_model must be given with --teacher"),
        ({"dim": 0}, r"dim must be an integer in \[1, 65536\]"),
        ({"held_out": 1}, "held_out must be an integer >= 2"),
        ({"teacher_resolution": 64}, "teacher_resolution must be given with --teacher"),
        ({"teacher": "t.safetensors", "teacher_resolution": 8}, r"teacher_resolution must be in \[32, \d+\], got 8"),
    ],
)
def test_config_errors_name_the_option(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EmbedConfig(**changes).validate()


def test_a_resumed_run_computes_what_the_uninterrupted_run_computes(folder: Path, tmp_path: Path, one_thread) -> None:
    whole = train_embedding(_config(folder, tmp_path / "whole", epochs=2))
    parts = tmp_path / "parts"  # the run as it stood after its first epoch
    parts.mkdir()
    shutil.copy(tmp_path / "whole" / "previous.safetensors", parts / "last.safetensors")
    shutil.copy(tmp_path / "whole" / "config.json", parts / "config.json")
    resumed = train_embedding(resume_embedding_config(parts), resume=True)
    assert resumed.verification.to_dict() == whole.verification.to_dict()
    a, _ = read_saved_weights(tmp_path / "whole" / "best.safetensors")
    b, _ = read_saved_weights(parts / "best.safetensors")
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_a_classifiers_pooled_features_are_evaluated_on_the_last_classes(folder: Path, tmp_path: Path) -> None:
    weights = _classifier_weights(tmp_path / "classifier.safetensors")
    result, info = evaluate_embedding_weights(weights, str(folder), held_out=2, device="cpu")
    assert info["held_out_classes"] == ["class_2", "class_3"] and result.images == 8
    with pytest.raises(ValueError, match=r"held_out must be an integer in \[2, 4\]"):
        evaluate_embedding_weights(weights, str(folder), device="cpu")  # a classifier records no held-out classes


def test_imagenet_features_teach_through_a_projection(folder: Path, tmp_path: Path, one_thread) -> None:
    config = _config(folder, tmp_path / "run", teacher="pretrained", teacher_model="mobilenet_v2_1.0_224")
    train_embedding(config)
    projection = load_checkpoint(tmp_path / "run" / "last.safetensors")["teacher_projection"]
    assert projection.shape == (16, 1280)  # MobileNetV2's pooled features, mapped to --dim


def test_an_in_memory_array_set_trains(tmp_path: Path, one_thread) -> None:
    """CIFAR and Fashion-MNIST are held in memory as arrays: the embedding trainer reads them too."""
    cifar = tmp_path / "cifar"
    cifar.mkdir()
    rng = np.random.default_rng(0)
    for name, count in [*((f"data_batch_{i}", 8) for i in range(1, 6)), ("test_batch", 40)]:
        labels = [i % 4 for i in range(count)]
        data = rng.integers(0, 256, (count, 3 * 32 * 32), dtype=np.uint8)
        (cifar / name).write_bytes(pickle.dumps({b"labels": labels, b"data": data}, protocol=2))
    (cifar / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a", b"b", b"c", b"d"]}, protocol=2))
    train_embedding(_config(cifar, tmp_path / "run"))
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["data"] == str(cifar) and "verification" in report
    assert (tmp_path / "run" / "best.safetensors").is_file()


def test_an_embedding_model_exports_like_a_classifier(folder: Path, tmp_path: Path, one_thread) -> None:
    pytest.importorskip("onnxruntime", reason="ONNX export needs the deploy extra")
    from mobilenets.cli import main

    train_embedding(_config(folder, tmp_path / "run"))
    weights = str(tmp_path / "run" / "best.safetensors")
    assert main(["export", "--weights", weights, "--format", "onnx", "--out", str(tmp_path / "e.onnx")]) == 0
    assert (tmp_path / "e.onnx").is_file()
    code = main(["export", "--weights", weights, "--format", "onnx", "--int8", "--out", str(tmp_path / "q.onnx")])
    assert code == 2 and not (tmp_path / "q.onnx").exists()


def test_a_detectors_weights_are_one_line_pointing_to_detect(tmp_path: Path, cli) -> None:
    weights = tmp_path / "det.safetensors"
    save_weights(weights, {"w": torch.zeros(1)}, {"task": "detection", "model": "ssdlite320_mobilenet_v2_0.25"})
    code, _, stderr = cli("embed", "eval", "--weights", str(weights))
    assert code == 2 and stderr.count("\n") == 1 and "mobilenets detect eval" in stderr, stderr


def test_a_teacher_trained_at_a_larger_size_is_fed_that_size(folder: Path, tmp_path: Path, one_thread) -> None:
    spy = spying(EmbeddingTrainer)
    teacher = _classifier_weights(tmp_path / "teacher.safetensors", resolution=48)
    train(_config(folder, tmp_path / "run", teacher=str(teacher)), trainer=spy)
    assert {(h, w) for h, w, _ in spy.seen["student"]} == {(32, 32)}
    assert {(h, w) for h, w, _ in spy.seen["teacher"]} == {(48, 48)}
    assert len(spy.seen["teacher"]) == len(spy.seen["student"]) > 0


def test_embed_images_skips_and_counts_unreadable_images(tmp_path: Path, cli) -> None:
    weights = _classifier_weights(tmp_path / "w.safetensors")
    good, missing, broken = tmp_path / "good.png", tmp_path / "missing.png", tmp_path / "broken.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(good)
    broken.write_bytes(b"not an image")
    out = tmp_path / "e.safetensors"
    code, stdout, stderr = cli("embed", "images", str(missing), str(good), str(broken), "--weights", str(weights),
                               "--out", str(out), "--device", "cpu")  # fmt: skip
    assert code == 1
    lines = stderr.splitlines()
    assert len(lines) == 2 and str(missing) in lines[0] and str(broken) in lines[1]
    assert "1 embeddings of 256 dimensions" in stdout and "2 unreadable images skipped" in stdout
    paths, embeddings, _ = read_embeddings(out)
    assert paths == [str(good)]
    assert torch.allclose(embeddings, embed_files(load_embedder(weights), [good], device="cpu"), atol=1e-6)
    # Nothing readable: one error after the lines naming each file, and no file written.
    code, _, stderr = cli("embed", "images", str(missing), str(broken), "--weights", str(weights),
                          "--out", str(tmp_path / "none.safetensors"))  # fmt: skip
    lines = stderr.splitlines()
    assert code == 2 and len(lines) == 3 and lines[-1] == "mobilenets embed: error: none of the 2 images could be read"
    assert not (tmp_path / "none.safetensors").exists()
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):  # without a handler, the first unreadable file stops
        embed_files(load_embedder(weights), [good, missing], device="cpu")
