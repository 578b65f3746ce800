"""Embeddings of image files: :func:`load_embedder`, :func:`embed_files`, :func:`save_embeddings`.

An embedder is an :class:`~mobilenets.models.embedding.EmbeddingNet` from ``mobilenets embed train``
(its weights record the model, its arguments and ``dim``), or any classification model of ours
given by name (weights from ``train``, a converted file or ``"pretrained"``) whose pooled features
(``num_classes=0``) are the embedding. Every embedding is L2-normalised, so that dot products
are cosine similarities. Images are read and prepared as ``predict`` reads them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn
from torch.nn import functional as F

from .checkpoint import atomic_write
from .data.decode import decode_image, mode_for
from .device import resolve_device
from .models.embedding import EMBEDDING, create_embedding_model
from .predict import preprocessing
from .weights import WeightsFile, model_from, read_weights_source

EMBEDDINGS_FORMAT = "mobilenets-embeddings"


def load_embedder(
    weights: str | os.PathLike | WeightsFile, name: str | None = None, *, defaults: dict[str, Any] | None = None
) -> nn.Module:
    """The model of ``weights`` (a path, ``"pretrained"`` or a file already read): an embedding model
    when the file is one from ``embed train``, else the classification model ``name`` (or the one
    the file records) with ``num_classes=0``. ``defaults``: ``create_model`` arguments the file
    does not record (``in_chans``...)."""
    source = weights if isinstance(weights, WeightsFile) else read_weights_source(weights, name or "")
    info = source.info
    if info.get("task") == EMBEDDING:
        model = create_embedding_model(info["model"], dim=info["dim"], **info["model_args"])
        model.load_state_dict(source.state)
        return model
    return model_from(source, name, defaults, num_classes=0)


def output_dim(model: nn.Module) -> int:
    """The length of ``model``'s embedding: its ``dim``, or its pooled features' count."""
    return getattr(model, "dim", None) or model.num_features


@torch.no_grad()
def embed_files(
    model: nn.Module,
    paths: list[Path],
    *,
    device: str | torch.device | None = None,
    batch_size: int = 32,
    on_unreadable: Callable[[Path, Exception], None] | None = None,
) -> torch.Tensor:
    """L2-normalised embeddings (N, D), float32 on the CPU, of the image files ``paths`` prepared as
    ``model.meta`` prescribes, in their order.

    A file that cannot be read raises its ``ValueError``/``FileNotFoundError`` (one line naming it),
    or with ``on_unreadable`` is passed to it with that error and left out (N is then the readable
    files' count); ``ValueError`` when none is readable."""
    if not paths:
        raise ValueError("no images to embed")
    target = resolve_device(device) if not isinstance(device, torch.device) else device
    model = model.to(target).eval()
    transform = preprocessing(model.meta)
    mode = mode_for(model.meta.in_chans)

    def read(path: Path) -> torch.Tensor | None:
        try:
            return transform(decode_image(path, mode=mode))
        except (ValueError, FileNotFoundError) as err:
            if on_unreadable is None:
                raise
            on_unreadable(path, err)
            return None

    out = []
    for start in range(0, len(paths), batch_size):
        images = [image for path in paths[start : start + batch_size] if (image := read(path)) is not None]
        if images:
            out.append(F.normalize(model(torch.stack(images).to(target)).float(), dim=1).cpu())
    if not out:
        raise ValueError(f"none of the {len(paths)} images could be read")
    return torch.cat(out)


def save_embeddings(path: str | os.PathLike, paths: list[Path], embeddings: torch.Tensor, **info: Any) -> None:
    """Write ``embeddings`` (N, D) and their image ``paths`` (and ``info``: the model...) to a
    safetensors file: tensor ``embeddings``, metadata ``paths`` (a JSON list)."""
    if len(paths) != len(embeddings):
        raise ValueError(f"{len(paths)} paths for {len(embeddings)} embeddings")
    metadata = {"format": EMBEDDINGS_FORMAT, "paths": json.dumps([str(p) for p in paths]), "info": json.dumps(info)}
    atomic_write(path, save({"embeddings": embeddings.contiguous()}, metadata=metadata))


def read_embeddings(path: str | os.PathLike) -> tuple[list[str], torch.Tensor, dict[str, Any]]:
    """(image paths, embeddings (N, D), info) from a file of :func:`save_embeddings`."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"embeddings file {str(path)!r} not found")
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{str(path)!r} is not a safetensors file: {err}") from None
    if metadata.get("format") != EMBEDDINGS_FORMAT:
        raise ValueError(f"{str(path)!r} is not an embeddings file of `mobilenets embed`")
    return json.loads(metadata["paths"]), tensors["embeddings"], json.loads(metadata["info"])
