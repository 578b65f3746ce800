"""Model families; importing this package registers every model."""

from . import mobilenet_v1, mobilenet_v2, shufflenet, shufflenet_v2
from .base import Backbone, FeatureExtractor, FeatureInfo

__all__ = [
    "Backbone",
    "FeatureExtractor",
    "FeatureInfo",
    "mobilenet_v1",
    "mobilenet_v2",
    "shufflenet",
    "shufflenet_v2",
]
