"""Checkpoints and weight files: safetensors for tensors, JSON for the rest; no pickle anywhere.

A *checkpoint* (``last.safetensors``) holds everything a run needs to continue: model, EMA,
optimiser, scheduler, gradient scaler, RNG and data-order state. Nested state is flattened: each
tensor is stored under its path (``optimizer/state/0/square_avg``) and the remaining structure is
JSON in the file's metadata. A *weights* file (``best.safetensors``) holds one ``state_dict`` with
plain keys, ready for ``model.load_state_dict``, and JSON metadata describing the model.

Every file is written atomically: to a temporary file in the same folder, flushed to disk, then
renamed over the old one, so a failure mid-way leaves the previous file intact; a destination is
checked before any long work (:func:`check_writable_file`).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

CHECKPOINT_FORMAT = "mobilenets-checkpoint-v1"
WEIGHTS_FORMAT = "mobilenets-weights-v1"
_TENSOR = "$tensor"
_ITEMS = "$items"


def _write_chunks(f: Any, data: bytes) -> None:
    f.write(data)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: bytes, *, backup: str | os.PathLike | None = None) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix.

    The file gets the mode a plain ``open`` would give (0666 less the umask). With ``backup``, the
    old file (if any) is renamed to ``backup`` once the new data is safely on disk. A failure
    (a full disk, no permission) raises ``OSError`` naming ``path`` and leaves the old files intact.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp creates 0600 whatever the umask
            _write_chunks(f, data)
            f.flush()
            os.fsync(f.fileno())
        if backup is not None and path.is_file():
            os.replace(path, backup)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            # The temporary file's name means nothing to the user: name the file being written.
            raise OSError(err.errno, err.strerror or str(err), str(path)) from None
        raise


def check_writable_file(path: str | Path, option: str, *, make_folder: bool = False) -> Path:
    """``path`` as a file that can be written: not a folder, in an existing folder (``make_folder``:
    created). Raises ``ValueError`` naming ``option`` and the user's path."""
    if not str(path).strip():
        raise ValueError(f"{option} must be a file path, got {str(path)!r}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {str(path)!r} is a folder; give a file path")
    blocking = next((folder for folder in path.parents if folder.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise ValueError(f"{option} {str(path)!r} cannot be written: {str(blocking)!r} is a file, not a folder")
    if not make_folder and not path.parent.is_dir():
        raise ValueError(f"{option} {str(path)!r} cannot be written: folder {str(path.parent)!r} does not exist")
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab"):  # a real attempt: permissions alone do not tell (root, read-only mounts, /proc)
            pass
    except OSError as err:
        raise ValueError(f"{option} {str(path)!r} cannot be written: {err.strerror}") from err
    if not existed:
        path.unlink()
    return path


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode())


def flatten(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "") -> Any:
    """Move every tensor of a nested structure into ``tensors`` (by path); return the JSON-able rest."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {_TENSOR: prefix}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: flatten(v, tensors, f"{prefix}/{k}" if prefix else k) for k, v in obj.items()}
        return {_ITEMS: [[k, flatten(v, tensors, f"{prefix}/{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [flatten(v, tensors, f"{prefix}/{i}") for i, v in enumerate(obj)]
    return obj


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten` (tuples come back as lists)."""
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if _ITEMS in obj:
            return {k: unflatten(v, tensors) for k, v in obj[_ITEMS]}
        return {k: unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
    return obj


def save_checkpoint(
    path: str | os.PathLike, state: dict[str, Any], *, previous: str | os.PathLike | None = None
) -> None:
    """Atomically write a nested training ``state`` (tensors, numbers, strings, lists, dicts); with
    ``previous``, the checkpoint it replaces is kept there."""
    tensors: dict[str, torch.Tensor] = {}
    rest = flatten(state, tensors)
    data = save(tensors, metadata={"format": CHECKPOINT_FORMAT, "state": json.dumps(rest)})
    atomic_write(path, data, backup=previous)


def _read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights {str(path)!r} is not a file")
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
        return load_file(path), metadata
    except SafetensorError as err:
        raise ValueError(f"{str(path)!r} cannot be read (truncated or not a safetensors file): {err}") from None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on the CPU)."""
    tensors, metadata = _read_safetensors(path)
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{str(path)!r} is not a mobilenets training checkpoint")
    try:
        return unflatten(json.loads(metadata["state"]), tensors)
    except (KeyError, ValueError) as err:
        raise ValueError(f"{str(path)!r} is a damaged checkpoint: {err!r}") from None


def save_weights(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Atomically write a model ``state_dict`` with ``info`` (model name, arguments, classes...)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    atomic_write(path, save(tensors, metadata={"format": WEIGHTS_FORMAT, "info": json.dumps(info)}))


def read_saved_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, info) from a weights file, a training checkpoint (its EMA weights when it has
    them) or any safetensors file of a bare state_dict (info empty)."""
    tensors, metadata = _read_safetensors(path)
    if metadata.get("format") == CHECKPOINT_FORMAT:
        state = unflatten(json.loads(metadata["state"]), tensors)
        return (state["ema"]["module"] if state.get("ema") else state["model"]), state["info"]
    return tensors, json.loads(metadata.get("info", "{}"))


def rng_state() -> dict[str, Any]:
    """The state of every random generator a run draws from: torch (CPU and CUDA), numpy, random."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": [version, list(internal), gauss],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
