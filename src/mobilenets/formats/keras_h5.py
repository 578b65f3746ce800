"""Keras HDF5 weights files, read with h5py (the optional ``formats`` extra), without Keras.

Three layouts: the legacy weights-only file of the released Keras applications (root attribute
``layer_names``, one group per layer whose attribute ``weight_names`` names its datasets in order),
the legacy full-model ``.h5`` (the same under a ``model_weights`` group) and Keras 3's
``.weights.h5`` (``layers/<class-derived name>/vars/<i>``, the layer's name in the attribute
``name`` of ``vars``). :func:`read_keras_h5` gives ``{"<layer>.<weight|bias|running_mean|running_var>":
tensor}`` in PyTorch's layouts, ready for a family's ``"keras"`` layout.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import first_line

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# The released TF and Keras MobileNets take pixels scaled to [-1, 1].
KERAS_NORMALISATION = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
# Keras 3's variables of a layer, in order, by the class its group is named after.
_KERAS3_VARIABLES = {
    "conv2d": ("kernel", "bias"),
    "depthwise_conv2d": ("depthwise_kernel", "bias"),
    "dense": ("kernel", "bias"),
    "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance"),
}
_TORCH_NAMES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


def is_hdf5(path: Path) -> bool:
    """Whether ``path`` starts with the HDF5 signature."""
    with path.open("rb") as file:
        return file.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE


def read_keras_h5(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, info) of a Keras HDF5 weights file.

    Kernels HWIO -> OIHW, depthwise (H, W, C, 1) -> (C, 1, H, W), Dense (in, out) -> (out, in);
    each BatchNorm also gets ``num_batches_tracked`` 0 (Keras has none). ``info`` records what a
    model needs to compute what Keras computes: ``model_args`` (``batchnorm="tf"``, Keras's epsilon
    1e-3; ``padding``: "keras" for MobileNet V1, TF "SAME" otherwise) and the [-1, 1] ``mean``/``std``.
    Raises ``ValueError`` (one line) for a file h5py cannot open or that holds no Keras weights.
    """
    try:
        import h5py
    except ImportError:
        raise ValueError(
            f"weights file {str(path)!r} is HDF5 (Keras), which needs h5py: pip install 'mobilenets[formats]'"
        ) from None
    try:
        with h5py.File(path, "r") as file:
            weights = _keras3_weights(file) if "layer_names" not in _root(file).attrs else _legacy_weights(_root(file))
        state = _state_dict(weights)
    # Truncated or damaged files fail in h5py, and odd contents in numpy, in many ways.
    except (OSError, KeyError, TypeError, ValueError) as err:
        reason = first_line(err)
        raise ValueError(f"weights file {str(path)!r} could not be read as Keras HDF5: {reason}") from None
    if not weights:
        raise ValueError(
            f"weights file {str(path)!r} is HDF5 but holds no Keras weights "
            "(neither the 'layer_names' attribute nor Keras 3's 'layers' group)"
        )
    # Keras's MobileNet V1 pads its strided depthwise layers by a fixed amount (layers.py, "keras").
    padding = "keras" if "conv_dw_1" in weights else "same"
    return state, {"model_args": {"batchnorm": "tf", "padding": padding}, **KERAS_NORMALISATION}


def _state_dict(weights: dict[str, list[tuple[str, np.ndarray]]]) -> dict[str, torch.Tensor]:
    """``{"<layer>.<PyTorch name>": tensor}``, with ``num_batches_tracked`` 0 for each BatchNorm."""
    state: dict[str, torch.Tensor] = {}
    for layer, variables in weights.items():
        for name, value in variables:
            key = _TORCH_NAMES.get(name, "weight" if name.endswith("kernel") else name)
            state[f"{layer}.{key}"] = _to_torch(name, value)
        if any(name == "moving_variance" for name, _ in variables):
            state[f"{layer}.num_batches_tracked"] = torch.tensor(0)
    return state


def _root(file: Any) -> Any:
    """The group holding the layers: ``model_weights`` in a full-model file, else the file."""
    return file.get("model_weights", file)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _legacy_weights(root: Any) -> dict[str, list[tuple[str, np.ndarray]]]:
    """``{layer: [(variable, array)]}`` in ``weight_names`` order (h5py would list them alphabetically)."""
    weights = {}
    for layer in map(_text, root.attrs["layer_names"]):
        names = [_text(name) for name in root[layer].attrs["weight_names"]]
        if names:
            # "conv1/kernel:0" (Keras 2) or "conv1/kernel" (Keras 3): the variable is the last part.
            weights[layer] = [(name.rsplit("/", 1)[-1].split(":")[0], root[layer][name][()]) for name in names]
    return weights


def _keras3_weights(file: Any) -> dict[str, list[tuple[str, np.ndarray]]]:
    """``{layer: [(variable, array)]}`` of Keras 3's ``layers/<class>[_<n>]/vars/<i>`` groups."""
    weights = {}
    for group_name, group in file["layers"].items() if "layers" in file else ():
        variables = group.get("vars")
        if variables is None or not len(variables):
            continue
        kind = re.sub(r"_\d+$", "", group_name)  # "conv2d_12" -> "conv2d"
        if kind not in _KERAS3_VARIABLES or "name" not in variables.attrs:
            raise ValueError(f"layer group {group_name!r} is not one of {sorted(_KERAS3_VARIABLES)} with a name")
        arrays = [variables[index][()] for index in sorted(variables, key=int)]
        weights[_text(variables.attrs["name"])] = list(zip(_KERAS3_VARIABLES[kind], arrays, strict=False))
    return weights


def _to_torch(name: str, value: np.ndarray) -> torch.Tensor:
    """A Keras variable in PyTorch's layout. A 4-D kernel of one output channel is depthwise
    (Keras 3's legacy files call it ``kernel``) unless it is 1×1 (a depthwise layer is never 1×1)."""
    tensor = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    if name.endswith("kernel") and tensor.dim() == 4:
        depthwise = name == "depthwise_kernel" or (tensor.shape[3] == 1 and tensor.shape[:2] != (1, 1))
        return (tensor.permute(2, 3, 0, 1) if depthwise else tensor.permute(3, 2, 0, 1)).contiguous()
    if name.endswith("kernel") and tensor.dim() == 2:
        return tensor.T.contiguous()
    return tensor
