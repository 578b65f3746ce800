"""What the object detectors share: their backbones (a registered classifier's body, tapped at its end
points), their arguments, and loading a classifier's weights into a detector's backbone.

The detectors are torchvision's (``torchvision.models.detection``: :class:`~torchvision.models.detection.SSD`,
:class:`~torchvision.models.detection.FasterRCNN`) on our backbones; ``ssd.py`` and ``faster_rcnn.py`` build
them. As torchvision's, they take a list of float RGB images in 0..1 of any size, normalise and resize them
inside, and give boxes in the input images' pixels. ``num_classes`` counts the background (label 0). The
default, 91, is COCO as the TF object-detection API labels it (90 category ids and the background), with
which the MobileNets paper's counts are reproduced (81 would give SSD300-MobileNet 6.6 M parameters, not
6.8 M); the MobileNetV2 paper's counts are reproduced with 81 (80 classes and the background).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ..layers import BATCHNORMS, ConvBNAct
from ..registry import create_model, get_entry, registry
from . import mobilenet_v1, mobilenet_v2, shufflenet_v2  # noqa: F401  registers the backbones' classifiers first
from .base import Backbone, _is_int, check_num_classes

COCO_NUM_CLASSES = 91  # the 90 COCO category ids of the TF object-detection API's label map + background


@dataclass(frozen=True, kw_only=True)
class BackboneSpec:
    """A detection backbone: the registered classifier whose body it is (built at the detector's width),
    the end point giving its stride-16 map and the last one (stride 32)."""

    classifier: str
    stride16: str  # an end point, or ``block.layer`` inside a block without residual
    stride32: str


BACKBONES: dict[str, BackboneSpec] = {
    # The TF object-detection API's ssd_mobilenet_v1: Conv2d_11_pointwise and Conv2d_13_pointwise.
    "mobilenet_v1": BackboneSpec(classifier="mobilenet_v1_1.0_224", stride16="block11", stride32="block13"),
    # The V2 paper's SSDLite: the expansion of its layer 15 (the 1×1 expansion of the first stride-32
    # block, ``expanded_conv_13`` in slim, our block14: 576 channels at α = 1) and the last layer (1280).
    "mobilenet_v2": BackboneSpec(classifier="mobilenet_v2_1.0_224", stride16="block14.expand", stride32="conv18"),
    "shufflenet_v2": BackboneSpec(classifier="shufflenet_v2_1.0", stride16="stage3", stride32="conv5"),
}


def check_detector_arguments(backbone: str, *, num_classes: int, in_chans: int) -> BackboneSpec:
    """Validate the arguments every detector builder on our backbones takes; return the backbone's spec."""
    if not isinstance(backbone, str) or backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {list(BACKBONES)}, got {backbone!r}")
    check_detector_input(num_classes=num_classes, in_chans=in_chans)
    return BACKBONES[backbone]


def check_detector_input(*, num_classes: int, in_chans: int) -> None:
    """Validate the class count (background included, so >= 2) and input channels (3) of any detector."""
    check_num_classes(num_classes)
    if num_classes < 2:
        raise ValueError(
            f"num_classes must be >= 2 for a detector (the background, label 0, and at least one object class), "
            f"got {num_classes!r}"
        )
    if not _is_int(in_chans) or in_chans != 3:
        raise ValueError(f"in_chans must be 3 for a detector (its normalisation is RGB), got {in_chans!r}")


def normalisation(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of a backbone's classifier: the input its ImageNet weights were trained with."""
    entry = get_entry(BACKBONES[backbone].classifier)
    return entry.mean, entry.std


def build_classifier(backbone: str, width_mult: float) -> Backbone:
    """The classifier whose body a detector uses, at width ``width_mult``, without classifier."""
    return create_model(BACKBONES[backbone].classifier, width_mult=width_mult, num_classes=0)


class BackboneBody(nn.Module):
    """A classifier's body up to its last tap; returns the tapped maps.

    A tap is an end point (``block11``) or a layer inside a block without residual (``block14.expand``,
    MobileNetV2's expansion before the block's stride), whose layers then run one after the other.
    ``forward``: (N, C, H, W) -> {tap: (N, channels, H / stride, W / stride)}, in tap order.
    """

    def __init__(self, classifier: Backbone, taps: Sequence[str]) -> None:
        super().__init__()
        children = OrderedDict(classifier.features.named_children())
        blocks = [tap.split(".")[0] for tap in taps]
        unknown = [tap for tap, block in zip(taps, blocks, strict=True) if block not in children]
        if unknown:
            raise ValueError(f"taps {unknown} are not end points of the backbone ({list(children)})")
        last = max(list(children).index(block) for block in blocks)
        self.features = nn.Sequential(OrderedDict(list(children.items())[: last + 1]))
        self.taps = tuple(taps)
        declared = {info.name: info.channels for info in classifier.feature_info}
        self.channels = [self._channels(tap, declared) for tap in taps]

    def _channels(self, tap: str, declared: dict[str, int]) -> int:
        if tap in declared:
            return declared[tap]
        layer = self.features.get_submodule(tap)
        block = self.features.get_submodule(tap.split(".")[0])
        if isinstance(layer, ConvBNAct) and "." in tap and not getattr(block, "residual", True):
            return layer.conv.out_channels
        raise ValueError(f"tap {tap!r} is neither a declared end point nor a layer of a block without residual")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        maps: dict[str, torch.Tensor] = OrderedDict()
        for name, block in self.features.named_children():
            inner = [tap for tap in self.taps if tap.startswith(f"{name}.")]
            if inner:  # a block without residual: its layers in sequence, as its own forward
                for part, layer in block.named_children():
                    x = layer(x)
                    if f"{name}.{part}" in inner:
                        maps[f"{name}.{part}"] = x
            else:
                x = block(x)
            if name in self.taps:
                maps[name] = x
        return OrderedDict((tap, maps[tap]) for tap in self.taps)


@dataclass(frozen=True, kw_only=True)
class BackboneRecord:
    """Where a detector's backbone came from: its classifier (a key of :data:`BACKBONES`, a width) and,
    for each of the classifier's end points, the detector's module holding that layer (for
    :func:`init_backbone`)."""

    backbone: str  # a key of BACKBONES
    width_mult: float
    layers: dict[str, str] = field(default_factory=dict)  # classifier end point -> detector module path


def record_backbone(model: nn.Module, classifier: Backbone, *, backbone: str, width_mult: float) -> None:
    """Set ``model.backbone_record``: for each end point of ``classifier``, whose layers ``model`` took
    over, the path of the module of ``model`` holding it (the bodies and box heads keep them in a
    ``features`` container under their end point names)."""
    end_points = [name for name, _ in classifier.features.named_children()]
    layers = {}
    for path, _ in model.named_modules():
        parent, _, name = path.rpartition(".")
        if name in end_points and parent.rpartition(".")[2] == "features":
            layers[name] = path
    missing = [name for name in end_points if name not in layers]
    if missing:
        raise ValueError(f"the detector does not hold the backbone's end points {missing}")
    model.backbone_record = BackboneRecord(backbone=backbone, width_mult=width_mult, layers=layers)


def _packaged_backbones(model: nn.Module) -> tuple[str, list[str], list[str]]:
    """``model``'s name, the packaged classifiers of its backbone's family and those at its width."""
    record: BackboneRecord | None = getattr(model, "backbone_record", None)
    name = getattr(getattr(model, "meta", None), "name", type(model).__name__)
    if record is None:
        raise ValueError(
            f"{name} is not a detector on one of this project's backbones ({', '.join(BACKBONES)}): it has no "
            "backbone to load a classifier's weights into"
        )
    base = get_entry(BACKBONES[record.backbone].classifier)
    packaged = [n for n, e in registry().items() if e.pretrained and e.family == base.family]
    return name, packaged, [n for n in packaged if get_entry(n).defaults.get("width_mult") == record.width_mult]


def has_pretrained_backbone(model: nn.Module) -> bool:
    """Whether the project ships ImageNet weights for detector ``model``'s backbone (its family and width)."""
    return getattr(model, "backbone_record", None) is not None and bool(_packaged_backbones(model)[2])


def init_backbone(model: nn.Module, source: str) -> str:
    """Load a classifier's weights into detector ``model``'s backbone, leaving the classifier's head
    aside: ``source`` is any weights file of our readers (ours, torchvision's, timm's, Keras's,
    TF-slim's) or ``"pretrained"`` (the packaged ImageNet weights of the backbone's classifier,
    where the catalogue has them). Returns a one-line note of what was loaded; a file of another
    architecture or width raises one ``ValueError`` naming the tensors that do not fit."""
    from ..weights import PRETRAINED, apply_state_dict, read_weights_source  # weights imports the models

    name, packaged, fitting = _packaged_backbones(model)
    record: BackboneRecord = model.backbone_record
    classifier = build_classifier(record.backbone, record.width_mult)
    base = get_entry(BACKBONES[record.backbone].classifier)
    if str(source) == PRETRAINED:
        if not fitting:
            raise ValueError(
                f"weights 'pretrained' exist for {packaged or 'no ' + base.family + ' classifier'}, "
                f"not for {name}'s backbone ({base.family} at width {record.width_mult:g})"
            )
        weights = read_weights_source(source, fitting[0])
    else:
        weights = read_weights_source(source)
    recorded = weights.info.get("model")
    if recorded:
        family = get_entry(recorded).family
        if family != base.family:
            raise ValueError(
                f"weights {str(weights.path)!r} are of {recorded} ({family}); {name}'s backbone is {base.family}"
            )
    # Named so that a file that does not fit says whose backbone it does not fit.
    classifier.meta = replace(classifier.meta, name=f"{name}'s backbone ({base.family} at width {record.width_mult:g})")
    apply_state_dict(classifier, weights.state, source=repr(str(weights.path)), keep_head=False)
    # TensorFlow's files (Keras, TF-slim) record BatchNorm's epsilon 1e-3, which their statistics need.
    batchnorm = weights.info.get("model_args", {}).get("batchnorm")
    settings = BATCHNORMS.get(batchnorm) if isinstance(batchnorm, str) else None
    for end_point, path in record.layers.items():
        layer = model.get_submodule(path)
        layer.load_state_dict(classifier.features.get_submodule(end_point).state_dict())
        for module in layer.modules():
            if settings is not None and isinstance(module, nn.BatchNorm2d):
                module.momentum, module.eps = settings.momentum, settings.eps
    tensors = sum(1 for key in classifier.state_dict() if key.startswith("features."))
    with_settings = f", BatchNorm {batchnorm!r}" if settings is not None else ""
    return (
        f"backbone of {name}: {tensors} tensors of {base.family} at width {record.width_mult:g} "
        f"from {str(weights.path)!r}{with_settings} (its classifier head left out)"
    )
