"""Inference preparation: BatchNorm folded into the convolutions before it, channels_last.

Folding rewrites ``conv → bn`` as one convolution with a bias: with ``s = γ / sqrt(σ² + ε)``,
``w' = w · s`` (per output channel) and ``b' = (b − μ) · s + β``. Pairs are found inside
containers that run ``nn.Sequential``'s own forward (or :class:`~mobilenets.layers.ConvBNAct`'s, the same
data flow), where consecutive children are consecutive in the data flow; that covers ConvBNAct and
every block built from it. Activations are left
as modules: each runtime fuses them into the convolution itself (ONNX Runtime ``FusedConv``,
OpenVINO post-ops, inductor), while eager PyTorch has no fused fp32 kernel for them.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

from ..layers import ConvBNAct


def input_shape(model: nn.Module, resolution: int) -> tuple[int, int, int]:
    """(C, H, W) of one input image: the first convolution's input channels, ``resolution``²."""
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    return first.in_channels, resolution, resolution


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A copy of ``conv`` that computes ``bn(conv(x))`` in eval mode (``bn`` must track running stats)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"bn must track running statistics to be folded, got {bn}")
    fused = copy.deepcopy(conv)
    with torch.no_grad():
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        shift = (bias - bn.running_mean) * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        fused.bias = nn.Parameter(shift.to(conv.weight.dtype))
    return fused


def _fold_in_place(module: nn.Module) -> int:
    """Fold every Conv2d → BatchNorm2d pair below ``module``; return how many were folded."""
    folded = 0
    if isinstance(module, nn.Sequential) and type(module).forward in (nn.Sequential.forward, ConvBNAct.forward):
        names = list(module._modules)
        for first, second in itertools.pairwise(names):
            conv, bn = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                module._modules[first] = fold_conv_bn(conv, bn)
                module._modules[second] = nn.Identity()
                folded += 1
    for child in module.children():
        folded += _fold_in_place(child)
    return folded


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every sequential Conv2d → BatchNorm2d pair folded.

    The copy keeps ``model``'s attributes (``meta`` included); BatchNorm layers that do not
    directly follow a convolution are kept as they are.
    """
    folded = copy.deepcopy(model).eval()
    _fold_in_place(folded)
    return folded


def prepare_for_inference(
    model: nn.Module, device: torch.device | str | None = None, channels_last: bool = True
) -> nn.Module:
    """BatchNorm folded, eval mode, gradients off, on ``device``, weights in channels_last if asked.

    Feed it channels_last inputs too (``x.contiguous(memory_format=torch.channels_last)``): the
    convolutions then run without layout conversions.
    """
    prepared = fold_batchnorm(model)
    if device is not None:
        prepared = prepared.to(device)
    if channels_last:
        prepared = prepared.to(memory_format=torch.channels_last)
    prepared.requires_grad_(False)
    return prepared
