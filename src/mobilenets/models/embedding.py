"""Embedding models: a classification backbone's pooled features, projected to D dimensions and
L2-normalised (FaceNet's output layer), so that the dot product of two embeddings is their cosine
similarity and their squared distance ``2 - 2 cos``."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..registry import create_model

EMBEDDING = "embedding"  # the task a weights file of an embedding model records
DEFAULT_DIM = 128  # FaceNet's embedding size
MAX_DIM = 65536


def check_dim(dim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_DIM:
        raise ValueError(f"dim must be an integer in [1, {MAX_DIM}], got {dim!r}")
    return dim


class EmbeddingNet(nn.Module):
    """``backbone`` (built with ``num_classes=0``: pooled features) → linear projection to ``dim`` →
    L2 normalisation. ``forward``: (N, C, H, W) -> (N, dim), each row of unit length.

    ``meta`` is the backbone's (input size, channels, normalisation), with ``num_classes`` the ``dim``.
    """

    def __init__(self, backbone: nn.Module, dim: int = DEFAULT_DIM) -> None:
        super().__init__()
        if getattr(backbone, "num_classes", None) != 0:
            raise ValueError("backbone must be built with num_classes=0 (its pooled features are projected)")
        self.backbone = backbone
        self.dim = check_dim(dim)
        self.projection = nn.Linear(backbone.num_features, dim)
        self.meta = replace(backbone.meta, num_classes=dim, labels=())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(self.backbone(x)), dim=1)


def create_embedding_model(name: str, *, dim: int = DEFAULT_DIM, **model_args: Any) -> EmbeddingNet:
    """The registered classification model ``name`` (``create_model`` arguments ``model_args``, less
    ``num_classes``) as a ``dim``-dimensional embedding model."""
    if model_args.get("num_classes", 0) != 0:
        raise ValueError(
            f"an embedding model has no classifier: num_classes must be 0, got {model_args['num_classes']}"
        )
    return EmbeddingNet(create_model(name, **{**model_args, "num_classes": 0}), dim)
