"""SSD and SSDLite on our backbones: the MobileNets paper's SSD 300 (its Table 13) and the MobileNetV2
paper's SSDLite 320 (its Tables 5 and 6), as the TF object-detection API lays them out.

Six feature maps: the backbone's stride-16 and stride-32 maps (see ``detection.BACKBONES``), then four
extra layers, each a 1×1 conv to half its depth and a stride-2 3×3 conv to its depth (10 → 5 → 3 → 2 → 1
at 300 px). On each map a class predictor and a box predictor. SSD: full 3×3 extra convs and 1×1
predictors (3×3 predictors, head ``"ssd3x3"``, give SSD300-MobileNet 17.9 M parameters, not the paper's 6.8 M).
SSDLite: every 3×3 conv of the extra layers and predictors depthwise separable (3×3 depthwise, BN,
ReLU6, then 1×1). Depths scale with α as the API's ``max(int(d · α), 16)``.

Counted by ``cost.count_cost`` (tests/models/test_detection.py): SSD300 on MobileNet V1, 91 classes,
6.79 M parameters and 1.24 B mult-adds (printed 6.8 M, 1.2 B); the V2 paper counts 80 classes +
background: SSDLite320 on V1 5.06 M, 1.31 B (5.1 M, 1.3 B) and on V2 4.28 M, 0.79 B (4.3 M, 0.8 B). Its
Table 5 heads alone on V2: SSD (3×3 predictors) 14.77 M, 1.259 B (printed 14.8 M, 1.25 B: 9 M mult-adds
more), SSDLite 2.09 M, 0.18 B (printed 2.1 M, 0.35 B: no counting convention here gives 0.35 B).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import cache
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from ..layers import ConvBNAct, DepthwiseSeparable, depthwise_3x3
from ..registry import DETECTION, register_model
from .detection import (
    COCO_NUM_CLASSES,
    BackboneBody,
    build_classifier,
    check_detector_arguments,
    normalisation,
    record_backbone,
)
from .mobilenet_v1 import scale_channels

if TYPE_CHECKING:
    from torchvision.models.detection.ssd import SSD

# torchvision's detection package is imported when a detector is built, not when the registry is
# read: importing it takes seconds, which every command listing or profiling classifiers would pay.

MIN_DEPTH = 16  # the API's min_depth for the extra layers
_CPU = torch.device("cpu")  # DefaultBoxGenerator's default device


class Head(NamedTuple):
    """One detection head of the papers: how its extra layers and box predictors convolve."""

    extra: str  # "conv": 1×1, then 3×3 stride-2 conv; "separable": 1×1, then 3×3 depthwise stride 2 + 1×1
    predictor: str  # "1×1" or "3×3": one conv per map; "separable": 3×3 depthwise (BN, ReLU6), then 1×1


HEADS: dict[str, Head] = {
    "ssd": Head(extra="conv", predictor="1×1"),  # MobileNets paper, Table 13
    "ssdlite": Head(extra="separable", predictor="separable"),  # MobileNetV2 paper, section 6.2
    # The original SSD's 3×3 predictors: the "SSD" head of the V2 paper's Table 5 (not registered).
    "ssd3x3": Head(extra="conv", predictor="3×3"),
}

# The depths of the four extra layers at α = 1 (the API's ssd_mobilenet_v1/v2 layer_depth after the
# backbone's two maps).
EXTRA_DEPTHS: tuple[int, ...] = (512, 256, 256, 128)


@cache
def _anchors_class() -> type[nn.Module]:
    """:class:`SSDAnchors`, defined on first use on torchvision's ``DefaultBoxGenerator``."""
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

    class SSDAnchors(DefaultBoxGenerator):
        """The API's SSD anchors: on each map scales from 0.2 to 0.95 of the image at aspect ratios 1, 2,
        1/2, 3, 1/3 plus one between this map's scale and the next (torchvision's default boxes), except
        the lowest map, which has three: 0.1 at 1:1, 0.2 at 2:1 and 1:2 (``reduce_boxes_in_lowest_layer``).
        """

        def __init__(self, num_maps: int) -> None:
            super().__init__([[2, 3]] * num_maps, min_ratio=0.2, max_ratio=0.95)

        def _generate_wh_pairs(
            self, num_outputs: int, dtype: torch.dtype = torch.float32, device: torch.device = _CPU
        ) -> list[torch.Tensor]:
            pairs = super()._generate_wh_pairs(num_outputs, dtype, device)
            scale, root = self.scales[0], math.sqrt(2.0)
            lowest = [[0.1, 0.1], [scale * root, scale / root], [scale / root, scale * root]]
            return [torch.as_tensor(lowest, dtype=dtype, device=device), *pairs[1:]]

        def num_anchors_per_location(self) -> list[int]:
            return [len(pairs) for pairs in self._wh_pairs]

    SSDAnchors.__module__ = __name__
    return SSDAnchors


