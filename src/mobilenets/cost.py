"""Cost model: mult-adds and parameters, counted by running the real model.

Conventions (those of the MobileNets paper):

* mult-adds: one per multiply-accumulate of a convolution or fully connected layer, for one
  image at the given resolution. BatchNorm, activations, pooling, additions are not counted.
  A detector counts every layer it runs for that image: its backbone, extra layers and heads,
  and a Faster R-CNN box head once per region (all its proposals: 300 for one image); anchor
  decoding, NMS and RoI pooling are not mult-adds.
* ``params``: convolution and fully connected weights plus fully connected biases; BatchNorm is
  not counted. ``trainable_params`` is every trainable tensor (BN γ and β included).

Beside the counter, :func:`standard_conv_cost`, :func:`depthwise_separable_cost` and
:func:`modification_table` are the paper's analytic formulas for one layer (its Table 3).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from tabulate import tabulate
from torch import nn

from .registry import create_model, name_for

CONVENTIONS = (
    "mult-adds: multiply-accumulates of conv and FC layers for one image (BN, activations, pooling not counted); "
    "params: conv and FC weights + FC bias (no BN); trainable_params: all trainable tensors"
)
# The paper's Table 2 order; any other kind found (grouped convs, 5×5...) follows.
TYPE_ORDER = ("Conv 1×1", "Conv DW 3×3", "Conv 3×3", "Fully Connected")


@dataclass(frozen=True, kw_only=True)
class LayerCost:
    """Cost of one conv or FC layer for one image. ``output_shape`` excludes the batch dimension, except
    where the layer runs on a batch of its own for one image (a detector's regions: 300×1024×7×7)."""

    name: str
    type: str
    output_shape: tuple[int, ...]
    mult_adds: int
    params: int
    bias: int


@dataclass(kw_only=True)
class CostReport:
    """Per-layer costs of a model at one resolution, with totals and a per-type breakdown."""

    model: str
    resolution: int
    layers: list[LayerCost]
    trainable_params: int
    conventions: str = field(default=CONVENTIONS)

    @property
    def mult_adds(self) -> int:
        return sum(layer.mult_adds for layer in self.layers)

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def by_type(self) -> dict[str, dict[str, int]]:
        """``{type: {"mult_adds", "params", "layers"}}`` in the paper's Table 2 order."""
        kinds = sorted({layer.type for layer in self.layers}, key=_type_rank)
        return {
            kind: {
                "mult_adds": sum(layer.mult_adds for layer in self.layers if layer.type == kind),
                "params": sum(layer.params for layer in self.layers if layer.type == kind),
                "layers": sum(1 for layer in self.layers if layer.type == kind),
            }
            for kind in kinds
        }

    def to_dict(self, per_layer: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "resolution": self.resolution,
            "mult_adds": self.mult_adds,
            "params": self.params,
            "trainable_params": self.trainable_params,
            "by_type": self.by_type,
            "conventions": self.conventions,
        }
        if per_layer:
            out["layers"] = [asdict(layer) for layer in self.layers]
        return out

    def format(self, per_layer: bool = False) -> str:
        """A readable report: optional per-layer table, totals, then the per-type breakdown."""
        total_ma, total_p = self.mult_adds, self.params
        parts = []
        if per_layer:
            rows = [
                [
                    layer.name,
                    layer.type,
                    "×".join(map(str, layer.output_shape)),
                    f"{layer.mult_adds:,}",
                    _pct(layer.mult_adds, total_ma),
                    f"{layer.params:,}",
                    _pct(layer.params, total_p),
                ]
                for layer in self.layers
            ]
            headers = ["layer", "type", "output", "mult-adds", "share", "params", "share"]
            parts.append(tabulate(rows, headers, colalign=("left", "left", "right") + ("right",) * 4))
        parts.append(
            f"{self.model} @ {self.resolution}×{self.resolution}: "
            f"{total_ma / 1e6:,.1f} M mult-adds, {total_p / 1e6:,.2f} M params "
            f"({self.trainable_params / 1e6:,.2f} M trainable)"
        )
        rows = [
            [
                kind,
                v["layers"],
                f"{v['mult_adds']:,}",
                _pct(v["mult_adds"], total_ma),
                f"{v['params']:,}",
                _pct(v["params"], total_p),
            ]
            for kind, v in self.by_type.items()
        ]
        headers = ["type", "layers", "mult-adds", "share", "params", "share"]
        parts.append(tabulate(rows, headers, colalign=("left",) + ("right",) * 5))
        parts.append(f"conventions: {self.conventions}")
        return "\n\n".join(parts)


def _pct(part: int, total: int) -> str:
    return f"{100 * part / total:.2f}%" if total else "-"


def _type_rank(kind: str) -> tuple[int, str]:
    return (TYPE_ORDER.index(kind) if kind in TYPE_ORDER else len(TYPE_ORDER), kind)


def layer_type(module: nn.Module) -> str:
    """The paper's name for a layer kind: "Conv 3×3", "Conv DW 3×3", "Conv 1×1", "Fully Connected"."""
    if isinstance(module, nn.Linear):
        return "Fully Connected"
    assert isinstance(module, nn.Conv2d)
    kh, kw = module.kernel_size
    if module.groups == 1:
        return f"Conv {kh}×{kw}"
    if module.groups == module.in_channels:
        return f"Conv DW {kh}×{kw}"
    return f"Conv {kh}×{kw} g{module.groups}"


def _layer_cost(name: str, module: nn.Module, output: torch.Tensor) -> LayerCost:
    """The cost of ``module`` giving ``output`` for one image: every element of the batch is counted
    (one for an image, one per region for a detector's box head)."""
    weight = module.weight.numel()
    bias = module.bias.numel() if module.bias is not None else 0
    shape = tuple(output.shape[1:] if len(output) == 1 else output.shape)
    if isinstance(module, nn.Conv2d):
        per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
        mult_adds = output.numel() * per_output
        # The paper counts FC biases but no conv biases (its convs have none; BN follows).
        return LayerCost(
            name=name, type=layer_type(module), output_shape=shape, mult_adds=mult_adds, params=weight, bias=0
        )
    mult_adds = output.numel() * module.in_features
    return LayerCost(
        name=name, type=layer_type(module), output_shape=shape, mult_adds=mult_adds, params=weight + bias, bias=bias
    )


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _detection_class(module: str, name: str) -> type | tuple[()]:
    """torchvision's ``detection.<module>.<name>`` class, or ``()`` (what isinstance matches nothing with)
    where that package is not imported: then no model has one, and counting a classifier does not
    import it (seconds)."""
    found = sys.modules.get(f"torchvision.models.detection.{module}")
    return getattr(found, name) if found is not None else ()


@contextmanager
def _all_proposals(model: nn.Module) -> Iterator[None]:
    """A region proposal network keeps all its top proposals (no NMS among them) while counting: the
    papers count the box head on every proposal (300 per image), whichever image is counted."""
    kind = _detection_class("rpn", "RegionProposalNetwork")
    networks = [module for module in model.modules() if isinstance(module, kind)]
    thresholds = [network.nms_thresh for network in networks]
    for network in networks:
        network.nms_thresh = 1.0  # no IoU exceeds 1: nothing suppressed
    try:
        yield
    finally:
        for network, threshold in zip(networks, thresholds, strict=True):
            network.nms_thresh = threshold


def count_cost(model: nn.Module, resolution: int | None = None, name: str | None = None) -> CostReport:
    """Count the mult-adds and parameters of ``model`` on one image of ``resolution``².

    ``resolution`` and ``name`` default to the model's ``meta`` (set by ``create_model``). A detector
    resizes any image to its own resolution (SSD to its fixed size, Faster R-CNN its shorter side: a
    square image of it, 300×300 for Faster-RCNN 300), so it is counted at that one, its meta's.
    """
    meta = getattr(model, "meta", None)
    resolution = resolution or (meta.resolution if meta else None)
    if resolution is None:
        raise ValueError("resolution must be given for a model without meta")
    detector = (_detection_class("ssd", "SSD"), _detection_class("generalized_rcnn", "GeneralizedRCNN"))
    if meta is not None and resolution != meta.resolution and isinstance(model, detector):
        raise ValueError(
            f"resolution: detector {meta.name} resizes its input to {meta.resolution} pixels; "
            f"build it for {resolution} (create_model(..., resolution={resolution})) to count it there"
        )
    name = name or (meta.name if meta else type(model).__name__)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    param = next(model.parameters())
    x = torch.zeros(1, first.in_channels, resolution, resolution, device=param.device, dtype=param.dtype)

    layers: list[LayerCost] = []
    handles = [
        module.register_forward_hook(
            lambda mod, _inp, out, qualname=qualname: layers.append(_layer_cost(qualname, mod, out))
        )
        for qualname, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear))
    ]
    try:
        with torch.no_grad(), _eval_mode(model), _all_proposals(model):
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return CostReport(model=name, resolution=resolution, layers=layers, trainable_params=trainable)


