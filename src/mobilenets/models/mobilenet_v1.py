"""MobileNet V1 (Howard et al. 2017) and the paper's two baselines, built from Table 1.

Channels are scaled by the width multiplier α with the rule of the released TensorFlow models:
``max(floor(c · α), 8)``. For α ∈ {0.25, 0.5, 0.75, 1.0} this gives exactly their channels.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from ..layers import DEFAULT_ACTIVATION, DEFAULT_BATCHNORM, ConvBNAct, DepthwiseSeparable, Padding
from ..published import published_accuracy
from ..registry import (
    TF_RANGE,
    PretrainedWeights,
    keras_weights,
    register_alias,
    register_model,
    register_weights,
    slim_checkpoint,
)
from .base import Backbone, EndPoints, check_arguments, conv_bn_names


class Layer(NamedTuple):
    """One row of the architecture table."""

    kind: str  # "conv": full 3×3 conv; "ds": depthwise separable (3×3 dw + 1×1 pw)
    stride: int
    out_channels: int


# Table 1 of the paper, with each "Conv dw / Conv 1×1" pair as one "ds" row.
MOBILENET_V1: tuple[Layer, ...] = (
    # kind, s, c         paper rows (input size at 224)
    Layer("conv", 2, 32),  # Conv / s2         3×3×3×32        224×224×3
    Layer("ds", 1, 64),  # Conv dw / s1 ; 1×1×32×64          112×112×32
    Layer("ds", 2, 128),  # Conv dw / s2 ; 1×1×64×128         112×112×64
    Layer("ds", 1, 128),  # Conv dw / s1 ; 1×1×128×128        56×56×128
    Layer("ds", 2, 256),  # Conv dw / s2 ; 1×1×128×256        56×56×128
    Layer("ds", 1, 256),  # Conv dw / s1 ; 1×1×256×256        28×28×256
    Layer("ds", 2, 512),  # Conv dw / s2 ; 1×1×256×512        28×28×256
    *[Layer("ds", 1, 512)] * 5,  # 5× Conv dw / s1 ; 1×1×512×512   14×14×512
    Layer("ds", 2, 1024),  # Conv dw / s2 ; 1×1×512×1024       14×14×512
    Layer("ds", 1, 1024),  # Conv dw / s1 ; 1×1×1024×1024      7×7×1024 (printed s2: an erratum)
)

# Table 4 baseline: every depthwise separable layer replaced by a full 3×3 convolution.
CONV_MOBILENET: tuple[Layer, ...] = tuple(row._replace(kind="conv") for row in MOBILENET_V1)

# Table 5 baseline: the five 14×14×512 separable layers removed.
SHALLOW_MOBILENET: tuple[Layer, ...] = MOBILENET_V1[:7] + MOBILENET_V1[12:]

VARIANTS: dict[str, tuple[Layer, ...]] = {
    "mobilenet": MOBILENET_V1,
    "conv": CONV_MOBILENET,
    "shallow": SHALLOW_MOBILENET,
}


def scale_channels(channels: int, width_mult: float, min_channels: int = 8) -> int:
    """Channels after the width multiplier, as the released TF models: ``max(floor(c·α), 8)``."""
    return max(int(channels * width_mult), min_channels)


class MobileNetV1(Backbone):
    """MobileNet V1 body from the architecture table of ``variant`` (a key of :data:`VARIANTS`: the
    paper's model or one of its two baselines), then pool → dropout → FC; the builder that the
    registry calls.

    Input (N, in_chans, H, W), any H, W; output (N, num_classes), or (N, num_features) pooled
    features when ``num_classes == 0``. Dilation replaces the last strides for ``output_stride``
    8 or 16.
    """

    def __init__(
        self,
        variant: str = "mobilenet",
        width_mult: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        dropout: float = 0.001,
        activation: str = DEFAULT_ACTIVATION,
        padding: Padding = "symmetric",
        output_stride: int = 32,
        batchnorm: str = DEFAULT_BATCHNORM,
    ) -> None:
        super().__init__()
        if not isinstance(variant, str) or variant not in VARIANTS:
            raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
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
        self.variant, self.width_mult = variant, width_mult
        body = EndPoints(in_chans, output_stride)
        for index, row in enumerate(VARIANTS[variant]):
            out_channels = scale_channels(row.out_channels, width_mult)
            stride, dilation = body.schedule.step(row.stride)
            if row.kind == "conv":
                layer: nn.Module = ConvBNAct(
                    body.channels,
                    out_channels,
                    kernel_size=3,
                    stride=stride,
                    dilation=dilation,
                    activation=activation,
                    padding=padding,
                )
            else:
                layer = DepthwiseSeparable(
                    body.channels,
                    out_channels,
                    stride=stride,
                    dilation=dilation,
                    activation=activation,
                    padding=padding,
                )
            body.add(f"conv{index}" if row.kind == "conv" else f"block{index}", layer, out_channels)
        self._assemble(*body.build(), num_classes=num_classes, dropout=dropout, batchnorm=batchnorm)


def timm_modules(model: MobileNetV1) -> dict[str, str]:
    """timm 1.0 ``mobilenetv1_100`` / ``_125``: stem ``conv_stem`` + ``bn1``; ``blocks.{stage}.{i}``, a
    stage per channel count of the table (a ``ds`` row is ``conv_dw`` + ``bn1``, ``conv_pw`` + ``bn2``;
    a full conv row ``conv`` + ``bn1``); no head conv."""
    names = {"classifier": "classifier"}
    stage, index = -1, 0
    rows = VARIANTS[model.variant]
    for position, ((name, layer), row) in enumerate(zip(model.features.named_children(), rows, strict=True)):
        if position == 0:
            names |= conv_bn_names(f"features.{name}", "conv_stem", "bn1")
            continue
        if row.out_channels == rows[position - 1].out_channels:
            index += 1
        else:
            stage, index = stage + 1, 0
        block = f"blocks.{stage}.{index}"
        if isinstance(layer, DepthwiseSeparable):
            names |= conv_bn_names(f"features.{name}.dw", f"{block}.conv_dw", f"{block}.bn1")
            names |= conv_bn_names(f"features.{name}.pw", f"{block}.conv_pw", f"{block}.bn2")
        else:
            names |= conv_bn_names(f"features.{name}", f"{block}.conv", f"{block}.bn1")
    return names


def keras_modules(model: MobileNetV1) -> dict[str, str]:
    """Keras's ``MobileNet``: ``conv1`` (+ ``conv1_bn``), then ``conv_dw_<i>`` and ``conv_pw_<i>`` (+ ``_bn``)
    for our ``block<i>``; the classifier ``conv_preds`` is a 1×1 convolution (loaded into our linear layer)."""
    names = {"classifier": "conv_preds"}
    for index, (name, layer) in enumerate(model.features.named_children()):
        if isinstance(layer, DepthwiseSeparable):
            for part, theirs in (("dw", f"conv_dw_{index}"), ("pw", f"conv_pw_{index}")):
                names |= conv_bn_names(f"features.{name}.{part}", theirs, f"{theirs}_bn")
        else:
            names |= conv_bn_names(f"features.{name}", f"conv{index + 1}", f"conv{index + 1}_bn")
    return names


def slim_modules(model: MobileNetV1) -> dict[str, str]:
    """TF-slim's ``MobilenetV1``: ``Conv2d_0``, then ``Conv2d_<i>_depthwise`` and ``Conv2d_<i>_pointwise``
    for our ``block<i>``, each with its ``BatchNorm``; the classifier ``Logits/Conv2d_1c_1x1`` is a 1×1
    convolution (loaded into our linear layer)."""
    names = {"classifier": "MobilenetV1/Logits/Conv2d_1c_1x1"}
    for index, (name, layer) in enumerate(model.features.named_children()):
        scope = f"MobilenetV1/Conv2d_{index}"
        if isinstance(layer, DepthwiseSeparable):
            for part, kind in (("dw", "depthwise"), ("pw", "pointwise")):
                names |= conv_bn_names(f"features.{name}.{part}", f"{scope}_{kind}", f"{scope}_{kind}/BatchNorm")
        else:
            names |= conv_bn_names(f"features.{name}", scope, f"{scope}/BatchNorm")
    return names


# The released TF models scale pixels to [-1, 1] (TF_RANGE).
for _alpha in ("1.0", "0.75", "0.5", "0.25"):
    for _res in (224, 192, 160, 128):
        register_model(
            f"mobilenet_v1_{_alpha}_{_res}",
            MobileNetV1,
            family="mobilenet_v1",
            defaults={"width_mult": float(_alpha)},
            resolution=_res,
            **TF_RANGE,
            layouts={"timm": timm_modules, "keras": keras_modules, "tf-slim": slim_modules},
        )
for _variant in ("conv", "shallow"):
    register_model(
        f"mobilenet_v1_{_variant}_1.0_224",
        MobileNetV1,
        family="mobilenet_v1",
        defaults={"variant": _variant, "width_mult": 1.0},
        resolution=224,
        **TF_RANGE,
        layouts={"timm": timm_modules},
    )
register_alias("mobilenetv1_100", "mobilenet_v1_1.0_224")  # timm


# --- weights catalogue: published files for these models, with their provenance ---------------
# (See PretrainedWeights.)

_KERAS_ALPHA = {"1.0": "1_0", "0.75": "7_5", "0.5": "5_0", "0.25": "2_5"}  # as Keras spells α in file names

for _alpha in ("1.0", "0.75", "0.5", "0.25"):
    for _res in (224, 192, 160, 128):
        _model = f"mobilenet_v1_{_alpha}_{_res}"
        _file = f"mobilenet_{_KERAS_ALPHA[_alpha]}_{_res}_tf.h5"
        register_weights(keras_weights(_model, file=_file, folder="mobilenet", resolution=_res))
        _listing = "research/slim/nets/mobilenet_v1.md"
        register_weights(slim_checkpoint(_model, listing=_listing, resolution=_res, **published_accuracy(_model)))

register_weights(
    PretrainedWeights(
        name="mobilenetv1_100.ra4_e3600_r224_in1k",
        model="mobilenet_v1_1.0_224",
        library="timm",
        file="model.safetensors",
        source="Hugging Face hub, https://huggingface.co/timm/mobilenetv1_100.ra4_e3600_r224_in1k",
        licence="Apache-2.0 (as timm's pretrained config states)",
        sha256=None,
        resize=256,  # timm's crop_pct 0.875, bicubic
        crop=224,
        **TF_RANGE,  # timm's "Inception" mean and std
    )
)
