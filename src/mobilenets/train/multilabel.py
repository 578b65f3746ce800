"""Multi-label classification: a sigmoid per label, binary cross-entropy, mean average precision.

The task follows from the data (``SourceInfo.multilabel``: a manifest or ``fashion-mnist-multilabel``,
see ``data.multilabel``); :func:`~mobilenets.train.loop.train` then runs :class:`MultiLabelTrainer`,
whose weights files record ``task: "multilabel"`` so that ``eval`` and ``predict`` read the
outputs as independent probabilities.

The loss per image is ``(1 - alpha) · BCE(labels) + alpha · T² · KL(σ(teacher / T) ‖ σ(student / T))``,
each term averaged over the labels. The distillation term is the binary cross-entropy against the
teacher's (softened) probabilities less the teacher's own entropy: the same gradient, and zero when
the student agrees with the teacher. Probabilities rather than an MSE on logits: the targets stay
bounded where a confident teacher's logits are large, and the term is on the labels' scale, so
``alpha`` mixes like with like. With ``alpha = 1`` labels are never read, so unlabelled images train.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tabulate import tabulate
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from ..checkpoint import write_json
from ..data import UNREADABLE
from ..data.multilabel import MULTILABEL, targets_of
from ..predict import DEFAULT_THRESHOLD
from . import distributed
from .distributed import Dist
from .evaluate import autocast
from .loop import Trainer
from .records import _save
from .run_files import RunFiles

BAR_EVERY = 20  # steps between the progress bar's updates of the running training mAP


# --- metrics -------------------------------------------------------------------------------------


def precision_recall(scores: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(precision, recall) at each distinct score taken as the threshold, highest first, for one
    label: ``scores`` and 0/1 ``targets`` (N,). Tied scores form one point."""
    order = scores.argsort(descending=True, stable=True)
    scores, targets = scores[order].double(), targets[order].double()
    last_of_tie = torch.ones(len(scores), dtype=torch.bool)
    last_of_tie[:-1] = scores[1:] != scores[:-1]
    tp, seen = targets.cumsum(0)[last_of_tie], torch.arange(1, len(scores) + 1, dtype=torch.float64)[last_of_tie]
    return tp / seen, tp / targets.sum().clamp(min=1)


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float | None:
    """Average precision of one label, ``Σ (R_k − R_{k−1}) P_k`` over the thresholds (no
    interpolation, as scikit-learn computes it); None when ``targets`` holds no positive."""
    if not targets.any():
        return None
    precision, recall = precision_recall(scores, targets)
    return float((torch.diff(recall, prepend=recall.new_zeros(1)) * precision).sum())


