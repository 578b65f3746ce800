"""Device choice shared by training, evaluation, deployment and prediction."""

from __future__ import annotations

import torch


def resolve_device(device: str | None, local_rank: int = 0) -> torch.device:
    """``device`` if given (a torch device string), else CUDA (this process's GPU) when available, else CPU."""
    if device is None:
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}") from err
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
        if resolved.index is None:
            resolved = torch.device("cuda", local_rank)
    return resolved
