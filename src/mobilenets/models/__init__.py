"""Model families; importing this package registers every model."""

from . import detection, faster_rcnn, mobilenet_v1, mobilenet_v2, shufflenet, shufflenet_v2, ssd, torchvision_ssdlite
from .base import Backbone, FeatureExtractor, FeatureInfo

__all__ = [
    "Backbone",
    "FeatureExtractor",
    "FeatureInfo",
    "detection",
    "faster_rcnn",
    "mobilenet_v1",
    "mobilenet_v2",
    "shufflenet",
    "shufflenet_v2",
    "ssd",
    "torchvision_ssdlite",
]
