"""Model registry: names in the papers' style mapped to builders and their defaults.

``create_model("mobilenet_v1_0.75_192")`` builds α = 0.75 with a default input size of 192; any
builder argument may be overridden (``create_model(name, num_classes=10, in_chans=1)``).
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelMeta:
    """What a user needs to feed a model: default input size and normalisation (RGB, 0-1 scale);
    once weights are loaded (``mobilenets.weights``), where from, their resize and class names."""

    name: str
    family: str
    resolution: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    in_chans: int = 3
    resize: int | None = None  # shorter side before the centre crop to ``resolution``, if the weights fix it
    labels: tuple[str, ...] = field(default=(), repr=False)  # class names in index order, if known
    weights: str | None = None  # the file the weights came from; None: randomly initialised


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder, the arguments it is built with, and its input convention."""

    name: str
    builder: Callable[..., nn.Module]
    family: str
    defaults: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def arguments(self) -> list[str]:
        """Names of the arguments ``create_model`` accepts for this model."""
        return list(inspect.signature(self.builder).parameters)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    builder: Callable[..., nn.Module],
    family: str,
    defaults: dict[str, Any] | None = None,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> None:
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = ModelEntry(name, builder, family, dict(defaults or {}), mean, std)


def registry() -> dict[str, ModelEntry]:
    """Every registered model by name; the families (``mobilenets.models``) register theirs on first use."""
    importlib.import_module("mobilenets.models")
    return _REGISTRY


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style ``pattern`` (e.g. ``"mobilenet_v1_*_224"``), sorted."""
    return sorted(n for n in registry() if fnmatch.fnmatchcase(n, pattern))


def get_entry(name: str) -> ModelEntry:
    models = registry()
    if name not in models:
        close = [n for n in models if name.split("_")[0] in n][:5]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise ValueError(f"model name {name!r} is unknown (see `mobilenets list`){hint}")
    return models[name]


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model; ``overrides`` replace its defaults (width_mult, resolution, ...).

    The model gets a ``meta`` attribute (:class:`ModelMeta`) with its default input size and
    normalisation.
    """
    entry = get_entry(name)
    accepted = entry.arguments()
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise ValueError(f"argument(s) {unknown} not accepted by {name!r}; accepted: {accepted}")
    kwargs = {**entry.defaults, **overrides}
    model = entry.builder(**kwargs)
    bound = inspect.signature(entry.builder).bind(**kwargs)
    bound.apply_defaults()
    model.meta = ModelMeta(
        name=name,
        family=entry.family,
        resolution=bound.arguments["resolution"],
        mean=entry.mean,
        std=entry.std,
        num_classes=bound.arguments["num_classes"],
        in_chans=bound.arguments["in_chans"],
    )
    return model