def profile(name: str, resolution: int | None = None, **overrides: Any) -> CostReport:
    """Build a registered model (with ``overrides``, e.g. ``width_mult``) and count its cost; the
    report names the model profiled (``mobilenet_v1_0.6_224`` for ``mobilenet_v1_1.0_224`` at α = 0.6)."""
    if resolution is not None:
        overrides["resolution"] = resolution
    model = create_model(name, **overrides)
    return count_cost(model, name=name_for(name, **overrides))


# --- The paper's analytic formulas for a single layer (Section 3, Table 3) -------------------


def standard_conv_cost(kernel: int, *, in_channels: int, out_channels: int, feature: int) -> tuple[int, int]:
    """(mult-adds, params) of a D_K×D_K standard conv, M→N channels, on a D_F×D_F map (stride 1)."""
    params = kernel * kernel * in_channels * out_channels
    return params * feature * feature, params


def depthwise_separable_cost(kernel: int, *, in_channels: int, out_channels: int, feature: int) -> tuple[int, int]:
    """(mult-adds, params) of a D_K×D_K depthwise + 1×1 pointwise conv on a D_F×D_F map."""
    mult_adds = kernel * kernel * in_channels * feature * feature + in_channels * out_channels * feature * feature
    return mult_adds, kernel * kernel * in_channels + in_channels * out_channels


def reduction_ratio(out_channels: int, kernel: int) -> float:
    """Depthwise separable cost over standard conv cost: 1/N + 1/D_K²."""
    return 1 / out_channels + 1 / kernel**2


def modification_table(
    kernel: int = 3, channels: int = 512, feature: int = 14, width_mult: float = 0.75, resolution_mult: float = 0.714
) -> list[tuple[str, int, int]]:
    """The paper's Table 3: one layer, standard conv, then depthwise separable, then α, then ρ.

    Rows are cumulative: (modification, mult-adds, params). Scaled sizes are rounded to integers.
    """
    thin = round(channels * width_mult)
    small = round(feature * resolution_mult)
    return [
        ("Convolution", *standard_conv_cost(kernel, in_channels=channels, out_channels=channels, feature=feature)),
        (
            "Depthwise Separable Conv",
            *depthwise_separable_cost(kernel, in_channels=channels, out_channels=channels, feature=feature),
        ),
        (f"α = {width_mult}", *depthwise_separable_cost(kernel, in_channels=thin, out_channels=thin, feature=feature)),
        (
            f"ρ = {resolution_mult}",
            *depthwise_separable_cost(kernel, in_channels=thin, out_channels=thin, feature=small),
        ),
    ]
