"""What every model family shares: argument checks, the backbone frame and feature extraction.

A model is ``features`` (an ``nn.Sequential`` of named layers, the TF-slim "end points") followed
by a head (global average pool, dropout, fully connected). ``feature_info`` names, for each
reduction of the input, the last end point at that reduction, with its channels.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from ..layers import ACTIVATIONS, BATCHNORMS, PADDINGS

MIN_RESOLUTION = 32
OUTPUT_STRIDES = (8, 16, 32)

# Upper bounds, so that arguments read from a weights file (or typed by hand) cannot make a model
# or its input allocate without bound. Each is far above any published model.
MAX_WIDTH_MULT = 4.0  # published widths stop at 2 (ShuffleNet 2×); V1 at α = 4 has ~67 M parameters
MAX_RESOLUTION = 4096  # published inputs stop near 1024 (segmentation); a 4096² RGB image is 200 MB as float32
MAX_NUM_CLASSES = 100_000  # ImageNet-21k has 21,841; a 100,000-class head on 1280 features is 0.5 GB
MAX_IN_CHANS = 256  # RGB-D and multispectral inputs have a few to a few dozen; hyperspectral up to ~200


@dataclass(frozen=True, kw_only=True)
class FeatureInfo:
    """One feature map: the end point producing it, its channels and its reduction (input / map)."""

    name: str
    channels: int
    reduction: int


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    """A finite int or float, not a bool (``True`` would pass as 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_width_mult(width_mult: float) -> float:
    if not _is_number(width_mult) or not 0 < width_mult <= MAX_WIDTH_MULT:
        raise ValueError(f"width_mult must be a number > 0 and <= {MAX_WIDTH_MULT}, got {width_mult!r}")
    return float(width_mult)


def check_resolution(resolution: int) -> int:
    if not _is_int(resolution) or not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise ValueError(
            f"resolution must be an integer >= {MIN_RESOLUTION} and <= {MAX_RESOLUTION}, got {resolution!r}"
        )
    return resolution


def check_num_classes(num_classes: int) -> int:
    if not _is_int(num_classes) or not 0 <= num_classes <= MAX_NUM_CLASSES:
        raise ValueError(
            f"num_classes must be an integer >= 0 (0 = no classifier) and <= {MAX_NUM_CLASSES}, got {num_classes!r}"
        )
    return num_classes


def check_common(
    num_classes: int,
    *,
    in_chans: int,
    dropout: float,
    activation: str,
    padding: str,
    output_stride: int,
    batchnorm: str,
) -> None:
    """Validate the arguments that every builder accepts; raise ``ValueError`` naming the culprit."""
    check_num_classes(num_classes)
    if not _is_int(in_chans) or not 1 <= in_chans <= MAX_IN_CHANS:
        raise ValueError(f"in_chans must be an integer >= 1 and <= {MAX_IN_CHANS}, got {in_chans!r}")
    if not _is_number(dropout) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if not isinstance(padding, str) or padding not in PADDINGS:
        raise ValueError(f"padding must be one of {list(PADDINGS)}, got {padding!r}")
    if not _is_int(output_stride) or output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {list(OUTPUT_STRIDES)}, got {output_stride!r}")
    if not isinstance(batchnorm, str) or batchnorm not in BATCHNORMS:
        raise ValueError(f"batchnorm must be one of {list(BATCHNORMS)}, got {batchnorm!r}")


def check_arguments(width_mult: float, **common: Any) -> float:
    """Validate a family constructor's arguments (``common``: those of :func:`check_common`); return
    ``width_mult`` as a float."""
    width_mult = check_width_mult(width_mult)
    check_common(**common)
    return width_mult


def conv_bn_names(ours: str, conv: str, bn: str) -> dict[str, str]:
    """``{our ConvBNAct's conv and BN: another library's modules}``, for the families' torchvision layouts."""
    return {f"{ours}.conv": conv, f"{ours}.bn": bn}


class StrideSchedule:
    """Turns the table's strides into (stride, dilation) pairs that respect an output stride.

    Once the running reduction reaches ``output_stride``, further strides become dilation
    (the layer losing its stride keeps the old dilation; the layers after it get the new one).
    """

    def __init__(self, output_stride: int = 32) -> None:
        self.output_stride = output_stride
        self.reduction = 1
        self.dilation = 1

    def step(self, stride: int) -> tuple[int, int]:
        """Return the (stride, dilation) for a layer with the table's ``stride``."""
        dilation = self.dilation
        if self.reduction * stride > self.output_stride:
            self.dilation *= stride
            return 1, dilation
        self.reduction *= stride
        return stride, dilation


def last_per_reduction(layers: list[FeatureInfo]) -> list[FeatureInfo]:
    """Keep, for each reduction, the last layer at it (in order of increasing reduction)."""
    by_reduction: dict[int, FeatureInfo] = {}
    for info in layers:
        by_reduction[info.reduction] = info
    return [by_reduction[r] for r in sorted(by_reduction)]


class EndPoints:
    """Collects a backbone's layers in order, each under its end point name with the channels it
    gives and the reduction reached after it; table strides go through ``schedule``."""

    def __init__(self, in_chans: int, output_stride: int) -> None:
        self.schedule = StrideSchedule(output_stride)
        self.channels = in_chans  # out of the last layer added: the next layer's input
        self.layers: OrderedDict[str, nn.Module] = OrderedDict()
        self.infos: list[FeatureInfo] = []

    def add(self, name: str, layer: nn.Module, channels: int) -> None:
        """Append ``layer``, giving ``channels``, as end point ``name``."""
        self.layers[name] = layer
        self.infos.append(FeatureInfo(name=name, channels=channels, reduction=self.schedule.reduction))
        self.channels = channels

    def build(self) -> tuple[nn.Sequential, list[FeatureInfo], int]:
        """``(features, feature_info, num_features)``: feature_info keeps the last end point per reduction."""
        return nn.Sequential(self.layers), last_per_reduction(self.infos), self.channels


class Backbone(nn.Module):
    """Common frame: ``features`` then pool → dropout → fully connected.

    Subclasses build their layers (an :class:`EndPoints`) then call ``_assemble``.
    ``forward``: (N, C, H, W) -> (N, num_classes), or (N, num_features) when ``num_classes == 0``.
    """

    features: nn.Sequential
    feature_info: list[FeatureInfo]
    num_features: int

    def _assemble(
        self,
        features: nn.Sequential,
        feature_info: list[FeatureInfo],
        num_features: int,
        *,
        num_classes: int,
        dropout: float,
        batchnorm: str,
    ) -> None:
        """Set the body (as :meth:`EndPoints.build` returns it), then the head after it; give every
        BatchNorm the ``batchnorm`` settings (a key of ``layers.BATCHNORMS``)."""
        settings = BATCHNORMS[batchnorm]
        for module in features.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum, module.eps = settings.momentum, settings.eps
        self.features, self.feature_info, self.num_features = features, feature_info, num_features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self._set_classifier(num_classes)

    def _set_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def get_classifier(self) -> nn.Module:
        """The fully connected layer (num_features -> num_classes); ``nn.Identity`` when there are no classes."""
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a freshly initialised one for ``num_classes`` (0: pooled features out),
        on the device and dtype of the current parameters. ``meta`` follows: its ``num_classes``
        changes and its class names are dropped."""
        check_num_classes(num_classes)
        reference = next(self.features.parameters())
        self._set_classifier(num_classes)
        self.classifier.to(device=reference.device, dtype=reference.dtype)
        meta = getattr(self, "meta", None)
        if meta is not None:
            self.meta = replace(meta, num_classes=num_classes, labels=())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> the last feature map, (N, num_features, H / 32, W / 32) by default."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Last feature map -> logits (N, num_classes), or pooled features when there are no classes."""
        return self.classifier(self.dropout(torch.flatten(self.pool(x), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class FeatureExtractor(nn.Module):
    """Runs a backbone's layers and returns the maps named in its ``feature_info``.

    ``forward``: (N, C, H, W) -> {end point name: (N, channels, H / reduction, W / reduction)},
    ordered by increasing reduction. ``info`` states each map's channels and reduction.
    """

    def __init__(self, model: Backbone, reductions: tuple[int, ...] | None = None) -> None:
        super().__init__()
        available = {info.reduction: info for info in model.feature_info}
        wanted = sorted(available) if reductions is None else sorted(reductions)
        missing = [r for r in wanted if r not in available]
        if missing:
            raise ValueError(f"reductions must be among {sorted(available)}, got {missing}")
        self.info = [available[r] for r in wanted]
        self.return_names = [info.name for info in self.info]
        last = self.return_names[-1]
        kept: OrderedDict[str, nn.Module] = OrderedDict()
        for name, layer in model.features.named_children():
            kept[name] = layer
            if name == last:
                break
        self.layers = nn.ModuleDict(kept)

    @property
    def channels(self) -> list[int]:
        return [info.channels for info in self.info]

    @property
    def reductions(self) -> list[int]:
        return [info.reduction for info in self.info]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, layer in self.layers.items():
            x = layer(x)
            if name in self.return_names:
                out[name] = x
        return out
