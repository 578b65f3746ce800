"""The run's pictures read at a glance: whole-epoch ticks, axes from 0, titles that say what was measured."""

from pathlib import Path

import pytest
import torch

from mobilenets.train.evaluate import EvalResult
from mobilenets.train.records import confusion_figure, curves_figure, plot_confusion, plot_curves


def _records(epochs: int, lr_end: float = 0.0) -> list[dict[str, float]]:
    return [
        {
            "epoch": e,
            "lr": 0.01 + (lr_end - 0.01) * e / epochs,
            "train_loss": 1 / e,
            "val_loss": 1.2 / e,
            "train_top1": 0.5 + e / (4 * epochs),
            "val_top1": 0.45 + e / (4 * epochs),
        }
        for e in range(1, epochs + 1)
    ]


@pytest.mark.parametrize("epochs", [1, 2, 3])
def test_short_run_ticks_are_whole_epochs(epochs: int) -> None:
    fig = curves_figure(_records(epochs))
    for ax in fig.axes:
        assert list(ax.get_xticks()) == list(range(1, epochs + 1))


def test_axes_start_at_zero_and_accuracy_spans_percent() -> None:
    loss_ax, acc_ax, lr_ax = curves_figure(_records(30, lr_end=0.0)).axes
    assert lr_ax.get_ylim()[0] == 0 and loss_ax.get_ylim()[0] == 0
    assert acc_ax.get_ylim() == (0, 100)
    assert all(tick >= 0 for tick in lr_ax.get_yticks() if lr_ax.get_ylim()[0] <= tick <= lr_ax.get_ylim()[1])


def test_curves_title_and_png(tmp_path: Path) -> None:
    fig = curves_figure(_records(2), "mobilenet_v1_0.25_32 on fashion-mnist")
    assert fig.get_suptitle() == "mobilenet_v1_0.25_32 on fashion-mnist"
    plot_curves(_records(2), tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_confusion_title_says_input_split_count_and_top1(tmp_path: Path) -> None:
    confusion = torch.tensor([[8, 2], [1, 9]])
    result = EvalResult(classes=["cat", "dog"], confusion=confusion, top5_correct=20, loss_sum=3.0, skipped=0)
    title = confusion_figure(result, "mobilenet_v1_0.25_32", resolution=32, split="val").axes[0].get_title()
    assert "mobilenet_v1_0.25_32" in title and "32×32" in title and "val split" in title
    assert "top-1 85.00 %" in title and "on 20 images" in title
    plot_confusion(result, tmp_path / "confusion.png", resolution=32, split="val")
    assert (tmp_path / "confusion.png").stat().st_size > 1000


def test_matplotlib_is_imported_only_to_draw() -> None:
    import subprocess
    import sys

    code = "import sys, mobilenets.train.records, mobilenets.cli.eval; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
