"""What a run leaves behind besides checkpoints: per-epoch metrics (JSON lines and CSV) and plots.

Plots use matplotlib's object API (``Figure`` + Agg), which touches no global backend state.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..checkpoint import atomic_write
from .evaluate import EvalResult


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
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write(path, buffer.getvalue())


def plot_curves(records: list[dict[str, Any]], path: str | Path) -> None:
    """Loss, accuracy and learning rate (at the end of each epoch) per epoch, as a PNG."""
    epochs = [r["epoch"] for r in records]
    fig = Figure(figsize=(12, 3.6))
    loss_ax, acc_ax, lr_ax = fig.subplots(1, 3)
    for key, label in (("train_loss", "train"), ("val_loss", "val"), ("ema_val_loss", "val, EMA")):
        if any(key in r for r in records):
            loss_ax.plot(epochs, [r.get(key) for r in records], marker="o", label=label)
    for key, label in (("train_top1", "train"), ("val_top1", "val"), ("ema_val_top1", "val, EMA")):
        if any(key in r for r in records):
            acc_ax.plot(epochs, [100 * r[key] if key in r else None for r in records], marker="o", label=label)
    lr_ax.plot(epochs, [r["lr"] for r in records], marker="o")
    for ax, title in ((loss_ax, "loss (cross-entropy)"), (acc_ax, "top-1 accuracy %"), (lr_ax, "learning rate")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    loss_ax.legend()
    acc_ax.legend()
    _save(fig, path)


def plot_confusion(result: EvalResult, path: str | Path, title: str = "") -> None:
    """The confusion matrix, rows normalised to 1 (true class) with counts written in, as a PNG."""
    n = len(result.classes)
    counts = result.confusion.double()
    shares = counts / counts.sum(1, keepdim=True).clamp(min=1)
    size = max(4.0, 0.45 * n + 2)
    fig = Figure(figsize=(size + 1, size))
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
    ax.set_title(title or f"top-1 {100 * result.top1:.2f} % on {result.count:,} images")
    _save(fig, path)
