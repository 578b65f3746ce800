"""mobilenets: MobileNets and their family, sized to a budget, counted, trained and deployed."""

from . import models
from .cost import CostReport, count_cost, profile
from .models import FeatureExtractor, FeatureInfo
from .registry import ModelMeta, create_model, get_entry, list_models
from .weights import load_model, load_weights

__version__ = "0.1.0"

__all__ = [
    "CostReport",
    "FeatureExtractor",
    "FeatureInfo",
    "ModelMeta",
    "count_cost",
    "create_model",
    "get_entry",
    "list_models",
    "load_model",
    "load_weights",
    "models",
    "profile",
]
