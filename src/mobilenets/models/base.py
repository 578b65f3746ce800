"""What every model family shares: argument checks, the backbone frame and feature extraction.

A model is ``features`` (an ``nn.Sequential`` of named layers, the TF-slim "end points") followed
by a head (global average pool, dropout, fully connected). ``feature_info`` names, for each
reduction of the input, the last end point at that reduction, with its channels.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from ..layers import ACTIVATIONS, PADDINGS

MIN_RESOLUTION = 32
OUTPUT_STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class FeatureInfo:
    """One feature map: the end point producing it, its channels and its reduction (input / map)."""

    name: str
    channels: int
    reduction: int


def check_width_mult(width_mult: float) -> float:
    if not isinstance(width_mult, (int, float)) or not width_mult > 0:
        raise ValueError(f"width_mult must be a number > 0, got {width_mult!r}")
    return float(width_mult)


def check_resolution(resolution: int) -> int:
    if not isinstance(resolution, int) or resolution < MIN_RESOLUTION:
        raise ValueError(f"resolution must be an integer >= {MIN_RESOLUTION}, got {resolution!r}")
    return resolution


def check_common(
    num_classes: int, in_chans: int, dropout: float, activation: str, padding: str, output_stride: int
) -> None:
    """Validate the arguments that every builder accepts; raise ``ValueError`` naming the culprit."""
    if not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes must be an integer >= 0 (0 = no classifier), got {num_classes!r}")
    if not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"in_chans must be an integer >= 1, got {in_chans!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {list(PADDINGS)}, got {padding!r}")
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {list(OUTPUT_STRIDES)}, got {output_stride!r}")


def check_arguments(
    width_mult: float,
    resolution: int | None,
    num_classes: int,
    in_chans: int,
    dropout: float,
    activation: str,
    padding: str,
    output_stride: int,
) -> float:
    """Validate a family constructor's arguments, in signature order; return ``width_mult`` as a float.

    ``resolution=None``: the constructor takes none (MobileNet V1, whose builders check it).
    """
    width_mult = check_width_mult(width_mult)
    if resolution is not None:
        check_resolution(resolution)
    check_common(num_classes, in_chans, dropout, activation, padding, output_stride)
    return width_mult


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
        self.infos.append(FeatureInfo(name, channels, self.schedule.reduction))
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
        num_classes: int,
        dropout: float,
    ) -> None:
        """Set the body (as :meth:`EndPoints.build` returns it), then the head after it."""
        self.features, self.feature_info, self.num_features = features, feature_info, num_features
        self.num_classes = num_classes
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

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
