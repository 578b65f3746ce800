"""Verification and retrieval metrics of embeddings: TAR at a fixed FAR, the ROC, recall@k.

Every pair of distinct images is compared by the cosine similarity of their embeddings: a pair of
the same class is *genuine*, of different classes an *impostor* pair. Accepting the pairs scoring
above a threshold, the false-accept rate (FAR) is the share of impostor pairs accepted and the
true-accept rate (TAR) the share of genuine pairs accepted. TAR at FAR = f takes the threshold that
accepts at most ``f`` of the impostor pairs: it is resolved only with at least ``1 / f`` impostor
pairs (10^4 for f = 1e-4), which n images give from n ≈ 150 on (n (n - 1) / 2 pairs, most of them
impostors when there are several classes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

FARS = (1e-4, 1e-3)  # the false-accept rates reported (the paper's Table 14 uses 1e-4)
RECALL_AT = (1, 5)


def pair_scores(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities of all pairs i < j of ``embeddings`` (N, D), split by ``labels`` (N,)
    into (genuine scores, impostor scores), float64 on the CPU."""
    x = F.normalize(embeddings.detach().double().cpu(), dim=1)
    labels = labels.cpu()
    i, j = torch.triu_indices(len(x), len(x), offset=1)
    scores = (x @ x.T)[i, j]
    same = labels[i] == labels[j]
    return scores[same], scores[~same]


def tar_at_far(genuine: torch.Tensor, impostor: torch.Tensor, far: float) -> float:
    """The share of ``genuine`` scores above the threshold that at most ``far`` of the ``impostor``
    scores exceed (the ``floor(far · impostors) + 1``-th highest impostor score)."""
    if not 0 < far < 1:
        raise ValueError(f"far must be in (0, 1), got {far}")
    if len(genuine) == 0 or len(impostor) == 0:
        raise ValueError(f"TAR at FAR needs genuine and impostor pairs, got {len(genuine)} and {len(impostor)}")
    allowed = math.floor(far * len(impostor))
    threshold = torch.topk(impostor, allowed + 1).values[-1]
    return (genuine > threshold).double().mean().item()


def roc_curve(genuine: torch.Tensor, impostor: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(FAR, TAR) at every threshold, from accepting nothing to accepting every pair (as scikit-learn's
    ``roc_curve``, which is not a dependency: here one sort and two running sums)."""
    scores = torch.cat([genuine, impostor])
    is_genuine = torch.cat([torch.ones(len(genuine)), torch.zeros(len(impostor))]).double()
    order = torch.argsort(scores, descending=True)
    accepted_genuine = torch.cumsum(is_genuine[order], 0)
    accepted_impostor = torch.arange(1, len(scores) + 1, dtype=torch.float64) - accepted_genuine
    # One point per distinct score: tied scores are accepted together.
    last = torch.ones(len(scores), dtype=torch.bool)
    last[:-1] = scores[order][1:] != scores[order][:-1]
    far = np.concatenate([[0.0], (accepted_impostor[last] / max(len(impostor), 1)).numpy()])
    tar = np.concatenate([[0.0], (accepted_genuine[last] / max(len(genuine), 1)).numpy()])
    return far, tar


def recall_at_k(embeddings: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = RECALL_AT) -> dict[int, float]:
    """Retrieval: for each image used as a query, whether one of its ``k`` nearest others (cosine)
    has its class; the share of queries for which it does. Queries alone in their class are left out."""
    x = F.normalize(embeddings.detach().double().cpu(), dim=1)
    labels = labels.cpu()
    similarity = x @ x.T
    similarity.fill_diagonal_(-math.inf)
    same = labels[:, None] == labels[None, :]
    queries = (same.sum(1) > 1).nonzero().squeeze(1)
    if len(queries) == 0:
        raise ValueError("recall@k needs a class with at least 2 images")
    nearest = similarity[queries].topk(min(max(ks), len(x) - 1), dim=1).indices
    hits = same[queries[:, None], nearest]
    return {k: hits[:, :k].any(1).double().mean().item() for k in ks}


@dataclass(kw_only=True)
class Verification:
    """Verification and retrieval on a set of images (of classes held out of training)."""

    images: int
    classes: int
    genuine_pairs: int
    impostor_pairs: int
    tar: dict[float, float]  # FAR -> TAR
    recall: dict[int, float]  # k -> recall@k
    roc: tuple[np.ndarray, np.ndarray] = field(repr=False)  # (FAR, TAR)

    def resolved(self, far: float) -> bool:
        """Whether there are enough impostor pairs (at least 1 / far) for TAR at ``far`` to mean something."""
        return self.impostor_pairs * far >= 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "classes": self.classes,
            "genuine_pairs": self.genuine_pairs,
            "impostor_pairs": self.impostor_pairs,
            **{f"tar_at_far_{far:g}": tar for far, tar in self.tar.items()},
            **{f"recall_at_{k}": r for k, r in self.recall.items()},
        }

    def format(self) -> str:
        tars = ", ".join(
            f"{100 * tar:.2f} % at FAR {far:g}" + ("" if self.resolved(far) else " (too few impostor pairs)")
            for far, tar in self.tar.items()
        )
        recalls = ", ".join(f"@{k} {100 * r:.2f} %" for k, r in self.recall.items())
        return "\n".join(
            [
                f"  pairs      {self.genuine_pairs:,} genuine, {self.impostor_pairs:,} impostor among "
                f"{self.images:,} images of {self.classes} classes",
                f"  verify     TAR {tars}",
                f"  retrieval  recall {recalls}",
            ]
        )


def verify(embeddings: torch.Tensor, labels: torch.Tensor, *, fars: tuple[float, ...] = FARS) -> Verification:
    """All-pairs verification (TAR at each of ``fars``, the ROC) and recall@1/5 of ``embeddings``
    (N, D) with their class ``labels`` (N,)."""
    if not torch.isfinite(embeddings).all():
        raise ValueError("embeddings hold NaN or infinite values")
    genuine, impostor = pair_scores(embeddings, labels)
    return Verification(
        images=len(labels),
        classes=len(labels.unique()),
        genuine_pairs=len(genuine),
        impostor_pairs=len(impostor),
        tar={far: tar_at_far(genuine, impostor, far) for far in fars},
        recall=recall_at_k(embeddings, labels),
        roc=roc_curve(genuine, impostor),
    )


def plot_roc(results: dict[str, Verification], path: str | Path, title: str = "") -> None:
    """The ROC curves of ``results`` (label -> verification) on a log FAR axis, written as a PNG."""
    from matplotlib.figure import Figure

    from .records import _save

    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    for label, result in results.items():
        far, tar = result.roc
        floor = 1 / max(result.impostor_pairs, 1)
        ax.plot(np.maximum(far, floor), tar, label=label)
    for far in FARS:
        ax.axvline(far, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("false-accept rate (impostor pairs accepted)")
    ax.set_ylabel("true-accept rate")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title or "verification ROC")
    _save(fig, path)
