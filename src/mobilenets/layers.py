"""Building blocks shared by every model family.

All blocks take and return NCHW tensors. Two padding conventions are supported:

* ``"symmetric"``: PyTorch's fixed padding of ``dilation * (k - 1) // 2`` on every side.
* ``"same"``: TensorFlow's "SAME" padding, computed from the input size at run time. On a
  stride-2 layer with an even input TF pads 0 before and 1 after, so weights trained in
  TensorFlow only reproduce their outputs exactly with this mode.
* ``"keras"``: Keras's MobileNet V1: "SAME", except that strided depthwise layers pad a fixed
  0 before and 1 after (the "SAME" pads of an even input) whatever the input size. It equals
  "SAME" only while those layers see even sizes (at 200 px the 25-pixel input of the third
  strided depthwise layer gives 12 pixels, not 13).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

Padding = Literal["symmetric", "same", "keras"]
PADDINGS: tuple[str, ...] = ("symmetric", "same", "keras")

# ReLU6 is the default everywhere: the released TensorFlow MobileNets were trained with it,
# and its bounded range keeps activations friendly to int8 quantization.
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "relu6": nn.ReLU6}
DEFAULT_ACTIVATION = "relu6"


@dataclass(frozen=True, kw_only=True)
class BatchNormSettings:
    """BatchNorm's running-statistics update and variance floor."""

    momentum: float  # weight of the new batch in the running statistics (TF's decay is 1 - momentum)
    eps: float


# "torch": PyTorch's own defaults, which torchvision's MobileNetV2 and ShuffleNet V2 weights were
# trained with; the default, so those weights run as trained. "tf": TF-slim's MobileNet training
# (decay 0.997, epsilon 1e-3), a slower running average for the papers' long, large-batch runs.
BATCHNORMS: dict[str, BatchNormSettings] = {
    "torch": BatchNormSettings(momentum=0.1, eps=1e-5),
    "tf": BatchNormSettings(momentum=0.003, eps=1e-3),  # momentum 1 - decay
}
DEFAULT_BATCHNORM = "torch"

# Weights are initialised by PyTorch's defaults for nn.Conv2d and nn.Linear (Kaiming-uniform,
# bound 1/sqrt(fan_in)), not TF-slim's truncated normal: with BatchNorm after every convolution the
# scale of the initial weights barely matters, and seeded models stay as they were.


def make_activation(name: str | None) -> nn.Module:
    """Return a fresh activation module by name; ``None`` gives an identity (a linear layer)."""
    if name is None:
        return nn.Identity()
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name](inplace=True)


def same_padding(size: int, kernel: int, *, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF "SAME" padding (before, after) along one axis of length ``size``.

    The output has ``ceil(size / stride)`` elements; any odd total goes after.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding computed per input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], stride=self.stride[0], dilation=self.dilation[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], stride=self.stride[1], dilation=self.dilation[1])
        x = F.pad(x, [left, right, top, bottom])
        return self._conv_forward(x, self.weight, self.bias)


