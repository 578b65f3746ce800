"""Building blocks shared by every model family.

All blocks take and return NCHW tensors. Two padding conventions are supported:

* ``"symmetric"``: PyTorch's fixed padding of ``dilation * (k - 1) // 2`` on every side.
* ``"same"``: TensorFlow's "SAME" padding, computed from the input size at run time. On a
  stride-2 layer with an even input TF pads 0 before and 1 after, so weights trained in
  TensorFlow only reproduce their outputs exactly with this mode.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Padding = Literal["symmetric", "same"]
PADDINGS: tuple[str, ...] = ("symmetric", "same")

# ReLU6 is the default everywhere: the released TensorFlow MobileNets were trained with it,
# and its bounded range keeps activations friendly to int8 quantization.
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "relu6": nn.ReLU6}
DEFAULT_ACTIVATION = "relu6"


def make_activation(name: str | None) -> nn.Module:
    """Return a fresh activation module by name; ``None`` gives an identity (a linear layer)."""
    if name is None:
        return nn.Identity()
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name](inplace=True)


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF "SAME" padding (before, after) along one axis of length ``size``.

    The output has ``ceil(size / stride)`` elements; any odd total goes after.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding computed per input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        x = F.pad(x, [left, right, top, bottom])
        return self._conv_forward(x, self.weight, self.bias)


def conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    bias: bool = False,
    padding: Padding = "symmetric",
) -> nn.Conv2d:
    """A 2-D convolution with the chosen padding convention (odd ``kernel_size`` only)."""
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {list(PADDINGS)}, got {padding!r}")
    # With stride 1 and an odd kernel, TF "SAME" is symmetric: no run-time padding needed.
    if padding == "same" and stride > 1:
        return Conv2dSame(in_channels, out_channels, kernel_size, stride, 0, dilation, groups, bias)
    pad = dilation * (kernel_size - 1) // 2
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, pad, dilation, groups, bias)


class ConvBNAct(nn.Sequential):
    """Convolution, BatchNorm, then activation (``activation=None`` for a linear layer).

    Shape: (N, in_channels, H, W) -> (N, out_channels, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        activation: str | None = DEFAULT_ACTIVATION,
        padding: Padding = "symmetric",
    ) -> None:
        super().__init__()
        self.conv = conv2d(in_channels, out_channels, kernel_size, stride, dilation, groups, False, padding)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = make_activation(activation)


class DepthwiseSeparable(nn.Sequential):
    """The MobileNet block: 3×3 depthwise conv, BN, act; then 1×1 pointwise conv, BN, act.

    Shape: (N, in_channels, H, W) -> (N, out_channels, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        dilation: int = 1,
        activation: str = DEFAULT_ACTIVATION,
        padding: Padding = "symmetric",
    ) -> None:
        super().__init__()
        self.dw = ConvBNAct(in_channels, in_channels, 3, stride, dilation, in_channels, activation, padding)
        self.pw = ConvBNAct(in_channels, out_channels, 1, activation=activation)