@dataclass(kw_only=True)
class MultiLabelResult:
    """A multi-label evaluation: each image's probabilities ``scores`` and 0/1 ``targets``, both
    (N, labels), the summed loss and the unreadable images left out."""

    classes: list[str]
    scores: torch.Tensor
    targets: torch.Tensor
    loss_sum: float
    skipped: int
    threshold: float = DEFAULT_THRESHOLD
    model: str = ""
    resolution: int | None = None

    @property
    def count(self) -> int:
        return len(self.targets)

    @property
    def loss(self) -> float:
        """Mean binary cross-entropy per image and label (nats)."""
        return self.loss_sum / max(self.count, 1)

    @property
    def ap(self) -> dict[str, float | None]:
        """Average precision of each label (None for a label without positive images)."""
        return {name: average_precision(self.scores[:, i], self.targets[:, i]) for i, name in enumerate(self.classes)}

    @property
    def mean_ap(self) -> float:
        """Mean of the labels' average precisions, over the labels with a positive image: the paper's mAP."""
        values = [v for v in self.ap.values() if v is not None]
        return float(np.mean(values)) if values else 0.0

    @property
    def micro_ap(self) -> float:
        """Average precision of every (image, label) decision pooled."""
        return average_precision(self.scores.flatten(), self.targets.flatten()) or 0.0

    def per_label(self) -> dict[str, dict[str, float | int | None]]:
        """Each label's AP, and precision, recall and F1 of predicting it from ``threshold``, and support."""
        predicted, actual = self.scores >= self.threshold, self.targets > 0.5
        tp = (predicted & actual).sum(0).double()
        precision = tp / predicted.sum(0).clamp(min=1)
        recall = tp / actual.sum(0).clamp(min=1)
        f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
        return {
            name: {
                "ap": ap,
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(actual[:, i].sum()),
            }
            for i, (name, ap) in enumerate(self.ap.items())
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "resolution": self.resolution,
            "task": MULTILABEL,
            "mean_ap": self.mean_ap,
            "micro_ap": self.micro_ap,
            "threshold": self.threshold,
            "loss": self.loss,
            "images": self.count,
            "skipped": self.skipped,
            "per_label": self.per_label(),
            "classes": self.classes,
        }

    def headline(self) -> str:
        return f"mean AP    {100 * self.mean_ap:.2f} % (micro-average {100 * self.micro_ap:.2f} %)"

    def format(self) -> str:
        def pct(value: float | None) -> str:
            return "-" if value is None else f"{100 * value:.1f}"

        rows = [
            [name, pct(m["ap"]), pct(m["f1"]), pct(m["precision"]), pct(m["recall"]), m["support"]]
            for name, m in self.per_label().items()
        ]
        at = f"@{self.threshold:g}"
        headers = ["label", "AP %", f"F1{at} %", f"precision{at} %", f"recall{at} %", "support"]
        table = tabulate(rows, headers, colalign=("left", *["right"] * 5))
        skipped = f", {self.skipped} unreadable skipped" if self.skipped else ""
        return (
            f"{table}\n\nmean AP {100 * self.mean_ap:.2f} % (micro-average AP {100 * self.micro_ap:.2f} %), "
            f"loss {self.loss:.4f} on {self.count:,} images{skipped}"
        )


def _pr_steps(scores: torch.Tensor, targets: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) drawn as steps whose area is the AP: precision P_k over (R_{k-1}, R_k], from (0, 1)."""
    precision, recall = precision_recall(scores, targets)
    return np.r_[0.0, recall.numpy()], np.r_[1.0, precision.numpy()]


def plot_pr_curves(result: MultiLabelResult, path: str | Path, title: str = "") -> None:
    """Each label's precision-recall curve (with its AP in the legend) and the micro-average's, as a PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, 6), layout="constrained")
    ax = fig.subplots()
    colours = [fig.colormaps["tab20"](i % 20) for i in range(len(result.classes))] if len(result.classes) > 10 else None
    for i, (name, ap) in enumerate(result.ap.items()):
        if ap is None:
            continue
        colour = {"color": colours[i]} if colours else {}
        recall, precision = _pr_steps(result.scores[:, i], result.targets[:, i])
        ax.step(recall, precision, where="pre", lw=1.2, alpha=0.85, label=f"{name} (AP {100 * ap:.1f})", **colour)
    recall, precision = _pr_steps(result.scores.flatten(), result.targets.flatten())
    micro = f"micro-average (AP {100 * result.micro_ap:.1f})"
    ax.step(recall, precision, where="pre", color="black", lw=2.5, label=micro)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    stats = f"mean AP {100 * result.mean_ap:.2f} % on {result.count:,} images"
    ax.set_title(f"{title}\n{stats}" if title else stats, fontsize=10)
    _save(fig, path)


# --- loss and evaluation -------------------------------------------------------------------------