class Conv2dFixedPad(nn.Conv2d):
    """``nn.Conv2d`` after a fixed, possibly asymmetric zero padding ``pads`` (left, right, top, bottom)."""

    def __init__(self, *args, pads: tuple[int, int, int, int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pads = pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(F.pad(x, list(self.pads)), self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pads={self.pads}"


def conv2d(
    in_channels: int,
    out_channels: int,
    *,
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
    arguments = {"stride": stride, "dilation": dilation, "groups": groups, "bias": bias}
    # With stride 1 and an odd kernel, TF "SAME" is symmetric: no run-time padding needed.
    if padding == "keras" and stride > 1 and groups == in_channels > 1:
        # The "SAME" pads of a size divisible by the stride, whatever the size.
        before, after = same_padding(stride, kernel_size, stride=stride, dilation=dilation)
        return Conv2dFixedPad(in_channels, out_channels, kernel_size, pads=(before, after) * 2, **arguments)
    if padding in ("same", "keras") and stride > 1:
        return Conv2dSame(in_channels, out_channels, kernel_size, padding=0, **arguments)
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size - 1) // 2, **arguments)


# --- Training fast paths ---------------------------------------------------------------------
# In eager CPU training, ConvBNAct computes the same values through cheaper kernels
# (docs/benchmarks.md, "Faster training steps"). A 1×1 convolution over small maps runs as one
# image of N·H rows: oneDNN splits a convolution by image, and a map of a few pixels leaves its GEMM
# kernels idle (bench/pointwise_one_image.py: 1.9–2.2× faster at 1×1 pixels, 1.2× at 2×2, 1.06× at
# 3×3, even at 4×4 and 5×5, slower from 8×8). A depthwise filter over a 1×1 map is its centre tap.
# BatchNorm and its activation are one autograd node, the activation applied in place, without the
# copy that an in-place ReLU6 after BatchNorm makes for autograd.
_ONE_IMAGE_MAX_PIXELS = 9
_fast_paths = True


@contextmanager
def fast_training_paths(enabled: bool) -> Iterator[None]:
    """Turn ConvBNAct's training fast paths on or off within the block (on by default); off, every
    layer runs its PyTorch module, as a reference for tests and benchmarks."""
    global _fast_paths
    previous, _fast_paths = _fast_paths, enabled
    try:
        yield
    finally:
        _fast_paths = previous


def _fast_path_applies(x: torch.Tensor) -> bool:
    """Eager autograd on a plain CPU tensor: not traced, compiled or exported (those see the modules)."""
    return (
        _fast_paths
        and type(x) is torch.Tensor
        and x.device.type == "cpu"
        and torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
    )


def conv1x1_as_one_image(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, groups: int = 1
) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, groups=groups)`` for a 1×1 ``weight`` (out, in / groups, 1, 1) and a
    channels-last ``x`` (N, C, H, W), computed over the batch as one image of N·H rows: (N, out, H, W)."""
    n, _, height, width = x.shape
    # (N, C, H, W) in channels-last memory is (N·H, W, C): a view as one image, no copy.
    rows = x.permute(0, 2, 3, 1).reshape(1, n * height, width, -1).permute(0, 3, 1, 2)
    out = F.conv2d(rows, weight, bias, groups=groups)
    return out.permute(0, 2, 3, 1).reshape(n, height, width, -1).permute(0, 3, 1, 2)


def _conv_fast(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``, by the cheaper kernel where one applies."""
    if type(conv) is not nn.Conv2d or conv.padding_mode != "zeros" or x.dim() != 4:
        return conv(x)
    height, width = x.shape[-2:]
    if (
        conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.padding == (0, 0)
        and height * width <= _ONE_IMAGE_MAX_PIXELS
        and x.is_contiguous(memory_format=torch.channels_last)
    ):
        return conv1x1_as_one_image(x, conv.weight, conv.bias, groups=conv.groups)
    kh, kw = conv.kernel_size
    centred = conv.padding == (conv.dilation[0] * (kh - 1) // 2, conv.dilation[1] * (kw - 1) // 2)
    depthwise = conv.groups == conv.in_channels == conv.out_channels
    if height == width == 1 and kh % 2 == kw % 2 == 1 and centred and depthwise:
        # Over a 1×1 map with "same" padding only the centre tap meets the pixel.
        out = x * conv.weight[:, :, kh // 2, kw // 2].reshape(1, -1, 1, 1)
        return out if conv.bias is None else out + conv.bias.reshape(1, -1, 1, 1)
    return conv(x)


class _BatchNormAct(torch.autograd.Function):
    """Training-mode BatchNorm, then ReLU clipped at ``top`` (6 for ReLU6, ``inf`` for ReLU) or no
    activation (``top=None``), as one autograd node: (N, C, H, W) -> (N, C, H, W)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        running_mean: torch.Tensor,
        running_var: torch.Tensor,
        momentum: float,
        eps: float,
        top: float | None,
    ) -> torch.Tensor:
        y, mean, invstd = torch.native_batch_norm(x, weight, bias, running_mean, running_var, True, momentum, eps)
        if top is not None:
            y.clamp_(0.0, top)
        ctx.save_for_backward(x, y, weight, mean, invstd)
        ctx.eps, ctx.top = eps, top
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if torch.is_grad_enabled():  # backward(create_graph=True): the kernels below are not differentiable
            raise RuntimeError(
                "ConvBNAct's training fast path has no second derivative: "
                "run double backward inside mobilenets.layers.fast_training_paths(False)"
            )
        x, y, weight, mean, invstd = ctx.saved_tensors
        if ctx.top == math.inf:
            grad = torch.ops.aten.threshold_backward(grad, y, 0.0)
        elif ctx.top is not None:
            grad = torch.ops.aten.hardtanh_backward(grad, y, 0.0, ctx.top)
        grad_x, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
            grad, x, weight, None, None, mean, invstd, True, ctx.eps, list(ctx.needs_input_grad[:3])
        )
        return grad_x, grad_weight, grad_bias, None, None, None, None, None


# The clip of each activation :class:`_BatchNormAct` computes (``None``: no activation).
_BATCH_NORM_ACT_TOPS: dict[type[nn.Module], float | None] = {nn.ReLU6: 6.0, nn.ReLU: math.inf, nn.Identity: None}


class ConvBNAct(nn.Sequential):
    """Convolution, BatchNorm, then activation (``activation=None`` for a linear layer).

    Shape: (N, in_channels, H, W) -> (N, out_channels, ceil(H / stride), ceil(W / stride)).
    In eager CPU training it runs the fast paths above (:func:`fast_training_paths`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        activation: str | None = DEFAULT_ACTIVATION,
        padding: Padding = "symmetric",
    ) -> None:
        super().__init__()
        self.conv = conv2d(
            in_channels,
            out_channels,
            kernel_size=kernel_size,
            stride=stride,
            dilation=dilation,
            groups=groups,
            padding=padding,
        )
        settings = BATCHNORMS[DEFAULT_BATCHNORM]
        self.bn = nn.BatchNorm2d(out_channels, eps=settings.eps, momentum=settings.momentum)
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _fast_path_applies(x)):
            return super().forward(x)
        x = _conv_fast(self.conv, x)
        bn = self.bn
        if (
            type(self.act) not in _BATCH_NORM_ACT_TOPS
            or type(bn) is not nn.BatchNorm2d
            or not bn.training
            or not bn.track_running_stats
            or not bn.affine
            or bn.momentum is None
        ):
            return self.act(bn(x))
        bn.num_batches_tracked.add_(1)
        top = _BATCH_NORM_ACT_TOPS[type(self.act)]
        return _BatchNormAct.apply(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.momentum, bn.eps, top)


def depthwise_3x3(
    channels: int,
    *,
    stride: int = 1,
    dilation: int = 1,
    activation: str | None = DEFAULT_ACTIVATION,
    padding: Padding = "symmetric",
) -> ConvBNAct:
    """3×3 depthwise conv–BN–act, one filter per channel: (N, C, H, W) -> (N, C, ⌈H / stride⌉, ⌈W / stride⌉)."""
    return ConvBNAct(
        channels,
        channels,
        kernel_size=3,
        stride=stride,
        dilation=dilation,
        groups=channels,
        activation=activation,
        padding=padding,
    )


class DepthwiseSeparable(nn.Sequential):
    """The MobileNet block: 3×3 depthwise conv, BN, act; then 1×1 pointwise conv, BN, act.

    Shape: (N, in_channels, H, W) -> (N, out_channels, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        activation: str = DEFAULT_ACTIVATION,
        padding: Padding = "symmetric",
    ) -> None:
        super().__init__()
        self.dw = depthwise_3x3(in_channels, stride=stride, dilation=dilation, activation=activation, padding=padding)
        self.pw = ConvBNAct(in_channels, out_channels, kernel_size=1, activation=activation)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: (N, g·k, H, W) -> (N, g·k, H, W), channel i·k + j moved to j·g + i.

    Reshape, transpose, reshape: plain tensor ops, so torch.export and ONNX need no custom operator.
    """
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ChannelShuffle(nn.Module):
    """:func:`channel_shuffle` as a module, so that it shows in the model's structure."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class InvertedResidual(nn.Sequential):
    """The MobileNetV2 bottleneck: 1×1 expansion to t·in channels (skipped for t = 1), 3×3 depthwise,
    linear 1×1 projection; the input is added back when the stride is 1 and channels are equal.

    Shape: (N, in_channels, H, W) -> (N, out_channels, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        expansion: int = 6,
        dilation: int = 1,
        activation: str = DEFAULT_ACTIVATION,
        padding: Padding = "symmetric",
    ) -> None:
        super().__init__()
        hidden = in_channels * expansion
        if expansion != 1:
            self.expand = ConvBNAct(in_channels, hidden, kernel_size=1, activation=activation)
        self.dw = depthwise_3x3(hidden, stride=stride, dilation=dilation, activation=activation, padding=padding)
        # Linear: a ReLU on the thin bottleneck would destroy information (the paper's section 3.2).
        self.project = ConvBNAct(hidden, out_channels, kernel_size=1, activation=None)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return x + out if self.residual else out


class ShuffleUnit(nn.Module):
    """The ShuffleNet unit: grouped 1×1 to out / 4 channels, channel shuffle, 3×3 depthwise (no activation),
    grouped 1×1 (no activation); added to the input, or, in a downsampling unit, concatenated after the
    3×3 average-pooled input; then the activation. ``group_first=False`` leaves the first 1×1 ungrouped
    (the first unit of stage 2, whose input is too thin to group).

    Shape: (N, in_channels, H, W) -> (N, out_channels, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        groups: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: bool = False,
        group_first: bool = True,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        mid = out_channels // 4
        self.gconv1 = ConvBNAct(
            in_channels, mid, kernel_size=1, groups=groups if group_first else 1, activation=activation
        )
        self.shuffle = ChannelShuffle(groups) if group_first else nn.Identity()
        self.dw = ConvBNAct(mid, mid, kernel_size=3, stride=stride, dilation=dilation, groups=mid, activation=None)
        branch_out = out_channels - in_channels if downsample else out_channels
        self.gconv2 = ConvBNAct(mid, branch_out, kernel_size=1, groups=groups, activation=None)
        self.shortcut = nn.AvgPool2d(3, stride, 1) if downsample else None
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.gconv2(self.dw(self.shuffle(self.gconv1(x))))
        out = x + out if self.shortcut is None else torch.cat((self.shortcut(x), out), 1)
        return self.act(out)


class ShuffleV2Unit(nn.Module):
    """The ShuffleNet V2 unit. Basic: split the channels in half, keep one half, pass the other through
    1×1, 3×3 depthwise (no activation), 1×1. Downsampling: no split; a second strided branch (3×3
    depthwise, 1×1) replaces the kept half. Either way: concatenate, then shuffle with 2 groups.

    Shape: (N, in_channels, H, W) -> (N, out_channels, ceil(H / stride), ceil(W / stride)); a basic unit
    needs ``in_channels == out_channels``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        downsample: bool = False,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        half = out_channels // 2
        self.shortcut: nn.Sequential | None = None
        if downsample:
            self.shortcut = nn.Sequential(
                OrderedDict(
                    dw=ConvBNAct(
                        in_channels,
                        in_channels,
                        kernel_size=3,
                        stride=stride,
                        dilation=dilation,
                        groups=in_channels,
                        activation=None,
                    ),
                    pw=ConvBNAct(in_channels, half, kernel_size=1, activation=activation),
                )
            )
        self.branch = nn.Sequential(
            OrderedDict(
                pw1=ConvBNAct(in_channels if downsample else half, half, kernel_size=1, activation=activation),
                dw=ConvBNAct(half, half, kernel_size=3, stride=stride, dilation=dilation, groups=half, activation=None),
                pw2=ConvBNAct(half, half, kernel_size=1, activation=activation),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut is None:
            kept, x = x.chunk(2, dim=1)
        else:
            kept = self.shortcut(x)
        return channel_shuffle(torch.cat((kept, self.branch(x)), 1), 2)
