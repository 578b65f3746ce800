"""ShuffleNet (Zhang et al. 2018), built from the paper's Table 1; and the table walker that
ShuffleNet V2 shares.

A ShuffleNet table lists conv1, a max pool, then stages of units (the first strided, the rest
stride 1), and for V2 a last 1×1 conv. Its columns are variants: the group count g for ShuffleNet,
the width for V2.

Scale factor s ("ShuffleNet s×", the width multiplier): each stage's output channels c·s are rounded
to the nearest multiple of 4·g, so that the bottleneck (a quarter of them) and the branch of a
downsampling unit, concatenated to its input, divide into g groups. Conv1's 24 channels scale by the
largest power of two not above s (12 at 0.5×, 24 at 1× and 1.5×, 48 at 2×), rounded to the nearest
multiple of g: the released models' choice, which their published complexities reflect (292 M for
1.5× g = 3, 524 M for 2× g = 3). Each count is at least one multiple.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from torch import nn

from ..layers import DEFAULT_BATCHNORM, ConvBNAct, ShuffleUnit
from ..registry import register_model
from .base import Backbone, EndPoints, FeatureInfo, check_arguments


class Row(NamedTuple):
    """One row of a ShuffleNet architecture table: layer, kernel size, stride, repeat, output channels
    per column of the table."""

    layer: str  # "conv1", "maxpool", "stage2" ... "stage4", "conv5"
    kernel: int
    stride: int
    repeat: int  # units in a stage: the first with ``stride``, then ``repeat - 1`` with stride 1
    channels: tuple[int, ...]


GROUPS = (1, 2, 3, 4, 8)

# Table 1 of the paper; the columns are g = 1, 2, 3, 4, 8.
SHUFFLENET: tuple[Row, ...] = (
    # layer, ksize, stride, repeat, output channels for g = 1, 2, 3, 4, 8
    Row("conv1", 3, 2, 1, (24, 24, 24, 24, 24)),
    Row("maxpool", 3, 2, 1, (24, 24, 24, 24, 24)),
    Row("stage2", 3, 2, 4, (144, 200, 240, 272, 384)),  # stride 2 / 1, repeat 1 / 3
    Row("stage3", 3, 2, 8, (288, 400, 480, 544, 768)),  # stride 2 / 1, repeat 1 / 7
    Row("stage4", 3, 2, 4, (576, 800, 960, 1088, 1536)),  # stride 2 / 1, repeat 1 / 3
)


class UnitFactory(Protocol):
    """Builds one unit of a stage: ``first_stage`` for the table's first stage of units."""

    def __call__(
        self, inp: int, out: int, *, stride: int, dilation: int, downsample: bool, first_stage: bool
    ) -> nn.Module: ...


def walk_table(
    rows: Sequence[tuple[Row, int]], in_chans: int, *, activation: str, output_stride: int, make_unit: UnitFactory
) -> tuple[nn.Sequential, list[FeatureInfo], int]:
    """Build the layers of a ShuffleNet table, given each row with its output channels.

    Returns ``(features, feature_info, channels out)``; end points are the table's layer names.
    """
    body = EndPoints(in_chans, output_stride)
    stages = 0
    for row, out_channels in rows:
        if row.layer == "maxpool":
            stride, _ = body.schedule.step(row.stride)  # reduction 4 at most: never dilated
            layer: nn.Module = nn.MaxPool2d(row.kernel, stride, row.kernel // 2)
        elif row.layer.startswith("conv"):
            stride, dilation = body.schedule.step(row.stride)
            layer = ConvBNAct(
                body.channels,
                out_channels,
                kernel_size=row.kernel,
                stride=stride,
                dilation=dilation,
                activation=activation,
            )
        else:
            units = []
            channels = body.channels
            for repeat in range(row.repeat):
                stride, dilation = body.schedule.step(row.stride if repeat == 0 else 1)
                units.append(
                    make_unit(
                        channels,
                        out_channels,
                        stride=stride,
                        dilation=dilation,
                        downsample=repeat == 0,
                        first_stage=stages == 0,
                    )
                )
                channels = out_channels
            layer = nn.Sequential(*units)
            stages += 1
        body.add(row.layer, layer, out_channels)
    return body.build()


def nearest_multiple(value: float, step: int) -> int:
    """``value`` rounded to the nearest multiple of ``step`` (halves up), at least ``step``."""
    return step * max(1, int(value / step + 0.5))


class ShuffleNet(Backbone):
    """ShuffleNet with ``groups`` g ∈ {1, 2, 3, 4, 8} and scale factor ``width_mult`` (s > 0); the
    builder that the registry calls.

    Input (N, in_chans, H, W), any H, W; output (N, num_classes), or (N, num_features) pooled features when
    ``num_classes == 0``. Dilation replaces the last strides for ``output_stride`` 8 or 16.
    End points: ``conv1``, ``maxpool``, ``stage2`` ... ``stage4``. No ``padding`` argument: no
    TensorFlow-trained ShuffleNet weights exist to need "SAME".
    """

    def __init__(
        self,
        groups: int = 3,
        width_mult: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        dropout: float = 0.0,
        activation: str = "relu",
        output_stride: int = 32,
        batchnorm: str = DEFAULT_BATCHNORM,
    ) -> None:
        super().__init__()
        if isinstance(groups, bool) or groups not in GROUPS:
            raise ValueError(f"groups must be one of {list(GROUPS)}, got {groups!r}")
        width_mult = check_arguments(
            width_mult,
            num_classes=num_classes,
            in_chans=in_chans,
            dropout=dropout,
            activation=activation,
            padding="symmetric",
            output_stride=output_stride,
            batchnorm=batchnorm,
        )
        self.groups, self.width_mult = groups, width_mult
        column = GROUPS.index(groups)
        conv1_scale = 2.0 ** math.floor(math.log2(width_mult))
        rows = [
            (row, nearest_multiple(row.channels[column] * width_mult, 4 * groups))
            if row.layer.startswith("stage")
            else (row, nearest_multiple(row.channels[column] * conv1_scale, groups))
            for row in SHUFFLENET
        ]

        def make_unit(
            inp: int, out: int, *, stride: int, dilation: int, downsample: bool, first_stage: bool
        ) -> nn.Module:
            # The first 1×1 of stage 2 takes conv1's 24 channels: too few to split into groups.
            group_first = not (downsample and first_stage)
            return ShuffleUnit(
                inp,
                out,
                groups=groups,
                stride=stride,
                dilation=dilation,
                downsample=downsample,
                group_first=group_first,
                activation=activation,
            )

        self._assemble(
            *walk_table(rows, in_chans, activation=activation, output_stride=output_stride, make_unit=make_unit),
            num_classes=num_classes,
            dropout=dropout,
            batchnorm=batchnorm,
        )


# Every group count of Table 1 at 1×; g = 3 and g = 8 (the paper's Table 2, 3 and 5 models) at the other scales.
for _groups, _scale in [(g, "1.0") for g in GROUPS] + [(g, s) for g in (3, 8) for s in ("0.25", "0.5", "1.5", "2.0")]:
    register_model(
        f"shufflenet_g{_groups}_{_scale}",
        ShuffleNet,
        family="shufflenet",
        defaults={"groups": _groups, "width_mult": float(_scale)},
    )
