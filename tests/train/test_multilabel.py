"""Multi-label classification: manifests, the built-in grid set, mean AP, training, distillation, eval and predict."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenets import create_model, get_entry, load_model
from mobilenets.checkpoint import read_saved_weights, save_weights
from mobilenets.data import FASHION_MNIST_ENV, load_dataset
from mobilenets.data.multilabel import FASHION_MNIST_MULTILABEL, GRID, read_manifest
from mobilenets.train import train
from mobilenets.train.multilabel import MultiLabelResult, MultiLabelTrainer, average_precision, multilabel_loss

from tiny_run import MODEL, spying, tiny

COLOURS = ("red", "green", "blue")


def colour_images(folder: Path, split: str, count: int, *, seed: int) -> list[tuple[str, list[str]]]:
    """``count`` noisy 32×32 RGB images in ``folder``, each channel raised for the colours it is labelled with
    (about 40 % each, some images with none); (file name, labels) for each."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        present = rng.random(3) < 0.4
        image = rng.normal(0.3, 0.08, (32, 32, 3)) + 0.5 * present
        name = f"{split}{i}.png"
        Image.fromarray((255 * np.clip(image, 0, 1)).astype(np.uint8)).save(folder / name)
        rows.append((name, [c for c, p in zip(COLOURS, present, strict=True) if p]))
    return rows


def write_csv(path: Path, rows: list[tuple[str, list[str]]]) -> Path:
    path.write_text("path,labels\n" + "".join(f"{name},{'|'.join(labels)}\n" for name, labels in rows))
    return path


