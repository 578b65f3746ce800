"""mobilenets: MobileNets and their family, sized to a budget, counted, trained and deployed.

The names below are imported on first use, so that ``import mobilenets`` (and the command line's
``--help``) does not wait for PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name: the module that defines it
_EXPORTS = {
    "CostReport": "cost",
    "count_cost": "cost",
    "profile": "cost",
    "FeatureExtractor": "models",
    "FeatureInfo": "models",
    "ModelMeta": "registry",
    "create_model": "registry",
    "get_entry": "registry",
    "list_models": "registry",
    "load_model": "weights",
    "load_weights": "weights",
}

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

if TYPE_CHECKING:
    from . import models
    from .cost import CostReport, count_cost, profile
    from .models import FeatureExtractor, FeatureInfo
    from .registry import ModelMeta, create_model, get_entry, list_models
    from .weights import load_model, load_weights


def __getattr__(name: str) -> Any:
    if name == "models":
        return importlib.import_module(".models", __name__)
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mobilenets' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return [*globals(), *__all__]
