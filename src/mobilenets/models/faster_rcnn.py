"""Faster R-CNN on MobileNet V1: the MobileNets paper's Faster-RCNN 300 and 600 (its Table 13).

The backbone up to its stride-16 map (``conv_pw_11``) feeds the region proposal network: a 3×3 conv,
then per location objectness and box deltas for 12 anchors (4 sizes × 3 aspect ratios, the TF
object-detection API's grid anchors: 64 to 512 px at 600, scaled with the resolution). The 300
best proposals per image (at training and at test, as the paper) are cropped from that map to 14×14
(``MultiScaleRoIAlign``), run through the backbone's remaining layers (``conv_dw_12`` … ``conv_pw_13``,
to 7×7) as the box head, average-pooled, then classified and regressed by two linear layers.

Counted by ``cost.count_cost`` on a square image of the resolution (300×300, 600×600: the shorter side
is what the resizer fixes), the box head on all 300 proposals: 25.22 B and 30.49 B mult-adds (printed
25.2 B, 30.5 B); 6.04 M parameters in our convention (conv and FC weights, FC biases), 0.06 M under the
printed 6.1 M; all trainable tensors (with BN's γ, β and conv biases) give 6.06 M, which prints as 6.1.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..registry import DETECTION, register_model
from .base import Backbone
from .detection import (
    COCO_NUM_CLASSES,
    BackboneBody,
    build_classifier,
    check_detector_arguments,
    normalisation,
    record_backbone,
)

if TYPE_CHECKING:
    from torchvision.models.detection.faster_rcnn import FasterRCNN

PROPOSALS = 300  # per image, at training and at test (the paper's Table 13)
ROI_SIZE = 14  # the API's initial_crop_size
# The API's grid anchors: base 256 px at scales 0.25-2 for images resized to 600 (at most 1024) px.
ANCHOR_SIZES = (64, 128, 256, 512)
ASPECT_RATIOS = (0.5, 1.0, 2.0)
BASE_RESOLUTION, BASE_MAX_SIZE = 600, 1024


class BoxHead(nn.Module):
    """The backbone's layers after its stride-16 map, run on every region, then average-pooled.

    ``forward``: (regions, C, 14, 14) -> (regions, ``out_channels``).
    """

    def __init__(self, classifier: Backbone, after: str) -> None:
        super().__init__()
        children = list(classifier.features.named_children())
        names = [name for name, _ in children]
        if after not in names:
            raise ValueError(f"Faster R-CNN needs its stride-16 map at an end point of the backbone, not {after!r}")
        self.features = nn.Sequential(OrderedDict(children[names.index(after) + 1 :]))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_channels = classifier.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)


def faster_rcnn(
    backbone: str = "mobilenet_v1",
    width_mult: float = 1.0,
    num_classes: int = COCO_NUM_CLASSES,
    in_chans: int = 3,
    resolution: int = BASE_RESOLUTION,
) -> FasterRCNN:
    """Faster R-CNN on ``backbone`` at width ``width_mult``, for ``num_classes`` classes counting the
    background. Images are resized inside so that their shorter side is ``resolution`` and their
    longer at most ``resolution · 1024 / 600`` (the API's keep-aspect-ratio resizer: 600 and 1024).

    torchvision's ``FasterRCNN``: train mode ``model(images, targets)`` -> losses; eval mode
    ``model(images)`` -> per image {"boxes" (xyxy pixels of the input), "scores", "labels"}.
    """
    # Imported here: torchvision's detection package takes seconds to import (see ssd.py).
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FasterRCNN, FastRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    spec = check_detector_arguments(backbone, num_classes=num_classes, in_chans=in_chans)
    classifier = build_classifier(backbone, width_mult)
    body = BackboneBody(classifier, [spec.stride16])
    body.out_channels = body.channels[0]  # what FasterRCNN reads of its backbone
    box_head = BoxHead(classifier, after=spec.stride16)
    scale = resolution / BASE_RESOLUTION
    sizes = tuple(max(round(size * scale), 1) for size in ANCHOR_SIZES)
    mean, std = normalisation(backbone)
    model = FasterRCNN(
        body,
        min_size=resolution,
        max_size=round(BASE_MAX_SIZE * scale),
        image_mean=list(mean),
        image_std=list(std),
        rpn_anchor_generator=AnchorGenerator((sizes,), (ASPECT_RATIOS,)),
        rpn_post_nms_top_n_train=PROPOSALS,
        rpn_post_nms_top_n_test=PROPOSALS,
        box_roi_pool=MultiScaleRoIAlign([spec.stride16], output_size=ROI_SIZE, sampling_ratio=2),
        box_head=box_head,
        box_predictor=FastRCNNPredictor(box_head.out_channels, num_classes),
        size_divisible=1,  # the API does not pad images to a multiple of the stride
    )
    record_backbone(model, classifier, backbone=backbone, width_mult=classifier.width_mult)
    return model


_mean, _std = normalisation("mobilenet_v1")
for _resolution in (300, 600):
    for _alpha in ("1.0", "0.75", "0.5", "0.25"):
        register_model(
            f"fasterrcnn{_resolution}_mobilenet_v1_{_alpha}",
            faster_rcnn,
            family="fasterrcnn",
            defaults={"backbone": "mobilenet_v1", "width_mult": float(_alpha)},
            resolution=_resolution,
            mean=_mean,
            std=_std,
            task=DETECTION,
        )