def multilabel_loss(
    logits: torch.Tensor,
    targets: torch.Tensor | None,
    *,
    teacher: torch.Tensor | None = None,
    alpha: float = 0.0,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per image (N,) from logits (N, labels): BCE against 0/1 ``targets`` (None: not read, so
    ``alpha`` must be 1), mixed with ``alpha`` times the distillation term (see the module)."""
    loss = logits.new_zeros(len(logits))
    if alpha < 1:
        if targets is None:
            raise ValueError("labels are needed unless distill_alpha is 1")
        loss = (1 - alpha) * F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1)
    if teacher is not None and alpha > 0:
        soft = torch.sigmoid(teacher / temperature)
        entropy = F.binary_cross_entropy_with_logits(teacher / temperature, soft, reduction="none")
        cross = F.binary_cross_entropy_with_logits(logits / temperature, soft, reduction="none")
        loss = loss + alpha * temperature**2 * (cross - entropy).mean(1)
    return loss


@torch.no_grad()
def evaluate_multilabel(
    model: nn.Module,
    loader: DataLoader,
    *,
    classes: list[str],
    device: torch.device,
    env: Dist | None = None,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    threshold: float = DEFAULT_THRESHOLD,
) -> MultiLabelResult:
    """Run ``model`` (in eval mode) over ``loader`` of (image, 0/1 target) batches; the scores of a
    ``torchrun`` job's processes are gathered on each."""
    was_training = model.training
    model.eval()
    scores, targets, loss_sum, skipped = [], [], 0.0, 0
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for images, target in loader:
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        target = target.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = model(images).float()
        valid = target[:, 0] != UNREADABLE
        logits, target = logits[valid], target[valid]
        loss_sum += float(F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(1).sum())
        skipped += int((~valid).sum())
        scores.append(logits.sigmoid().cpu())
        targets.append(target.cpu())
    model.train(was_training)
    parts = [(torch.cat(scores), torch.cat(targets), loss_sum, skipped)]
    if env is not None and env.enabled:
        gathered: list[Any] = [None] * env.world_size
        distributed.dist.all_gather_object(gathered, parts[0])
        parts = gathered
    return MultiLabelResult(
        classes=list(classes),
        scores=torch.cat([p[0] for p in parts]),
        targets=torch.cat([p[1] for p in parts]),
        loss_sum=sum(p[2] for p in parts),
        skipped=sum(p[3] for p in parts),
        threshold=threshold,
    )


# --- training ------------------------------------------------------------------------------------


class MultiLabelRunFiles(RunFiles):
    """A multi-label run's files: precision-recall curves where a single-label run has its confusion matrix."""

    PR_CURVES = "pr-curves.png"

    def names(self) -> list[str]:
        return [self.PR_CURVES if name == "confusion.png" else name for name in super().names()]

    def finish(self, evaluation: MultiLabelResult, report: dict[str, Any]) -> None:  # type: ignore[override]
        if self.write:
            plot_pr_curves(evaluation, self.dir / self.PR_CURVES, self.title)
            write_json(self.dir / "report.json", report)


class MultiLabelTrainer(Trainer):
    """A run on multi-label data: sigmoid outputs, binary cross-entropy (and distillation from a
    teacher's probabilities), the best weights by validation mean AP."""

    SCORE = "val_map"
    run_files = MultiLabelRunFiles
    evaluator = staticmethod(evaluate_multilabel)

    def _build_data(self) -> None:
        super()._build_data()
        cfg = self.config
        train_targets, val_targets = targets_of(self.train_set), targets_of(self.val_set)
        if val_targets.isnan().any():
            raise ValueError(f"data {cfg.data!r}: its validation images have no labels; mean AP needs labels")
        distil_only = cfg.teacher is not None and cfg.distill_alpha == 1
        if train_targets.isnan().any() and not distil_only:
            raise ValueError(
                f"data {cfg.data!r}: its training images have no labels; train on them by distillation alone "
                "(--teacher WEIGHTS --distill-alpha 1)"
            )
        self.reads_labels = not distil_only  # with alpha 1, the training labels are never read
        for split, targets in (("training", train_targets if self.reads_labels else None), ("validation", val_targets)):
            empty = int((targets.sum(1) == 0).sum()) if targets is not None else 0
            if empty:
                self.notes.append(f"{empty} {split} images have no label: kept, as negatives for every label")
        labels = "never read (distillation alone)" if distil_only else "binary cross-entropy"
        self.notes.append(f"task: multi-label, a sigmoid per label; training labels {labels}; best weights by mAP")
        self._train_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []  # this epoch's (probabilities, targets)
        self._bar_map = ""

    def _build_teacher(self) -> nn.Module:
        teacher = super()._build_teacher()
        if teacher.meta.labels and list(teacher.meta.labels) != self.classes:
            raise ValueError(
                f"teacher {self.config.teacher!r} has labels {list(teacher.meta.labels)}, the data {self.classes}"
            )
        return teacher

    @property
    def info(self) -> dict[str, Any]:
        return {**super().info, "task": MULTILABEL}

    def _step(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        targets, logits, teacher_logits = self._forward(images, targets)
        valid = targets[:, 0] != UNREADABLE
        count = valid.sum()
        if teacher_logits is not None and not torch.isfinite(teacher_logits[valid]).all():
            raise self._teacher_not_finite("its weights or these images are broken")
        per_image = multilabel_loss(
            logits,
            targets if self.reads_labels else None,
            teacher=teacher_logits,
            alpha=cfg.distill_alpha if self.teacher is not None else 0.0,
            temperature=cfg.distill_temperature,
        )
        loss_sum = per_image[valid].sum()
        self.optimisation.step(loss_sum / count.clamp(min=1), self.net.parameters(), cfg.grad_clip)
        if self.ema:
            self.ema.update(self.net)
        if self.reads_labels:
            self._train_outputs.append((logits.detach()[valid].sigmoid(), targets[valid]))
        zero = count.new_zeros(())  # SUMS' "correct": no single-label accuracy here
        return torch.stack([loss_sum.detach(), zero, count, (~valid).sum()]).double()

    def _train_map(self) -> float | None:
        """Mean AP of this process's training images so far this epoch (None when labels are not read)."""
        if not self._train_outputs:
            return None
        scores, targets = (torch.cat(parts).cpu() for parts in zip(*self._train_outputs, strict=True))
        return MultiLabelResult(classes=self.classes, scores=scores, targets=targets, loss_sum=0, skipped=0).mean_ap

    def _bar_figures(self, sums: torch.Tensor, last: bool) -> dict[str, str]:
        loss_sum, _, seen, _ = sums.tolist()
        if self.reads_labels and (last or self.progress.step_in_epoch % BAR_EVERY == 1):
            train_map = self._train_map()
            self._bar_map = f"{train_map:.3f}" if train_map is not None else ""
        return {"loss": f"{loss_sum / max(seen, 1):.4f}", **({"mAP": self._bar_map} if self._bar_map else {})}

    def _score(self, result: MultiLabelResult) -> float:  # type: ignore[override]
        return result.mean_ap

    def _train_figures(self) -> tuple[dict[str, float], str]:
        train_loss = self.progress.partial["loss_sum"] / max(self.progress.partial["seen"], 1)
        train_map = self._train_map()
        self._train_outputs.clear()
        figures = {"train_loss": train_loss} | ({"train_map": train_map} if train_map is not None else {})
        train_text = f" mAP {100 * train_map:.2f} %" if train_map is not None else ""
        return figures, f"train loss {train_loss:.4f}{train_text}"

    def _val_figures(  # type: ignore[override]
        self, raw: MultiLabelResult, ema: MultiLabelResult | None
    ) -> tuple[dict[str, float], str]:
        figures = {"val_loss": raw.loss, "val_map": raw.mean_ap}
        if ema:
            figures.update(ema_val_loss=ema.loss, ema_val_map=ema.mean_ap)
        ema_text = f" (EMA {100 * ema.mean_ap:.2f} %)" if ema else ""
        return figures, f"val loss {raw.loss:.4f} mAP {100 * raw.mean_ap:.2f} %{ema_text}"
