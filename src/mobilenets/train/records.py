"""What a run leaves behind besides checkpoints: per-epoch metrics (JSON lines and CSV) and plots.

Plots use matplotlib's object API (``Figure`` + Agg), which touches no global backend state; matplotlib
is imported when the first plot is drawn.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..checkpoint import atomic_write
from .evaluate import EvalResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class MetricsLog:
    """Per-epoch records in ``metrics.jsonl`` (one JSON object a line) and ``metrics.csv``."""

    def __init__(self, run_dir: str | Path) -> None:
        self.jsonl = Path(run_dir) / "metrics.jsonl"
        self.csv = Path(run_dir) / "metrics.csv"
        self.records: list[dict[str, Any]] = []
        if self.jsonl.is_file():
            self.records = [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]

    def keep_until(self, epoch: int) -> None:
        """Forget records after ``epoch`` (written by a run that stopped before checkpointing them)."""
        self.records = [r for r in self.records if r["epoch"] <= epoch]
        self._write()

    def append(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self._write()

    def _write(self) -> None:
        atomic_write(self.jsonl, "".join(json.dumps(r) + "\n" for r in self.records).encode())
        columns = list(dict.fromkeys(k for r in self.records for k in r))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.records)
        atomic_write(self.csv, buffer.getvalue().encode())


def _save(fig: Figure, path: str | Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write(path, buffer.getvalue())


def plot_curves(records: list[dict[str, Any]], path: str | Path, title: str = "") -> None:
    """:func:`curves_figure` as a PNG."""
    _save(curves_figure(records, title), path)


def curves_figure(records: list[dict[str, Any]], title: str = "") -> Figure:
    """Loss, top-1 accuracy (mean AP for a multi-label run; held-out TAR at FAR 1e-3 and recall@1 for
    an embedding run) and learning rate (at the end of each epoch) per epoch.

    Every epoch is a tick when there are few (a one-epoch run shows one tick, not fractions); loss and
    learning rate start at 0 and accuracy spans 0-100 %, so runs compare at a glance.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    epochs = [r["epoch"] for r in records]
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    loss_ax, acc_ax, lr_ax = fig.subplots(1, 3)
    series = {"train": "train", "val": "val", "ema_val": "val, EMA"}
    # What the run's records hold: top-1 for a single-label run, mean AP for a multi-label one (binary
    # cross-entropy), verification and retrieval of held-out classes for an embedding one (no val loss).
    if any("val_recall_at_1" in r for r in records):
        scores = {"val_tar_at_far_0.001": "TAR @ FAR 1e-3", "val_recall_at_1": "recall@1"}
        metric_name, loss_name = "held-out classes (%)", "training loss"
    else:
        multilabel = any("val_map" in r for r in records)
        metric, metric_name = ("map", "mean AP (%)") if multilabel else ("top1", "top-1 accuracy (%)")
        loss_name = f"loss ({'binary cross-entropy' if multilabel else 'cross-entropy'}, nats)"
        scores = {f"{prefix}_{metric}": label for prefix, label in series.items()}
    for prefix, label in series.items():
        if any(f"{prefix}_loss" in r for r in records):
            loss_ax.plot(epochs, [r.get(f"{prefix}_loss") for r in records], marker="o", label=label)
    for key, label in scores.items():
        if any(key in r for r in records):
            acc_ax.plot(epochs, [100 * r[key] if key in r else None for r in records], marker="o", label=label)
    lr_ax.plot(epochs, [r["lr"] for r in records], marker="o")
    for ax, name in ((loss_ax, loss_name), (acc_ax, metric_name), (lr_ax, "learning rate")):
        ax.set_title(name)
        ax.set_xlabel("epoch")
        if len(epochs) <= 12:
            ax.set_xticks(epochs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ax.grid(alpha=0.3)
    loss_ax.set_ylim(bottom=0)
    acc_ax.set_ylim(0, 100)
    lr_ax.set_ylim(0, max(r["lr"] for r in records) * 1.1 or 1)
    lr_ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.2g}"))
    loss_ax.legend(fontsize=8)
    acc_ax.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title)
    return fig


def plot_confusion(
    result: EvalResult, path: str | Path, title: str = "", *, resolution: int | None = None, split: str | None = None
) -> None:
    """:func:`confusion_figure` as a PNG."""
    _save(confusion_figure(result, title, resolution=resolution, split=split), path)


def confusion_figure(
    result: EvalResult, title: str = "", *, resolution: int | None = None, split: str | None = None
) -> Figure:
    """The confusion matrix, rows normalised to 1 (true class) with counts written in.

    Its title names the model or file (``title``), the input size and split when given, the image
    count and the top-1 accuracy.
    """
    from matplotlib.figure import Figure

    n = len(result.classes)
    counts = result.confusion.double()
    shares = counts / counts.sum(1, keepdim=True).clamp(min=1)
    size = max(4.0, 0.45 * n + 2)
    fig = Figure(figsize=(size + 1, size), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if n <= 30:
        ticks = list(range(n))
        ax.set_xticks(ticks, result.classes, rotation=90, fontsize=8)
        ax.set_yticks(ticks, result.classes, fontsize=8)
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    color = "white" if shares[i, j] > 0.5 else "black"
                    ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=6, color=color)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    where = ", ".join(
        part for part in (f"{resolution}×{resolution}" if resolution else "", f"{split} split" if split else "") if part
    )
    stats = f"top-1 {100 * result.top1:.2f} % on {result.count:,} images" + (f" ({where})" if where else "")
    ax.set_title(f"{title}\n{stats}" if title else stats, fontsize=10)
    return fig
