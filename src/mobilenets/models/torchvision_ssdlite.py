"""torchvision's own SSDLite on MobileNetV3-Large, ``ssdlite320_mobilenet_v3_large``, registered beside
our detectors as the reference architecture to compare them with.

Built by torchvision's builder with ``weights=None, weights_backbone=None``: randomly initialised
(nothing is downloaded), and so, as torchvision does without a pretrained backbone, with the reduced
tail of the MobileNetV3 paper's Table 6 (torchvision's published COCO weights were trained that way,
from scratch). Its input is normalised with torchvision's mean and std (0.5: the [-1, 1] scaling) and
resized to ``resolution``² (torchvision fixes 320). Its post-processing is torchvision's: scores from
0.001, NMS at IoU 0.55, the best 300 per image.

Counted by ``cost.count_cost`` at 320 px with 91 classes: 583.2 M mult-adds and 3.400 M params (conv
and FC weights, FC biases), 3.440 M trainable tensors (BatchNorm and conv biases included). torchvision
documents 3,440,060 params, which is every trainable tensor, and 0.58 "GFLOPS", which are
multiply-accumulates of its convolution and linear layers: the counted mult-adds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import DETECTION, register_model
from .detection import COCO_NUM_CLASSES, check_detector_input

if TYPE_CHECKING:
    from torchvision.models.detection.ssd import SSD

NAME = "ssdlite320_mobilenet_v3_large"
RESOLUTION = 320
MEAN = STD = (0.5, 0.5, 0.5)  # torchvision's: its builder scales the input to [-1, 1]


def torchvision_ssdlite(num_classes: int = COCO_NUM_CLASSES, in_chans: int = 3, resolution: int = RESOLUTION) -> SSD:
    """torchvision's ``ssdlite320_mobilenet_v3_large`` for ``num_classes`` classes counting the background,
    randomly initialised, its input resized to ``resolution``² inside (train and eval as our SSDs)."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    check_detector_input(num_classes=num_classes, in_chans=in_chans)
    model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)
    # Anchors follow the feature maps' sizes, so the resize is the only thing fixed at 320.
    model.transform = GeneralizedRCNNTransform(
        resolution,
        resolution,
        list(MEAN),
        list(STD),
        size_divisible=1,
        fixed_size=(resolution, resolution),
    )
    return model


register_model(NAME, torchvision_ssdlite, family="ssdlite", resolution=RESOLUTION, mean=MEAN, std=STD, task=DETECTION)