@pytest.fixture(scope="module")
def colours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train.csv (64 images) and val.csv (32) of colour images; returns train.csv."""
    folder = tmp_path_factory.mktemp("colours")
    write_csv(folder / "val.csv", colour_images(folder, "val", 32, seed=1))
    return write_csv(folder / "train.csv", colour_images(folder, "train", 64, seed=0))


@pytest.fixture(scope="module")
def trained(colours: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny multi-label run on ``colours``: (its folder, what it printed)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("run") / "run"
    printed = io.StringIO()
    config = tiny(colours, out, epochs=5, batch_size=16, lr=0.05, warmup_epochs=0.0, ema_decay=0.0, augment=False)
    with contextlib.redirect_stdout(printed):
        train(config)
    return out, printed.getvalue()


# --- metrics -----------------------------------------------------------------------------------------


def ap_by_definition(scores: list[float], targets: list[int]) -> float:
    """Σ over the distinct thresholds, highest first, of (recall gained) × precision, by counting."""
    ap, previous_recall = 0.0, 0.0
    for threshold in sorted(set(scores), reverse=True):
        chosen = [t for s, t in zip(scores, targets, strict=True) if s >= threshold]
        recall = sum(chosen) / sum(targets)
        ap += (recall - previous_recall) * sum(chosen) / len(chosen)
        previous_recall = recall
    return ap


def test_average_precision_by_hand() -> None:
    # Positives ranked 1st, 3rd and 4th: precisions 1/1, 2/3, 3/4.
    scores, targets = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [1, 0, 1, 1, 0, 0]
    assert average_precision(torch.tensor(scores), torch.tensor(targets)) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    # Ties form one threshold: 0.7 holds a positive and a negative.
    tied, tied_targets = [0.9, 0.7, 0.7, 0.2, 0.2, 0.1], [0, 1, 0, 1, 1, 0]
    expected = ap_by_definition(tied, tied_targets)
    assert expected == pytest.approx(1 / 3 * 1 / 3 + 2 / 3 * 3 / 5)
    assert average_precision(torch.tensor(tied), torch.tensor(tied_targets)) == pytest.approx(expected)
    assert average_precision(torch.tensor(scores), torch.zeros(6)) is None


def test_mean_ap_f1_precision_recall() -> None:
    scores = torch.tensor([[0.9, 0.2, 0.6], [0.8, 0.7, 0.4], [0.3, 0.6, 0.1], [0.1, 0.4, 0.3]])
    targets = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]]).float()
    result = MultiLabelResult(classes=["a", "b", "c"], scores=scores, targets=targets, loss_sum=0.0, skipped=0)
    ap_a = ap_by_definition(scores[:, 0].tolist(), [1, 0, 1, 0])
    ap_b = ap_by_definition(scores[:, 1].tolist(), [0, 1, 1, 0])
    # "c" has no positive image: no AP, and left out of the mean.
    assert result.ap == pytest.approx({"a": ap_a, "b": ap_b, "c": None})
    assert result.mean_ap == pytest.approx((ap_a + ap_b) / 2)
    a = result.per_label()["a"]  # predicted (>= 0.5): images 0 and 1, of which image 0 is right
    assert (a["precision"], a["recall"], a["f1"], a["support"]) == pytest.approx((0.5, 0.5, 0.5, 2))
    c = result.per_label()["c"]  # image 0 predicted wrongly
    assert (c["precision"], c["recall"], c["f1"], c["support"]) == (0.0, 0.0, 0.0, 0)


# --- data --------------------------------------------------------------------------------------------


def test_csv_and_jsonl_manifests_agree_and_val_is_held_out(tmp_path: Path) -> None:
    rows = colour_images(tmp_path, "img", 10, seed=0)
    write_csv(tmp_path / "all.csv", rows)
    lines = [json.dumps({"path": name, "labels": labels}) for name, labels in rows]
    (tmp_path / "all.jsonl").write_text("\n".join(lines) + "\n")
    assert read_manifest(tmp_path / "all.csv") == read_manifest(tmp_path / "all.jsonl")
    files, labels = read_manifest(tmp_path / "all.csv")
    assert files[0] == tmp_path / rows[0][0] and labels == [labels for _, labels in rows]
    kwargs = {"resolution": 32, "in_chans": 3, "mean": (0.5,) * 3, "std": (0.5,) * 3, "val_fraction": 0.3}
    train_set = load_dataset(tmp_path / "all.csv", "train", **kwargs)
    val_set = load_dataset(tmp_path / "all.csv", "val", **kwargs)
    assert (len(train_set), len(val_set)) == (7, 3)
    assert set(map(str, train_set.images)).isdisjoint(map(str, val_set.images))
    image, target = val_set[0]
    name = Path(val_set.images[0]).name
    expected = [float(c in dict(rows)[name]) for c in sorted(COLOURS)]
    assert image.shape == (3, 32, 32) and target.tolist() == expected


def test_builtin_grids_hold_the_classes_of_their_items(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Item i is of class i % 10 and every pixel of it is 10 + 20 × its class: each cell tells its class.
    labels = np.arange(40) % 10
    items = np.repeat((10 + 20 * labels).astype(np.uint8)[:, None, None], 28, 1).repeat(28, 2)
    for prefix in ("train", "t10k"):
        for kind, array in (("images", items), ("labels", labels.astype(np.uint8))):
            header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
            with gzip.open(tmp_path / f"{prefix}-{kind}-idx{array.ndim}-ubyte.gz", "wb") as f:
                f.write(header + array.tobytes())
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path))
    kwargs = {"resolution": 56, "in_chans": 1, "mean": (0.5,), "std": (0.5,)}
    grids = load_dataset(FASHION_MNIST_MULTILABEL, "val", **kwargs)
    assert len(grids) == 40 // GRID**2 and torch.equal(
        grids.images, load_dataset(FASHION_MNIST_MULTILABEL, "val", **kwargs).images
    )
    for image, target in zip(grids.images, grids.targets, strict=True):
        cells = image[0].unfold(0, 28, 28).unfold(1, 28, 28).reshape(-1, 28 * 28)[:, 0]
        present = {(int(v) - 10) // 20 for v in cells if v}
        assert set(torch.nonzero(target).flatten().tolist()) == present
    assert not torch.equal(grids.images, load_dataset(FASHION_MNIST_MULTILABEL, "train", **kwargs).images)


def test_manifest_mistakes_are_one_clear_error(tmp_path: Path) -> None:
    rows = colour_images(tmp_path, "img", 4, seed=0)
    write_csv(tmp_path / "train.csv", [*rows, ("gone.png", ["red"])])
    with pytest.raises(FileNotFoundError, match=r"names 1 image\(s\) that do not exist, first .*gone\.png"):
        read_manifest(tmp_path / "train.csv")
    write_csv(tmp_path / "train.csv", [(name, ["red"]) for name, _ in rows])
    write_csv(tmp_path / "val.csv", [(rows[0][0], ["red", "purple"])])
    kwargs = {"resolution": 32, "in_chans": 3, "mean": (0.5,) * 3, "std": (0.5,) * 3}
    with pytest.raises(ValueError, match=r"val\.csv' has labels \['purple'\] that the training manifest does not"):
        load_dataset(tmp_path / "train.csv", "val", **kwargs)
    (tmp_path / "train.csv").write_text("path,labels,extra\na.png,red,1\n")
    with pytest.raises(ValueError, match="must have the header 'path,labels'"):
        read_manifest(tmp_path / "train.csv")


# --- training ----------------------------------------------------------------------------------------


def test_a_tiny_run_learns_and_records_the_task(trained: tuple[Path, str], colours: Path) -> None:
    out, printed = trained
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["val_map"] < max(r["val_map"] for r in records[1:])
    assert max(r["val_map"] for r in records) > 0.55  # chance: about 0.4, the share of images with each colour
    empty = sum(line.endswith(",") for line in colours.read_text().splitlines())
    assert empty and f"{empty} training images have no label: kept, as negatives for every label" in printed
    last = next(line for line in printed.splitlines() if line.startswith(f"epoch {len(records)}/"))
    assert f"val loss {records[-1]['val_loss']:.4f} mAP {100 * records[-1]['val_map']:.2f} %" in last
    report = json.loads((out / "report.json").read_text())
    assert report["best"]["val_map"] == max(r["val_map"] for r in records)
    assert (out / "pr-curves.png").is_file()
    model = load_model(out / "best.safetensors")
    assert model.meta.labels == tuple(sorted(COLOURS))


def test_eval_and_predict_read_a_multilabel_model(trained: tuple[Path, str], colours: Path, cli) -> None:
    out, _ = trained
    code, text, _ = cli("eval", "--weights", str(out / "best.safetensors"), "--pr-curves", str(out / "pr.png"))
    assert code == 0 and "AP %" in text and "F1@0.5 %" in text and "mean AP" in text and (out / "pr.png").is_file()
    code, text, _ = cli("eval", "--weights", str(out / "best.safetensors"), "--json", "--threshold", "0.3")
    figures = json.loads(text)
    assert figures["threshold"] == 0.3 and set(figures["per_label"]) == set(COLOURS)
    report = json.loads((out / "report.json").read_text())["evaluation"]
    assert figures["mean_ap"] == pytest.approx(report["mean_ap"], abs=1e-6)
    image = colours.parent / "val0.png"
    code, text, _ = cli(
        "predict", "--weights", str(out / "best.safetensors"), "--threshold", "0.01", "--json", str(image)
    )
    top = json.loads(text)[0]["top"]
    assert code == 0 and {p["label"] for p in top} == set(COLOURS)  # every label reaches 1 %
    assert [p["prob"] for p in top] == sorted((p["prob"] for p in top), reverse=True)
    code, _, err = cli("eval", "--weights", str(out / "best.safetensors"), "--data", str(colours.parent / "nope"))
    assert code == 2 and "error:" in err


def frozen_copy(tmp_path: Path, scale: float = 1.0, resolution: int = 32) -> Path:
    """Weights of a 3-label student as a run at ``resolution`` writes them, the classifier scaled by ``scale``."""
    model = create_model(MODEL, num_classes=3, resolution=resolution, dropout=0.0)
    with torch.no_grad():
        model.classifier.weight.mul_(scale)
    args = {"num_classes": 3, "resolution": resolution, "dropout": 0.0}
    info = {"model": f"mobilenet_v1_0.25_{resolution}", "model_args": args}
    save_weights(tmp_path / f"copy{scale:g}.safetensors", model.state_dict(), info)
    return tmp_path / f"copy{scale:g}.safetensors"


def test_distilling_from_its_own_frozen_copy_leaves_the_student_in_place(
    tmp_path: Path, colours: Path, trained: tuple[Path, str]
) -> None:
    copy = trained[0] / "best.safetensors"
    state, info = read_saved_weights(copy)
    state["classifier.weight"] = -state["classifier.weight"]  # a teacher that disagrees: the test can fail
    save_weights(tmp_path / "flipped.safetensors", state, info)
    # BatchNorm in inference mode, no dropout, no weight decay: the student is its teacher, at the loss's minimum.
    still = {"freeze_bn": True, "weight_decay": 0.0, "ema_decay": 0.0, "dropout": 0.0, "augment": False}
    still |= {"init": str(copy), "distill_alpha": 1.0, "epochs": 1, "warmup_epochs": 0.0, "lr": 0.05}
    train(tiny(colours, tmp_path / "same", teacher=str(copy), **still))
    train(tiny(colours, tmp_path / "other", teacher=str(tmp_path / "flipped.safetensors"), **still))
    entry = get_entry(MODEL)
    val = load_dataset(colours, "val", resolution=32, in_chans=3, mean=entry.mean, std=entry.std)
    images = torch.stack([x for x, _ in val])
    with torch.no_grad():
        before, same, other = (
            load_model(path).eval()(images).sigmoid()
            for path in (copy, tmp_path / "same" / "last.safetensors", tmp_path / "other" / "last.safetensors")
        )
    assert (same - before).abs().max() < 1e-4
    assert (other - before).abs().max() > 0.05


def test_unlabelled_images_train_by_distillation_alone(tmp_path: Path, colours: Path) -> None:
    (tmp_path / "train.csv").write_text("path\n" + "".join(f"{colours.parent / f'train{i}.png'}\n" for i in range(32)))
    (tmp_path / "val.csv").write_text(
        (colours.parent / "val.csv").read_text().replace("val", str(colours.parent / "val"))
    )
    with pytest.raises(ValueError, match="no labels; train on them by distillation alone"):
        train(tiny(tmp_path / "train.csv", tmp_path / "plain", epochs=1))
    # The unlabelled targets are NaN: a loss that read them would be NaN and stop the run.
    teacher = frozen_copy(tmp_path, 5.0)
    result = train(tiny(tmp_path / "train.csv", tmp_path / "run", epochs=1, teacher=str(teacher), distill_alpha=1.0))
    assert result.evaluation.count == 32 and 0 < result.evaluation.mean_ap <= 1
    with pytest.raises(ValueError, match="no labels; train on them by distillation alone"):
        train(tiny(tmp_path / "train.csv", tmp_path / "mixed", epochs=1, teacher=str(teacher), distill_alpha=0.5))


def test_a_teacher_with_non_finite_outputs_stops_the_run(
    tmp_path: Path, colours: Path, trained: tuple[Path, str]
) -> None:
    state, info = read_saved_weights(trained[0] / "best.safetensors")
    state["classifier.weight"].fill_(3e38)  # finite weights (the file is accepted), outputs that overflow
    save_weights(tmp_path / "overflowing.safetensors", state, info)
    teacher = str(tmp_path / "overflowing.safetensors")
    with pytest.raises(ValueError, match="gave NaN or infinite outputs at epoch 1, step 1"):
        train(tiny(colours, tmp_path / "run", epochs=1, teacher=teacher, distill_alpha=0.5))


def test_distillation_term_is_zero_at_the_teacher_and_labels_unread_at_alpha_one() -> None:
    logits = torch.randn(4, 3)
    assert torch.allclose(
        multilabel_loss(logits, None, teacher=logits, alpha=1.0, temperature=2.0), torch.zeros(4), atol=1e-6
    )
    nan_targets = torch.full((4, 3), float("nan"))
    assert multilabel_loss(logits, nan_targets, teacher=logits + 1, alpha=1.0).isfinite().all()
    with pytest.raises(ValueError, match="labels are needed unless distill_alpha is 1"):
        multilabel_loss(logits, None, teacher=logits, alpha=0.5)


def test_a_teacher_trained_at_a_larger_size_is_fed_that_size(tmp_path: Path, colours: Path) -> None:
    spy = spying(MultiLabelTrainer)
    teacher = frozen_copy(tmp_path, resolution=48)
    train(tiny(colours, tmp_path / "run", epochs=1, teacher=str(teacher), distill_alpha=1.0), trainer=spy)
    assert {(h, w) for h, w, _ in spy.seen["student"]} == {(32, 32)}
    assert {(h, w) for h, w, _ in spy.seen["teacher"]} == {(48, 48)}
    assert len(spy.seen["teacher"]) == len(spy.seen["student"]) > 0