def __getattr__(name: str) -> object:
    """``SSDAnchors`` by its name (for pickling and introspection), defined on first use."""
    if name == "SSDAnchors":
        return _anchors_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def extra_layer(in_channels: int, depth: int, *, head: Head) -> nn.Sequential:
    """An extra layer at its scaled ``depth``: 1×1 to ``depth / 2``, then a stride-2 3×3 (full or separable)."""
    half = max(depth // 2, MIN_DEPTH)
    if head.extra == "separable":
        down: nn.Module = DepthwiseSeparable(half, depth, stride=2)
    else:
        down = ConvBNAct(half, depth, kernel_size=3, stride=2)
    return nn.Sequential(OrderedDict(reduce=ConvBNAct(in_channels, half, kernel_size=1), down=down))


def predictor(in_channels: int, out_channels: int, *, head: Head) -> nn.Module:
    """One map's class or box predictor: (N, in, H, W) -> (N, anchors · columns, H, W)."""
    if head.predictor == "3×3":
        return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
    last = nn.Conv2d(in_channels, out_channels, kernel_size=1)
    if head.predictor == "separable":
        return nn.Sequential(OrderedDict(dw=depthwise_3x3(in_channels), pw=last))
    return last


class FeatureMaps(nn.Module):
    """The backbone's maps, then each extra layer's on the previous map.

    ``forward``: (N, 3, H, W) -> {name: map}, by increasing stride (6 maps, 19² … 1² at 300 px).
    """

    def __init__(self, body: BackboneBody, extras: nn.Sequential) -> None:
        super().__init__()
        self.body, self.extras = body, extras

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = self.body(x)
        x = next(reversed(maps.values()))
        for name, layer in self.extras.named_children():
            x = maps[name] = layer(x)
        return maps


class BoxPredictors(nn.Module):
    """A class and a box predictor per map, each flattened by torchvision's ``SSDScoringHead``.

    ``forward``: [maps] -> {"cls_logits": (N, anchors, num_classes), "bbox_regression": (N, anchors, 4)},
    what torchvision's ``SSD`` takes from its head.
    """

    def __init__(self, channels: list[int], anchors: list[int], num_classes: int, *, head: Head) -> None:
        from torchvision.models.detection.ssd import SSDScoringHead

        super().__init__()
        self.classification_head = SSDScoringHead(
            nn.ModuleList(predictor(c, a * num_classes, head=head) for c, a in zip(channels, anchors, strict=True)),
            num_classes,
        )
        self.regression_head = SSDScoringHead(
            nn.ModuleList(predictor(c, a * 4, head=head) for c, a in zip(channels, anchors, strict=True)), 4
        )

    def forward(self, x: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"bbox_regression": self.regression_head(x), "cls_logits": self.classification_head(x)}


def ssd(
    head: str = "ssd",
    backbone: str = "mobilenet_v1",
    width_mult: float = 1.0,
    num_classes: int = COCO_NUM_CLASSES,
    in_chans: int = 3,
    resolution: int = 300,
) -> SSD:
    """SSD (``head="ssd"``), SSDLite (``"ssdlite"``) or SSD with 3×3 predictors (``"ssd3x3"``) on
    ``backbone`` at width ``width_mult``, for ``num_classes`` classes counting the background; images
    are resized to ``resolution``² inside.

    torchvision's ``SSD``: train mode ``model(images, targets)`` -> losses; eval mode ``model(images)``
    -> per image {"boxes" (xyxy pixels of the input), "scores", "labels"}, at most 100 after
    per-class NMS at IoU 0.6 (the API's post-processing; scores below 0.01 dropped).
    """
    from torchvision.models.detection.ssd import SSD

    if not isinstance(head, str) or head not in HEADS:
        raise ValueError(f"head must be one of {list(HEADS)}, got {head!r}")
    spec = check_detector_arguments(backbone, num_classes=num_classes, in_chans=in_chans)
    layout = HEADS[head]
    classifier = build_classifier(backbone, width_mult)
    body = BackboneBody(classifier, [spec.stride16, spec.stride32])
    extras, channels = OrderedDict(), list(body.channels)
    for index, depth in enumerate(EXTRA_DEPTHS, start=1):
        scaled = scale_channels(depth, classifier.width_mult, MIN_DEPTH)
        extras[f"extra{index}"] = extra_layer(channels[-1], scaled, head=layout)
        channels.append(scaled)
    anchors = _anchors_class()(len(channels))
    mean, std = normalisation(backbone)
    model = SSD(
        FeatureMaps(body, nn.Sequential(extras)),
        anchors,
        (resolution, resolution),
        num_classes,
        image_mean=list(mean),
        image_std=list(std),
        head=BoxPredictors(channels, anchors.num_anchors_per_location(), num_classes, head=layout),
        score_thresh=0.01,
        nms_thresh=0.6,
        detections_per_img=100,
    )
    record_backbone(model, classifier, backbone=backbone, width_mult=classifier.width_mult)
    return model


_WIDTHS = {
    "mobilenet_v1": ("1.0", "0.75", "0.5", "0.25"),
    "mobilenet_v2": ("1.0", "0.75", "0.5", "0.35", "0.25"),
    "shufflenet_v2": ("0.5", "1.0", "1.5", "2.0"),
}
# (head, its resolution, backbones): the MobileNets paper's SSD 300 and the V2 paper's SSDLite 320.
for _head, _resolution, _backbones in (
    ("ssd", 300, ("mobilenet_v1", "mobilenet_v2")),
    ("ssdlite", 320, ("mobilenet_v1", "mobilenet_v2", "shufflenet_v2")),
):
    for _backbone in _backbones:
        _mean, _std = normalisation(_backbone)
        for _alpha in _WIDTHS[_backbone]:
            register_model(
                f"{_head}{_resolution}_{_backbone}_{_alpha}",
                ssd,
                family=_head,
                defaults={"head": _head, "backbone": _backbone, "width_mult": float(_alpha)},
                resolution=_resolution,
                mean=_mean,
                std=_std,
                task=DETECTION,
            )
