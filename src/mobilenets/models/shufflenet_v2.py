"""ShuffleNet V2 (Ma et al. 2018), built from the paper's Table 5 by the ShuffleNet table walker.

The paper gives four widths with their own channels (48 channels in stage 2 at 0.5×, not 116 / 2),
so ``width_mult`` picks a column of the table: 0.5, 1.0, 1.5 or 2.0.
"""

from __future__ import annotations

from torch import nn

from ..layers import DEFAULT_BATCHNORM, ShuffleV2Unit
from ..registry import register_alias, register_model
from .base import Backbone, check_arguments, conv_bn_names
from .shufflenet import Row, walk_table

WIDTHS = (0.5, 1.0, 1.5, 2.0)

# Table 5 of the paper; the columns are the widths 0.5×, 1×, 1.5×, 2×.
SHUFFLENET_V2: tuple[Row, ...] = (
    # layer, ksize, stride, repeat, output channels for 0.5×, 1×, 1.5×, 2×
    Row("conv1", 3, 2, 1, (24, 24, 24, 24)),
    Row("maxpool", 3, 2, 1, (24, 24, 24, 24)),
    Row("stage2", 3, 2, 4, (48, 116, 176, 244)),  # stride 2 / 1, repeat 1 / 3
    Row("stage3", 3, 2, 8, (96, 232, 352, 488)),  # stride 2 / 1, repeat 1 / 7
    Row("stage4", 3, 2, 4, (192, 464, 704, 976)),  # stride 2 / 1, repeat 1 / 3
    Row("conv5", 1, 1, 1, (1024, 1024, 1024, 2048)),
)


class ShuffleNetV2(Backbone):
    """ShuffleNet V2 at ``width_mult`` ∈ {0.5, 1.0, 1.5, 2.0}; the builder that the registry calls.

    Input (N, in_chans, H, W), any H, W; output (N, num_classes), or (N, num_features) pooled features when
    ``num_classes == 0``. Dilation replaces the last strides for ``output_stride`` 8 or 16.
    End points: ``conv1``, ``maxpool``, ``stage2`` ... ``stage4``, ``conv5``. No ``padding``
    argument, as for ShuffleNet.
    """

    def __init__(
        self,
        width_mult: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        dropout: float = 0.0,
        activation: str = "relu",
        output_stride: int = 32,
        batchnorm: str = DEFAULT_BATCHNORM,
    ) -> None:
        super().__init__()
        if isinstance(width_mult, bool) or width_mult not in WIDTHS:
            raise ValueError(f"width_mult must be one of {list(WIDTHS)} for ShuffleNet V2, got {width_mult!r}")
        column = WIDTHS.index(width_mult)
        # The table's value: equal to width_mult, which may be a type check_width_mult rejects (np.float32).
        self.width_mult = check_arguments(
            WIDTHS[column],
            num_classes=num_classes,
            in_chans=in_chans,
            dropout=dropout,
            activation=activation,
            padding="symmetric",
            output_stride=output_stride,
            batchnorm=batchnorm,
        )

        def make_unit(
            inp: int, out: int, *, stride: int, dilation: int, downsample: bool, first_stage: bool
        ) -> nn.Module:
            return ShuffleV2Unit(
                inp, out, stride=stride, dilation=dilation, downsample=downsample, activation=activation
            )

        rows = [(row, row.channels[column]) for row in SHUFFLENET_V2]
        self._assemble(
            *walk_table(rows, in_chans, activation=activation, output_stride=output_stride, make_unit=make_unit),
            num_classes=num_classes,
            dropout=dropout,
            batchnorm=batchnorm,
        )


def _flat_branch(ours: str, theirs: str, branch: nn.Module) -> dict[str, str]:
    """A Sequential of ConvBNAct as torchvision's one flat Sequential: conv, BN and, where there is
    one, the activation each take an index."""
    names, position = {}, 0
    for part, conv_bn_act in branch.named_children():
        names |= conv_bn_names(f"{ours}.{part}", f"{theirs}.{position}", f"{theirs}.{position + 1}")
        position += 2 if isinstance(conv_bn_act.act, nn.Identity) else 3
    return names


def torchvision_modules(model: ShuffleNetV2) -> dict[str, str]:
    """torchvision ``shufflenet_v2_x*``: ``conv1``, ``stage2``-``stage4`` of units with ``branch1`` (our
    shortcut) and ``branch2`` (our branch), ``conv5``, ``fc``."""
    branches = {"shortcut": "branch1", "branch": "branch2"}
    names = {"classifier": "fc"}
    for name, layer in model.features.named_children():
        if name.startswith("conv"):
            names |= conv_bn_names(f"features.{name}", f"{name}.0", f"{name}.1")
        elif name.startswith("stage"):
            for index, unit in enumerate(layer):
                for ours, branch in unit.named_children():
                    names |= _flat_branch(f"features.{name}.{index}.{ours}", f"{name}.{index}.{branches[ours]}", branch)
    return names


for _width in ("0.5", "1.0", "1.5", "2.0"):
    register_model(
        f"shufflenet_v2_{_width}",
        ShuffleNetV2,
        family="shufflenet_v2",
        defaults={"width_mult": float(_width)},
        layouts={"torchvision": torchvision_modules},
    )
    register_alias(f"shufflenet_v2_x{_width.replace('.', '_')}", f"shufflenet_v2_{_width}")  # torchvision
